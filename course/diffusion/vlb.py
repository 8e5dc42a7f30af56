"""DDPM's variational bound, and Improved DDPM's hybrid loss for a learned variance, as pure functions.

The bound on -log p(x0) is a sum of one term per timestep (course/diffusers index t = 0 ... T-1):

    L_t = KL( q(x_{t-1} | xt, x0) || p_theta(x_{t-1} | xt) )    for t >= 1
    L_0 = -log p_theta(x0 | x1)                                  a discretised Gaussian decoder

Both distributions are Gaussian with closed forms: the posterior q (Ho et al. 2020, Eq. 6-7) and
the model's p_theta, whose mean comes from the predicted eps and whose variance is the learned
interpolation between beta_t and beta_tilde_t (`course.diffusion.ddpm.learned_log_variance`).

The simple loss || eps - eps_hat ||^2 cannot train a variance, so Improved DDPM adds the bound:
    L_hybrid = L_simple + lambda L_vlb,  lambda = 0.001,
with the mean's gradient stopped inside L_vlb, so that the bound trains only the variance (Sec. 3.1).
With t drawn uniformly, L_vlb = T E_t[L_t]: one sampled term per image, times T. At T = 1000 this
is exactly the paper's code, loss = mse + vb (vb in bits per dimension).

Time convention: integer t as in `course.diffusion.ddpm`. Shapes: B batch, then any data shape.
Ref: Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models", Sec. 2-3, Eq. 15-16;
Ho et al. 2020, Eq. 5-7.
"""

from __future__ import annotations

import math

import torch

from course.diffusion.ddpm import Schedule, eps_to_x0, gather, learned_log_variance, split_learned_sigma

LAMBDA = 0.001  # Improved DDPM's weight of L_vlb in the hybrid loss


def posterior_log_variance_clipped(schedule: Schedule) -> torch.Tensor:
    """(T,) log beta_tilde_t, with beta_tilde_0 (= 0) replaced by beta_tilde_1 as the paper's code does."""
    ab = schedule.alpha_bar.double()
    ab_prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    var = schedule.betas.double() * (1 - ab_prev) / (1 - ab)  # (T,) beta_tilde
    return torch.log(torch.cat([var[1:2], var[1:]])).float()  # (T,)


def q_posterior(x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, schedule: Schedule):
    """Mean and clipped log variance of q(x_{t-1} | xt, x0), each broadcast like x0.

    mean = sqrt(ab_prev) beta_t / (1 - ab_t) x0 + sqrt(alpha_t) (1 - ab_prev) / (1 - ab_t) xt.
    """
    ab = schedule.alpha_bar
    ab_prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    a_t, a_prev, beta = gather(ab, t, x0), gather(ab_prev, t, x0), gather(schedule.betas, t, x0)
    mean = a_prev.sqrt() * beta / (1 - a_t) * x0 + (1 - beta).sqrt() * (1 - a_prev) / (1 - a_t) * xt
    return mean, gather(posterior_log_variance_clipped(schedule), t, x0)


def model_log_variance(v: torch.Tensor, t: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """log Sigma_theta(xt, t) from the variance outputs v (B, ...), as the paper's code trains it."""
    return learned_log_variance(v, gather(schedule.betas, t, v), gather(posterior_log_variance_clipped(schedule), t, v).exp())


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL( N(mean1, e^logvar1) || N(mean2, e^logvar2) ) in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The standard normal CDF, in the tanh approximation the paper's code uses."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """Elementwise log-probability of data x in [-1, 1] quantised to 256 bins under N(means, e^(2 log_scales)).

    Ref: Ho et al. 2020, Eq. 13 (the decoder L_0).
    """
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_probs = torch.where(
        x < -0.999, log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log((cdf_plus - cdf_min).clamp(min=1e-12))))
    return log_probs


def vlb_terms(x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, eps_hat: torch.Tensor, v: torch.Tensor,
              schedule: Schedule) -> torch.Tensor:
    """The bound's term L_t of each sample, in bits per dimension: (B,).

    Args:
        x0: (B, ...) clean data; xt: (B, ...) its noisy version at t; t: (B,) timesteps.
        eps_hat: (B, ...) the predicted noise (detach it for the hybrid loss).
        v: (B, ...) the variance outputs.
        schedule: an eps-prediction schedule.
    """
    if schedule.prediction_type != "epsilon":
        raise ValueError(f"the learned-variance bound here reads eps predictions, not {schedule.prediction_type!r}")
    true_mean, true_log_var = q_posterior(x0, xt, t, schedule)
    x0_hat = eps_to_x0(xt, eps_hat, gather(schedule.alpha_bar, t, xt))
    model_mean, _ = q_posterior(x0_hat, xt, t, schedule)
    log_var = model_log_variance(v, t, schedule)
    dims = tuple(range(1, x0.ndim))
    kl = normal_kl(true_mean, true_log_var, model_mean, log_var).mean(dim=dims) / math.log(2.0)  # (B,)
    nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * log_var).mean(dim=dims) / math.log(2.0)  # (B,)
    return torch.where(t == 0, nll, kl)


def hybrid_loss(model_output: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                schedule: Schedule, lam: float = LAMBDA) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_simple + lam * T * L_t, the mean's gradient stopped in the bound.

    Args:
        model_output: (B, 2C, ...) eps_hat then v.
        x0, xt, eps: (B, C, ...); t: (B,).

    Returns:
        (loss, mse, vb): the 0-dim hybrid loss, and its two parts (vb in bits per dimension).
    """
    eps_hat, v = split_learned_sigma(model_output, xt)
    mse = ((eps_hat - eps) ** 2).mean()
    vb = vlb_terms(x0, xt, t, eps_hat.detach(), v, schedule).mean()
    return mse + lam * schedule.num_train_timesteps * vb, mse, vb
