"""course.diffusion.flow: paths, targets, conversions, the shift, solvers, straightness, parity."""

import math

import pytest
import torch

from course import parity
from course.diffusion import ddpm, flow

F64 = dict(dtype=torch.float64)


@pytest.mark.parametrize("name", flow.PATHS)
def test_path_ends_and_target_is_the_time_derivative(name):
    p = flow.get_path(name)
    zero, one = torch.zeros(1, **F64), torch.ones(1, **F64)
    assert float(p.a(zero)) == pytest.approx(1.0) and float(p.b(zero)) == pytest.approx(0.0, abs=1e-12)
    assert float(p.b(one)) == pytest.approx(1.0, abs=1e-2)  # vp: sqrt(1 - e^-10.05)
    assert float(p.a(one)) < 0.01
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, generator=g, **F64), torch.randn(3, 2, generator=g, **F64)
    t, h = torch.tensor([0.2, 0.5, 0.9], **F64), 1e-6
    fd = (p.point(x0, eps, t + h) - p.point(x0, eps, t - h)) / (2 * h)
    torch.testing.assert_close(p.target(x0, eps, t), fd, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", flow.PATHS)
def test_x0_eps_from_point_and_velocity_round_trip(name):
    p = flow.get_path(name)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 3, 2, 2, generator=g, **F64), torch.randn(4, 3, 2, 2, generator=g, **F64)
    t = torch.tensor([0.05, 0.3, 0.6, 0.95], **F64)
    x0_hat, eps_hat = p.x0_eps(p.point(x0, eps, t), p.target(x0, eps, t), t)
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(eps_hat, eps)


def test_rf_path_is_the_ot_path():
    g = torch.Generator().manual_seed(2)
    x0, eps, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g), torch.rand(5, generator=g)
    xt, u = flow.rf_path(x0, eps, t)
    torch.testing.assert_close(xt, flow.get_path("ot").point(x0, eps, t))
    torch.testing.assert_close(u, eps - x0)


def test_unknown_path_and_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="choose one of"):
        flow.get_path("straight")
    with pytest.raises(ValueError, match="same shape"):
        flow.cfm_loss(torch.zeros(2, 3), torch.zeros(3, 2))


def test_conversions_round_trip_in_float64():
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(3, 4, generator=g, **F64), torch.randn(3, 4, generator=g, **F64)
    sigma = torch.tensor([0.1, 0.5, 0.9], **F64)
    xt, u = flow.rf_path(x0, eps, sigma)
    torch.testing.assert_close(flow.velocity_from_eps(xt, eps, sigma), u)
    torch.testing.assert_close(flow.velocity_to_eps(xt, u, sigma), eps)
    torch.testing.assert_close(flow.velocity_to_x0(xt, u, sigma), x0)
    torch.testing.assert_close(flow.velocity_from_x0(xt, x0, sigma), u)
    ab = torch.tensor([1e-4, 0.3, 0.7, 0.9999], **F64)
    torch.testing.assert_close(flow.alpha_bar_from_sigma(flow.sigma_from_alpha_bar(ab)), ab)


def test_a_ddpm_point_is_a_flow_point_of_the_same_snr_and_v_is_a_velocity():
    """The SD3 view: DDPM's xt, rescaled, is rectified flow's xt; chapter 01's v follows from the velocity."""
    schedule = ddpm.Schedule(beta_schedule="squaredcos_cap_v2")
    g = torch.Generator().manual_seed(4)
    x0, eps = torch.randn(4, 2, 3, 3, generator=g, **F64), torch.randn(4, 2, 3, 3, generator=g, **F64)
    t = torch.tensor([10, 300, 700, 990])
    ab = schedule.alpha_bar.double()[t]
    xt_vp = ddpm.q_sample(x0, t, eps, schedule.alpha_bar.double())
    xt, sigma = flow.flow_point_from_vp(xt_vp, ab)
    torch.testing.assert_close(xt, flow.get_path("ot").point(x0, eps, sigma))
    torch.testing.assert_close(((1 - sigma) / sigma) ** 2, ab / (1 - ab))  # the same SNR
    v = flow.v_ddpm_from_velocity(xt_vp, eps - x0, ab)
    torch.testing.assert_close(v, ddpm.v_target(x0, eps, ab.reshape(-1, 1, 1, 1)))


