"""Tests for course.diffusion.timesteps: densities, samplers, weights, the shift's alpha, and the exercises."""

import math

import pytest
import torch

from course.diffusion import flow, timesteps as T
from course.exercises import ch08
from course.exercises.runner import ExerciseFailed

SAMPLERS = ["uniform", "lognorm(0, 1)", "lognorm(0.5, 0.6)", "lognorm(1, 0.6)", "mode(1.29)", "mode(-0.5)", "cosmap"]


def _grid(n=200_001):
    return torch.linspace(0, 1, n, dtype=torch.float64)[1:-1]


def _cdf(sampler, t_sorted):
    """The numeric CDF of sampler's density at t_sorted (trapezoid rule on a fine float64 grid)."""
    g = _grid()
    p = sampler.density(g)
    c = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum((p[1:] + p[:-1]) / 2 * (g[1:] - g[:-1]), 0)])
    return torch.from_numpy(__import__("numpy").interp(t_sorted.numpy(), g.numpy(), c.numpy()))


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_density_integrates_to_one(name):
    s = T.parse(name)
    g = _grid()
    assert float(torch.trapezoid(s.density(g), g)) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_draws_from_its_density(name):
    """Kolmogorov-Smirnov distance between 100k draws and the CDF of the density: < 1e-3-level critical value."""
    s = T.parse(name)
    t = torch.sort(s.sample(100_000, torch.Generator().manual_seed(0)).double()).values
    assert bool(((t > 0) & (t < 1)).all())
    cdf = _cdf(s, t)
    k = torch.arange(1, len(t) + 1, dtype=torch.float64) / len(t)
    assert float(torch.maximum(k - cdf, cdf - (k - 1 / len(t))).max()) < 1.95 / math.sqrt(len(t))


def test_the_ks_check_above_can_fail():
    draws = T.parse("lognorm(0.5, 0.6)").sample(100_000, torch.Generator().manual_seed(0)).double()
    t = torch.sort(draws).values
    cdf = _cdf(T.parse("lognorm(0, 1)"), t)
    k = torch.arange(1, len(t) + 1, dtype=torch.float64) / len(t)
    assert float(torch.maximum(k - cdf, cdf - (k - 1 / len(t))).max()) > 0.05


def test_samplers_repeat_with_a_seeded_generator_and_respect_m():
    s = T.parse("lognorm(1, 0.6)")
    a, b = s.sample(1000, torch.Generator().manual_seed(1)), s.sample(1000, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (1000,)
    assert float(T.parse("lognorm(1, 0.6)").sample(50_000).median()) == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item(), abs=5e-3)


def test_logit_normal_is_a_normal_in_log_snr():
    """lambda = 2 log((1 - t) / t) = -2 logit(t): logit-normal(m, s) in t is N(-2m, (2s)^2) in lambda."""
    m, s = 0.5, 0.6
    lam = torch.linspace(-8, 8, 101, dtype=torch.float64)
    t = T.t_of_log_snr(lam)
    got = T.density_over_log_snr(t, T.logit_normal_density(t, m, s))
    normal = torch.exp(-((lam + 2 * m) ** 2) / (2 * (2 * s) ** 2)) / (2 * s * math.sqrt(2 * math.pi))
    torch.testing.assert_close(got, normal)
    torch.testing.assert_close(T.log_snr(t), lam)


def test_mode_zero_is_uniform_and_its_inverse_cdf_is_f_mode():
    u = torch.rand(100, dtype=torch.float64)
    torch.testing.assert_close(T.f_mode(u, 0.0), 1 - u)
    torch.testing.assert_close(T.mode_density(u, 0.0), torch.ones_like(u))
    assert float(T.f_mode(torch.tensor(0.0), 1.29)) == 1.0 and abs(float(T.f_mode(torch.tensor(1.0), 1.29))) < 1e-7
    # the density is 1 / |f'(u)|: check it against a finite difference of f_mode
    s, h = 1.29, 1e-6
    u = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    slope = (T.f_mode(u + h, s) - T.f_mode(u - h, s)) / (2 * h)
    torch.testing.assert_close(T.mode_density(T.f_mode(u, s), s), 1 / slope.abs(), rtol=1e-5, atol=1e-6)
    assert float(T.mode_density(torch.tensor([0.5], dtype=torch.float64), s)) > 1.5  # mode(1.29) favours the middle


def test_cosmap_density_is_the_derivative_of_its_inverse():
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    inverse = lambda t: 2 / math.pi * torch.atan(t / (1 - t))  # noqa: E731 (u of t)
    h = 1e-6
    torch.testing.assert_close(T.cosmap_density(t), (inverse(t + h) - inverse(t - h)) / (2 * h), rtol=1e-6, atol=1e-8)


