"""Tests for course.diffusion.ddpm: schedules, the forward process, conversions, samplers, diffusers parity."""

import itertools

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from course import parity
from course.diffusion import ddpm, scheduler_parity

TOL = 1e-5
SMALL = dict(num_train_timesteps=100)
BETAS = {"linear": {}, "scaled_linear": dict(beta_start=0.00085, beta_end=0.012), "squaredcos_cap_v2": {}}


# --- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ddpm.SCHEDULES))
def test_alpha_bar_and_snr_strictly_decrease(name):
    s = ddpm.SCHEDULES[name]
    assert s.alpha_bar.shape == (s.num_train_timesteps,) and s.alpha_bar.dtype == torch.float32
    assert torch.all(s.alpha_bar[1:] < s.alpha_bar[:-1])
    assert torch.all(s.snr[1:] < s.snr[:-1])
    assert 0 < s.alpha_bar[-1] < s.alpha_bar[0] < 1
    torch.testing.assert_close(s.alpha_bar, torch.cumprod(1 - s.betas.double(), 0).float(), rtol=1e-5, atol=1e-7)


def test_cosine_betas_are_capped_and_follow_the_cosine():
    betas = ddpm.cosine_betas(1000)
    assert betas.max() <= 0.999 and betas[-1] == pytest.approx(0.999)
    s = torch.arange(1, 1001, dtype=torch.float64) / 1000
    f = torch.cos((s + 0.008) / 1.008 * torch.pi / 2) ** 2 / torch.cos(torch.tensor(0.008 / 1.008 * torch.pi / 2)) ** 2
    torch.testing.assert_close(torch.cumprod(1 - betas.double(), 0)[:900], f[:900], rtol=1e-4, atol=1e-6)


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="beta_schedule"):
        ddpm.Schedule(beta_schedule="quadratic")
    with pytest.raises(ValueError, match="prediction_type"):
        ddpm.Schedule(prediction_type="noise")
    with pytest.raises(ValueError, match="thresholding"):
        ddpm.schedule_from_diffusers({"thresholding": True})
    with pytest.raises(ValueError, match="num_inference_steps"):
        ddpm.respace(100, 101)
    with pytest.raises(ValueError, match="steps_offset"):
        ddpm.respace(100, 100, "leading", steps_offset=1)  # would visit t = 100
    with pytest.raises(ValueError, match="needs noise"):
        ddpm.ddpm_step(torch.zeros(1, 1), 5, torch.zeros(1, 1), ddpm.Schedule(**SMALL), None)
    with pytest.raises(ValueError, match="eta"):
        ddpm.ddim_step(torch.zeros(1, 1), 5, torch.zeros(1, 1), ddpm.Schedule(**SMALL), eta=-0.1)


# --- forward process and conversions -----------------------------------------------------------


def test_q_sample_with_alpha_bar_one_returns_x0():
    g = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(3, 2, 4, 4, generator=g) for _ in range(2))
    assert torch.equal(ddpm.q_sample(x0, torch.tensor([0, 1, 2]), eps, torch.ones(5)), x0)
    ab = ddpm.Schedule().alpha_bar  # alpha_bar_0 = 1 - 1e-4: t = 0 is x0 plus noise of std 0.01
    xt = ddpm.q_sample(x0, 0, eps, ab)
    assert torch.all((xt - x0).abs() <= 0.01 * eps.abs() + 1e-4 * x0.abs() + 1e-6)


def test_q_sample_has_the_closed_form_moments():
    ab = ddpm.Schedule().alpha_bar
    t, x0 = 300, torch.full((20000, 1), 0.7)
    eps = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0))
    xt = ddpm.q_sample(x0, torch.full((20000,), t), eps, ab)
    assert xt.mean().item() == pytest.approx(ab[t].sqrt().item() * 0.7, abs=0.02)
    assert xt.var().item() == pytest.approx(1 - ab[t].item(), abs=0.03)


def test_eps_x0_v_round_trips_in_float64():
    g = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64) for _ in range(2))
    alpha_bar, t = ddpm.Schedule(beta_schedule="squaredcos_cap_v2").alpha_bar.double(), torch.tensor([0, 10, 500, 990])
    ab = ddpm.gather(alpha_bar, t, x0)  # (4, 1, 1, 1)
    xt = ddpm.q_sample(x0, t, eps, alpha_bar)
    v = ddpm.v_target(x0, eps, ab)
    for got, want in [(ddpm.eps_to_x0(xt, eps, ab), x0), (ddpm.x0_to_eps(xt, x0, ab), eps),
                      (ddpm.v_to_x0(xt, v, ab), x0), (ddpm.v_to_eps(xt, v, ab), eps)]:
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for p, out in [("epsilon", eps), ("sample", x0), ("v_prediction", v)]:
        x0_hat, eps_hat = ddpm.predict_x0_eps(out, xt, ab, p)
        torch.testing.assert_close((x0_hat, eps_hat), (x0, eps), rtol=0, atol=1e-10)


