"""Tests for course.diffusion.vlb and the learned variance of course.diffusion.ddpm."""

import dataclasses

import pytest
import torch

from course.diffusion import ddpm, scheduler_parity, vlb

SCHEDULE = ddpm.Schedule(clip_sample=False, variance_type="learned_range")


def test_learned_log_variance_runs_from_beta_tilde_to_beta():
    beta, beta_tilde = torch.tensor(0.02), torch.tensor(0.01)
    assert torch.isclose(ddpm.learned_log_variance(torch.tensor(-1.0), beta, beta_tilde), beta_tilde.log())
    assert torch.isclose(ddpm.learned_log_variance(torch.tensor(1.0), beta, beta_tilde), beta.log())
    mid = ddpm.learned_log_variance(torch.tensor(0.0), beta, beta_tilde)
    assert torch.isclose(mid, (beta.log() + beta_tilde.log()) / 2)  # geometric mean: the interpolation is in log space


@pytest.mark.parametrize("v, fixed", [(-1.0, "fixed_small"), (1.0, "fixed_large")])
def test_ddpm_step_with_learned_variance_at_the_ends_is_the_fixed_one(v, fixed):
    g = torch.Generator().manual_seed(0)
    xt, eps, noise = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    out = torch.cat([eps, torch.full_like(eps, v)], dim=1)  # (B, 2C, ...)
    learned = ddpm.ddpm_step(out, 500, xt, SCHEDULE, noise, prev_t=450)
    ref = ddpm.ddpm_step(eps, 500, xt, dataclasses.replace(SCHEDULE, variance_type=fixed), noise, prev_t=450)
    torch.testing.assert_close(learned.x_prev, ref.x_prev)
    with pytest.raises(ValueError, match="2 x 4 channels"):
        ddpm.ddpm_step(eps, 500, xt, SCHEDULE, noise)


def test_ddim_ignores_the_variance_channels():
    g = torch.Generator().manual_seed(1)
    xt, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    out = torch.cat([eps, torch.randn(2, 4, 8, 8, generator=g)], dim=1)
    a = ddpm.ddim_step(out, 500, xt, SCHEDULE, prev_t=400)
    b = ddpm.ddim_step(eps, 500, xt, dataclasses.replace(SCHEDULE, variance_type="fixed_small"), prev_t=400)
    torch.testing.assert_close(a.x_prev, b.x_prev)


@pytest.mark.parametrize("config", [dict(num_train_timesteps=100, variance_type="learned_range"),
                                    dict(num_train_timesteps=1000, variance_type="learned_range",
                                         beta_schedule="squaredcos_cap_v2", clip_sample=False)])
def test_learned_range_parity_with_diffusers_ddpm_scheduler(config):
    assert scheduler_parity.parity_ddpm_scheduler(config) <= 1e-5


def test_normal_kl_is_zero_for_equal_gaussians_and_positive_otherwise():
    m, lv = torch.randn(100), torch.randn(100)
    assert torch.allclose(vlb.normal_kl(m, lv, m, lv), torch.zeros(100), atol=1e-6)
    assert (vlb.normal_kl(m, lv, m + 0.1, lv) > 0).all() and (vlb.normal_kl(m, lv, m, lv + 0.1) > 0).all()


def test_the_discretised_decoder_is_a_distribution_over_the_256_bins():
    bins = torch.linspace(-1, 1, 256)
    for mean, log_scale in ((0.0, -2.0), (0.5, -4.0), (-0.9, -1.0)):
        logp = vlb.discretized_gaussian_log_likelihood(bins, torch.full_like(bins, mean), torch.full_like(bins, log_scale))
        assert abs(logp.exp().sum().item() - 1) < 1e-3


def test_the_bound_vanishes_when_the_model_knows_the_posterior():
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    t = torch.tensor([1, 10, 500, 999])
    xt = ddpm.q_sample(x0, t, eps, SCHEDULE.alpha_bar)
    v = -torch.ones_like(x0)  # beta_tilde: the true posterior's variance
    terms = vlb.vlb_terms(x0, xt, t, eps, v, SCHEDULE)
    assert terms.shape == (4,) and terms.abs().max() < 1e-4
    wrong = vlb.vlb_terms(x0, xt, t, eps + 0.5, v, SCHEDULE)
    assert (wrong > 1e-3).all()


def test_the_hybrid_loss_trains_the_variance_only_through_the_bound():
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(8, 4, 8, 8, generator=g), torch.randn(8, 4, 8, 8, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    xt = ddpm.q_sample(x0, t, eps, SCHEDULE.alpha_bar)
    out = torch.randn(8, 8, 8, 8, generator=g).requires_grad_(True)
    loss, mse, vb = vlb.hybrid_loss(out, x0, xt, t, eps, SCHEDULE)
    torch.testing.assert_close(loss, mse + 0.001 * 1000 * vb)
    (grad,) = torch.autograd.grad(loss, out)
    torch.testing.assert_close(grad[:, :4], 2 * (out[:, :4] - eps).detach() / eps.numel())  # the mean sees L_simple only
    assert grad[:, 4:].abs().sum() > 0  # the variance is trained by the bound