def test_weights_are_rf_weight_times_density():
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(T.parse("uniform").weight(t), t / (1 - t))
    s = T.parse("lognorm(0, 1)")
    torch.testing.assert_close(s.weight(t), t / (1 - t) * s.density(t))


@pytest.mark.parametrize("bad,match", [("lognorm(0, -1)", "scale"), ("mode(2)", r"\[-1, 1.752\]"), ("normal", "lognorm"),
                                       ("lognorm(0)", "lognorm")])
def test_bad_samplers_are_refused_with_what_to_write(bad, match):
    with pytest.raises(ValueError, match=match):
        T.parse(bad)


def test_names_are_sd3s():
    assert [T.parse(n).name for n in ("uniform", "lognorm(0, 1)", "mode(1.29)", "cosmap")] == \
        ["uniform", "lognorm(0.00, 1.00)", "mode(1.29)", "cosmap"]


def test_shift_alpha_and_sd3s_default_at_1024():
    """sqrt(m/n): 2 from 64^2 to 128^2; the dynamic mu at 1024^2 (4096 tokens) is 1.15, e^1.15 = 3.16 ~ SD3's 3.0."""
    assert T.shift_for_resolution(128**2, 64**2) == 2.0
    assert T.shift_for_resolution(1024**2, 256**2) == 4.0
    mu = flow.calculate_shift((1024 // 8 // 2) ** 2)
    assert mu == pytest.approx(1.15) and math.exp(mu) == pytest.approx(3.0, rel=0.06)
    s = torch.linspace(1, 0.01, 28, dtype=torch.float64)
    torch.testing.assert_close(flow.dynamic_shift_sigmas(s, mu), flow.shift_sigmas(s, math.exp(mu)))
    with pytest.raises(ValueError, match=">= 1"):
        T.shift_for_resolution(0, 64)


def test_shifted_schedule_matches_sd3s_scheduler():
    """flow.flow_sigmas with shift 3 (SD3's scheduler config) and with the dynamic mu equal diffusers' grids."""
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    ref.set_timesteps(28)
    torch.testing.assert_close(flow.flow_sigmas(28, shift=3.0), ref.sigmas.float())
    dyn = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    dyn.set_timesteps(28, mu=1.15)
    torch.testing.assert_close(flow.flow_sigmas(28, mu=1.15), dyn.sigmas.float())


def test_same_snr_after_the_shift():
    """The shifted t at 4x the pixels has the same patch-mean SNR: (1 - t_m) / t_m * 2 = (1 - t_n) / t_n * ... ."""
    t_n = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    t_m = flow.shift_sigmas(t_n, 2.0)
    # amplitude SNR of a patch mean: (1 - t) / t * sqrt(pixels); 4x the pixels at 128^2
    torch.testing.assert_close((1 - t_m) / t_m * math.sqrt(4), (1 - t_n) / t_n)


# ----------------------------------------------------------------------------- the exercises
def test_logit_normal_exercise_accepts_the_package_and_another_right_way():
    assert ch08.check_logit_normal_sample(T.logit_normal_sample)
    assert ch08.check_logit_normal_sample(lambda n, m, s, g: torch.sigmoid(torch.normal(m, s, (n,), generator=g)))


@pytest.mark.parametrize("wrong,match", [
    (lambda n, m, s, g: torch.sigmoid(-(m + s * torch.randn(n, generator=g))), "that is -m"),
    (lambda n, m, s, g: torch.sigmoid(m + s * s * torch.randn(n, generator=g)), "standard deviation"),
    (lambda n, m, s, g: m + s * torch.randn(n, generator=g), r"outside \(0, 1\)"),
    (lambda n, m, s, g: torch.sigmoid(m + s * torch.randn(n)), "generators seeded alike"),
    (lambda n, m, s, g: torch.sigmoid(m + s * math.sqrt(12) * (torch.rand(n, generator=g) - 0.5)), "not logit-normal"),
    (lambda n, m, s, g: torch.sigmoid(m + s * torch.randn(n, 1, generator=g)), "shape"),
])
def test_logit_normal_exercise_names_the_mistake(wrong, match):
    with pytest.raises(ExerciseFailed, match=match):
        ch08.check_logit_normal_sample(wrong)


def test_shift_exercise():
    assert ch08.check_shift_sigmas(lambda s, a: a * s / (1 + (a - 1) * s))
    with pytest.raises(ExerciseFailed, match="alpha t_n"):
        ch08.check_shift_sigmas(lambda s, a: s / a)