def test_shift_identities():
    s = torch.linspace(0.01, 1.0, 50, **F64)
    torch.testing.assert_close(flow.shift_sigmas(s, 1.0), s)
    torch.testing.assert_close(flow.dynamic_shift_sigmas(s, math.log(3.0)), flow.shift_sigmas(s, 3.0))
    shifted = flow.shift_sigmas(s, 3.0)
    assert (shifted >= s).all() and float(shifted[-1]) == pytest.approx(1.0)  # more time at high noise
    assert flow.calculate_shift(256) == pytest.approx(0.5) and flow.calculate_shift(4096) == pytest.approx(1.15)
    with pytest.raises(ValueError, match="positive"):
        flow.shift_sigmas(s, 0.0)
    with pytest.raises(ValueError, match="finite"):
        flow.dynamic_shift_sigmas(s, float("nan"))


@pytest.mark.parametrize("config", [None, {"shift": 1.0}, {"shift": 3.0, "num_train_timesteps": 100},
                                    {"use_dynamic_shifting": True},
                                    {"use_dynamic_shifting": True, "base_shift": 0.3, "max_shift": 2.0,
                                     "base_image_seq_len": 64, "max_image_seq_len": 1024}])
def test_flow_scheduler_parity(config):
    assert parity.compare("flow_scheduler", config) <= 1e-6


def test_euler_is_exact_on_straight_paths_and_heun_on_linear_fields():
    c = torch.tensor([[1.0, -2.0]], **F64)
    v_fn = lambda x, s: (x - c) / s[:, None]  # noqa: E731: the OT field of a point mass at c: straight lines
    x_T = torch.tensor([[0.3, 0.7]], **F64)
    torch.testing.assert_close(flow.sample(v_fn, x_T, torch.tensor([1.0, 0.0], **F64)), c)
    lin = lambda x, s: torch.ones_like(x) * s[:, None]  # noqa: E731: dx/ds = s, x(0.1) = x(1) - (1 - 0.01) / 2
    out = flow.sample(lin, x_T, torch.tensor([1.0, 0.4, 0.1], **F64), solver="heun")
    torch.testing.assert_close(out, x_T - 0.495)
    with pytest.raises(ValueError, match="decrease"):
        flow.sample(v_fn, x_T, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="solver"):
        flow.sample(v_fn, x_T, torch.tensor([1.0, 0.0]), solver="rk4")
    assert flow.nfe(8, "euler") == 8 and flow.nfe(8, "heun") == 15


def test_straightness_is_zero_for_straight_flows_and_positive_for_curved_ones():
    c = torch.tensor([[1.0, -2.0]])
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(5))
    assert flow.straightness(lambda x, s: (x - c) / s[:, None], x_T, steps=50) < 1e-8
    rot = lambda x, s: torch.stack([-x[:, 1], x[:, 0]], 1)  # noqa: E731: circles
    assert flow.straightness(rot, x_T, steps=50) > 0.1


def test_gmm_marginal_field_is_the_posterior_mean_of_the_conditional_target():
    """One Gaussian component: E[x0 | xt] is the textbook Gaussian conditional."""
    mu, std = torch.tensor([[1.0, -0.5]], **F64), 0.7
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(6), **F64)
    t = torch.tensor(0.4, **F64)
    p = flow.get_path("ot")
    x0, eps = flow.gmm_posterior(x, t, mu, std, torch.ones(1, **F64), p)
    a, b = 1 - t, t
    expect_x0 = mu + a * std**2 / (a**2 * std**2 + b**2) * (x - a * mu)
    torch.testing.assert_close(x0, expect_x0)
    torch.testing.assert_close(a * x0 + b * eps, x)  # the posterior means are consistent with xt
    u = flow.gmm_marginal_velocity(x, t, mu, std, torch.ones(1, **F64), p)
    torch.testing.assert_close(u, eps - x0)


def test_chapter_07_checkers_pass_the_package_and_explain_classic_mistakes():
    from course.exercises import ch07
    from course.exercises.runner import ExerciseFailed

    def cfm(model, x0, eps, t):
        xt, u = flow.rf_path(x0, eps, t)
        return flow.cfm_loss(model(xt, t), u)

    assert ch07.check_cfm_loss(cfm)
    assert ch07.check_euler_step(flow.euler_step)
    assert ch07.check_straightness(flow.straightness)
    with pytest.raises(ExerciseFailed, match="t = 1 is noise"):  # the reversed time convention
        ch07.check_cfm_loss(lambda m, x0, eps, t: cfm(m, eps, x0, t))
    with pytest.raises(ExerciseFailed, match="sign flip"):
        ch07.check_euler_step(lambda x, v, s, sn: x + (s - sn) * v)
    with pytest.raises(ExerciseFailed, match="chord"):  # the chord from the wrong end
        ch07.check_straightness(lambda v_fn, x_T, steps: flow.straightness(lambda x, s: -v_fn(x, s), x_T, steps))