def test_losses_vanish_for_the_oracle_and_v_loss_weights_eps_by_one_over_alpha_bar():
    g = torch.Generator().manual_seed(1)
    ab = ddpm.Schedule(**SMALL).alpha_bar.double()
    x0, eps = (torch.randn(8, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(2))
    t = torch.randint(0, 100, (8,), generator=g)
    assert ddpm.eps_loss(lambda xt, t_: eps, x0, t, eps, ab) == 0
    assert ddpm.v_loss(lambda xt, t_: ddpm.v_target(x0, eps, ddpm.gather(ab, t_, x0)), x0, t, eps, ab) < 1e-28
    v_hat = torch.randn(8, 1, 4, 4, generator=g, dtype=torch.float64)
    xt, abt = ddpm.q_sample(x0, t, eps, ab), ddpm.gather(ab, t, x0)
    weighted_eps_error = ((eps - ddpm.v_to_eps(xt, v_hat, abt)) ** 2 / abt).mean()
    torch.testing.assert_close(ddpm.v_loss(lambda xt_, t_: v_hat, x0, t, eps, ab), weighted_eps_error)


# --- respacing and steps -----------------------------------------------------------------------


SPACINGS = [("leading", 0), ("leading", 1), ("trailing", 0), ("linspace", 0)]
SIZES = [(1000, 50), (1000, 30), (1000, 1000), (100, 7), (10, 1)]


RESPACINGS = [(*a, *b) for a in SPACINGS for b in SIZES if not (a[1] and b[0] == b[1])]  # offset needs n < T


@pytest.mark.parametrize("spacing, offset, T, n", RESPACINGS)
def test_respace_matches_diffusers_set_timesteps(spacing, offset, T, n):
    for cls in (DDPMScheduler, DDIMScheduler):
        ref = cls(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=offset)
        ref.set_timesteps(n)
        assert torch.equal(ddpm.respace(T, n, spacing, offset), ref.timesteps)


def test_ddim_eta_one_is_the_ddpm_posterior_step_without_clipping():
    g = torch.Generator().manual_seed(2)
    s = ddpm.Schedule(num_train_timesteps=100, clip_sample=False)
    xt, out, z = (torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    for t, prev_t in [(60, 40), (99, 0), (5, -1)]:  # respaced steps, down to clean data
        ddpm_out = ddpm.ddpm_step(out, t, xt, s, z, prev_t)
        ddim_out = ddpm.ddim_step(out, t, xt, s, prev_t, eta=1.0, noise=z)
        # atol: on a last step with t > 0, DDPM's variance floor (1e-20, as diffusers) adds 1e-10 * z
        torch.testing.assert_close(ddim_out.x_prev, ddpm_out.x_prev, rtol=0, atol=1e-9)
    clipped = ddpm.Schedule(num_train_timesteps=100, clip_sample=True)  # clipping breaks the equality
    a, b = ddpm.ddpm_step(3 * out, 60, xt, clipped, z, 40), ddpm.ddim_step(3 * out, 60, xt, clipped, 40, 1.0, z)
    assert (a.x_prev - b.x_prev).abs().max() > 0.01


# --- samplers ----------------------------------------------------------------------------------


def test_samplers_return_the_data_point_for_a_perfect_denoiser():
    """If all data is one point x*, the ideal eps model is exact and every sampler ends at x*."""
    s = ddpm.Schedule(num_train_timesteps=100, clip_sample=False)
    x_star = torch.linspace(-0.9, 0.9, 16).reshape(1, 1, 4, 4)

    def model_fn(xt, t):
        return ddpm.x0_to_eps(xt, x_star, ddpm.gather(s.alpha_bar, t, xt))

    g = torch.Generator().manual_seed(3)
    for method, steps, eta in [("ddpm", 100, 0.0), ("ddpm", 10, 0.0), ("ddim", 10, 0.0), ("ddim", 5, 1.0)]:
        x = ddpm.sample(model_fn, (3, 1, 4, 4), s, steps, method=method, eta=eta, generator=g)
        torch.testing.assert_close(x, x_star.expand(3, -1, -1, -1), atol=1e-4, rtol=0)


@pytest.mark.parametrize("method, eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.5)])
def test_sample_equals_a_diffusers_loop_with_the_same_generator(method, eta):
    config = dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    steps, shape = 10, (2, 1, 4, 4)

    def model_fn(xt, t):  # any deterministic function of (xt, t)
        return torch.tanh(xt) * (t.float() / 100).view(-1, 1, 1, 1)

    ref = (DDPMScheduler if method == "ddpm" else DDIMScheduler)(**config)
    ref.set_timesteps(steps)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(shape, generator=g)
    for t in ref.timesteps:
        kwargs = dict(eta=eta) if method == "ddim" else {}
        x = ref.step(model_fn(x, t.repeat(shape[0])), t, x, generator=g, **kwargs).prev_sample
    mine = ddpm.sample(model_fn, shape, ddpm.schedule_from_diffusers(config), steps, method, eta,
                       generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(mine, x, atol=TOL, rtol=0)


# --- parity with diffusers ---------------------------------------------------------------------


@pytest.mark.parametrize("beta_schedule, prediction_type", list(itertools.product(BETAS, ddpm.PREDICTION_TYPES)))
def test_ddpm_scheduler_parity(beta_schedule, prediction_type):
    for clip in (True, False):
        config = dict(SMALL, beta_schedule=beta_schedule, prediction_type=prediction_type, clip_sample=clip,
                      **BETAS[beta_schedule])
        assert scheduler_parity.parity_ddpm_scheduler(config, seed=0) <= TOL


@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("beta_schedule, prediction_type", list(itertools.product(BETAS, ddpm.PREDICTION_TYPES)))
def test_ddim_scheduler_parity(beta_schedule, prediction_type, eta):
    config = dict(SMALL, beta_schedule=beta_schedule, prediction_type=prediction_type, **BETAS[beta_schedule])
    assert scheduler_parity.parity_ddim_scheduler(config, seed=0, eta=eta) <= TOL


@pytest.mark.parametrize("extra", [dict(timestep_spacing="trailing"), dict(timestep_spacing="linspace"),
                                   dict(variance_type="fixed_large"), dict(set_alpha_to_one=False, steps_offset=1)])
def test_parity_other_settings(extra):
    if "variance_type" in extra:
        assert scheduler_parity.parity_ddpm_scheduler(dict(SMALL, **extra), seed=1) <= TOL
    else:
        assert scheduler_parity.parity_ddim_scheduler(dict(SMALL, **extra), seed=1) <= TOL
        ddpm_extra = {k: v for k, v in extra.items() if k != "set_alpha_to_one"}  # a DDIM-only setting
        assert scheduler_parity.parity_ddpm_scheduler(dict(SMALL, **ddpm_extra), seed=1) <= TOL


def test_parity_registry_and_stable_diffusion_config():
    assert parity.compare("ddpm_scheduler") <= TOL
    assert parity.compare("ddim_scheduler") <= TOL
    sd = ddpm.SCHEDULES["sd_scaled_linear"]
    config = dict(num_train_timesteps=1000, beta_start=sd.beta_start, beta_end=sd.beta_end,
                  beta_schedule=sd.beta_schedule, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    assert parity.compare("ddim_scheduler", config, seed=2) <= TOL


def test_parity_detects_a_wrong_step(monkeypatch):
    """The parity check can fail: steps that forget to clip x0 are caught."""
    monkeypatch.setattr(ddpm, "_clip", lambda x0, schedule: x0)
    assert scheduler_parity.parity_ddpm_scheduler(dict(SMALL, clip_sample=True), seed=0) > 0.1
    assert scheduler_parity.parity_ddim_scheduler(dict(SMALL, clip_sample=True), seed=0) > 0.1


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_use_clipped_model_output_equals_diffusers(prediction_type):
    """eps_hat recomputed from the clipped x0_hat, as DDIMScheduler.step(use_clipped_model_output=True)."""
    config = dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type,
                  clip_sample=True)
    ref, s = DDIMScheduler(**config), ddpm.schedule_from_diffusers(config)
    ref.set_timesteps(10)
    g = torch.Generator().manual_seed(5)
    xt = torch.randn(2, 1, 4, 4, generator=g)
    differs = False
    for t in ref.timesteps.tolist():
        out = 3 * torch.randn(2, 1, 4, 4, generator=g)  # large, so that x0_hat leaves [-1, 1] and clipping acts
        a = ref.step(out, t, xt, use_clipped_model_output=True).prev_sample
        b = ddpm.ddim_step(out, t, xt, s, t - 10, use_clipped_model_output=True).x_prev
        torch.testing.assert_close(b, a, atol=TOL, rtol=0)
        differs |= bool((ddpm.ddim_step(out, t, xt, s, t - 10).x_prev - a).abs().max() > 1e-3)
        xt = a
    assert differs  # the option changes the step, so the comparison above can fail
