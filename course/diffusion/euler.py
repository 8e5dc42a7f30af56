"""Euler's method on the probability-flow ODE of a variance-preserving model (diffusers' EulerDiscreteScheduler).

A VP model's xt = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps, divided by sqrt(alpha_bar), is
x = x0 + sigma eps with sigma = sqrt((1 - alpha_bar) / alpha_bar) (Karras et al. 2022, Sec. 2 and
App. C: the "VP" case in the "variance exploding" coordinates). In those coordinates the
probability-flow ODE is dx/dsigma = (x - x0_hat(x, sigma)) / sigma = eps_hat, and a sampler is a
sequence of sigmas from sigma_max down to 0 with one Euler step between each pair:

    x <- x + (sigma_next - sigma) * (x - x0_hat) / sigma

The network was trained on xt, so it is fed x / sqrt(sigma^2 + 1) (= xt) with the timestep t
whose sigma this is (`scale_model_input` in diffusers). Stable Diffusion XL's default scheduler
is this one. On the same sigmas the update is deterministic DDIM's (Song et al. 2021, Eq. 13 is
an Euler step in these coordinates; Karras et al. 2022 make the same point), so the two
samplers differ in where they step: Euler interpolates sigma at fractional timesteps and always
ends at sigma = 0, DDIM steps between integer timesteps and ends at alpha_bar[0] in SD's setting.

Shape letters: B batch, C channels, h, w latent size; N sampling steps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from course.diffusion import ddpm


def sigmas_of(schedule: ddpm.Schedule) -> torch.Tensor:
    """(T,) float32 sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), increasing in t."""
    ab = schedule.alpha_bar
    return ((1 - ab) / ab) ** 0.5


def euler_timesteps(schedule: ddpm.Schedule, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The timesteps (N,) and sigmas (N + 1,) an N-step Euler sampler visits, as diffusers picks them.

    Timesteps follow the schedule's spacing ("leading" and "trailing" as `ddpm.respace`;
    "linspace" is NOT rounded here, unlike DDIM's); each sigma is interpolated linearly in t
    between the training sigmas, and a final sigma = 0 is appended.

    Returns:
        (timesteps float32 (N,), largest first; sigmas float32 (N + 1,), the last 0).
    """
    T = schedule.num_train_timesteps
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in 1 ... {T} (the schedule's training timesteps), got {steps}")
    if schedule.timestep_spacing == "linspace":
        timesteps = np.linspace(0, T - 1, steps, dtype=np.float32)[::-1].copy()
    else:
        timesteps = ddpm.respace(T, steps, schedule.timestep_spacing, schedule.steps_offset).numpy().astype(np.float32)
    sigmas = np.interp(timesteps, np.arange(T), sigmas_of(schedule).numpy())  # (N,) float64
    sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)  # (N + 1,)
    return torch.from_numpy(timesteps), torch.from_numpy(sigmas)


def init_noise_sigma(schedule: ddpm.Schedule, sigmas: torch.Tensor) -> float:
    """The std of the starting x: sigma_max for "linspace"/"trailing" spacing, else sqrt(sigma_max^2 + 1).

    diffusers' rule: with "leading" spacing the first timestep is below T - 1, so the start is
    treated as xt / sqrt(alpha_bar) with xt ~ N(0, I) (std sqrt(sigma^2 + 1)).
    """
    sigma_max = float(sigmas.max())
    return sigma_max if schedule.timestep_spacing in ("linspace", "trailing") else (sigma_max**2 + 1) ** 0.5


def predict_x0(model_output: torch.Tensor, x: torch.Tensor, sigma: float, prediction_type: str) -> torch.Tensor:
    """x0_hat from the network's output at x = x0 + sigma eps (its input was x / sqrt(sigma^2 + 1)).

    eps: x - sigma eps_hat. v: v_hat = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 read in
    sigma coordinates, x0 = x / (sigma^2 + 1) - v_hat sigma / sqrt(sigma^2 + 1).

    Ref: Salimans & Ho 2022, Sec. 4 (v); Karras et al. 2022, Tab. 1.
    """
    if prediction_type == "epsilon":
        return x - sigma * model_output
    if prediction_type == "v_prediction":
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + x / (sigma**2 + 1)
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of {ddpm.PREDICTION_TYPES}")


def euler_step(model_output: torch.Tensor, x: torch.Tensor, sigma: float, sigma_next: float,
               prediction_type: str) -> torch.Tensor:
    """One Euler step of the probability-flow ODE from sigma to sigma_next (no churn).

    Args:
        model_output: (B, ...) the network's output at (x / sqrt(sigma^2 + 1), t(sigma)).
        x: (B, ...) the current sample in sigma coordinates.
        sigma, sigma_next: the step's start and end noise levels (sigma_next < sigma).
        prediction_type: how to read model_output.

    Returns:
        (B, ...) the sample at sigma_next.

    Ref: Karras et al. 2022, Algorithm 1 with Euler steps only (Heun's correction off); diffusers
    EulerDiscreteScheduler.step with s_churn = 0.
    """
    x0 = predict_x0(model_output, x, sigma, prediction_type)
    derivative = (x - x0) / sigma  # dx/dsigma of the probability-flow ODE (= eps_hat)
    return x + derivative * (sigma_next - sigma)


@torch.no_grad()
def euler_sample(model_fn: Callable, x: torch.Tensor, schedule: ddpm.Schedule, timesteps: torch.Tensor,
                 sigmas: torch.Tensor) -> torch.Tensor:
    """Run Euler from x at sigmas[0] through every sigma down to sigmas[-1] (0: the clean data).

    Args:
        model_fn: (xt (B, C, h, w), t float) -> model output (B, C, h, w), guidance already applied.
        x: (B, C, h, w) the start in sigma coordinates (noise * `init_noise_sigma`, or SDEdit's
            x0 + sigma eps).
        schedule: the noise schedule the model was trained with (its prediction type).
        timesteps: (N,) the timestep of each sigma but the last.
        sigmas: (N + 1,).

    Returns:
        (B, C, h, w) x0.
    """
    if len(sigmas) != len(timesteps) + 1:
        raise ValueError(f"need one more sigma than timesteps, got {len(sigmas)} and {len(timesteps)}")
    for i, t in enumerate(timesteps.tolist()):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        out = model_fn(x / (sigma**2 + 1) ** 0.5, t)  # the network reads xt = x sqrt(alpha_bar)
        x = euler_step(out, x, sigma, sigma_next, schedule.prediction_type)
    return x
