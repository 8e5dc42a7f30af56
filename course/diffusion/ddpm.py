"""DDPM and DDIM from scratch: the noise schedule, the forward process and two samplers.

Chapter 01. Everything here is a pure function of tensors and a frozen `Schedule`; the samplers
keep no state between steps, so one step can be read (and tested) on its own.

    forward    q(xt | x0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I)       Ho et al. 2020, Eq. 4
    loss       || eps - eps_theta(xt, t) ||^2                                    Ho et al. 2020, Eq. 14
    DDPM step  x_prev ~ q(x_prev | xt, x0_hat), posterior Gaussian              Ho et al. 2020, Eq. 6-7
    DDIM step  x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - s^2) eps_hat + s z
                                                                                 Song et al. 2021, Eq. 12

Time convention: integer t = 0 ... T-1 as diffusers indexes it, t = T-1 the noisiest. A step goes
from t to prev_t < t; prev_t = -1 means "past the last step", where alpha_bar is 1 (clean data).
ab, ab_t, ab_prev abbreviate alpha_bar at t and at prev_t. Shapes: B batch, C channels, H, W.

Numerics follow diffusers exactly (betas in float32, cumulative product in float32, the same
order of operations), so `course.diffusion.scheduler_parity` finds them equal to
DDPMScheduler / DDIMScheduler to float32 rounding.

DDIM with eta = 1 versus DDPM. Take one step t -> prev_t of a (possibly respaced) chain and the
same predictions x0_hat and eps_hat, consistent with xt (eps_hat = (xt - sqrt(ab_t) x0_hat) /
sqrt(1 - ab_t)). Then DDIM's eta = 1 step has exactly the mean and variance of the DDPM ancestral
step with "fixed_small" variance on that chain, whose step beta is 1 - ab_t / ab_prev: the noise
scale is sigma^2 = (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev) in both. They stop agreeing
when (a) clip_sample changes x0_hat (DDIM keeps the unclipped eps_hat, DDPM keeps xt), (b) the two
chains visit different prev_t (diffusers' DDIM always steps back by T // steps, DDPM goes to the
next listed timestep: the same for "leading" spacing, not in general for "trailing"/"linspace"),
(c) the final alpha_bar differs (DDIM with set_alpha_to_one=False), (d) DDPM uses "fixed_large",
or (e) the random streams differ (DDPM draws no noise at t = 0, DDIM draws at every step). Neither
respaced chain is the 1000-step DDPM: both keep its marginals q(xt | x0) at the visited t but
take bigger steps between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")  # the last: Improved DDPM's learned sigma
SPACINGS = ("leading", "trailing", "linspace")


# --- the noise schedule ----------------------------------------------------------------------


def cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Betas that discretise alpha_bar(s) = cos^2((s + 0.008) / 1.008 * pi / 2), s in [0, 1].

    Args:
        num_train_timesteps: T, the number of betas.
        max_beta: cap on each beta; without it the last beta is 1 and xt carries no signal.

    Returns:
        (T,) float32 betas, computed in float64 as diffusers does.

    Ref: Nichol & Dhariwal 2021, Eq. 17 ("squaredcos_cap_v2" in diffusers).
    """

    def alpha_bar_fn(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    T = num_train_timesteps
    betas = [min(1 - alpha_bar_fn((i + 1) / T) / alpha_bar_fn(i / T), max_beta) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float32)


def make_betas(num_train_timesteps: int, beta_start: float, beta_end: float, beta_schedule: str) -> torch.Tensor:
    """The betas of a named schedule, exactly as diffusers computes them.

    Args:
        num_train_timesteps: T.
        beta_start: beta_0 (unused by the cosine schedule).
        beta_end: beta_{T-1} (unused by the cosine schedule).
        beta_schedule: "linear" (Ho et al. 2020), "scaled_linear" (Stable Diffusion: linear in
            sqrt(beta), then squared) or "squaredcos_cap_v2" (cosine, Nichol & Dhariwal 2021).

    Returns:
        (T,) float32 betas.

    Ref: Ho et al. 2020, Sec. 4; Rombach et al. 2022 (scaled_linear); Nichol & Dhariwal 2021, Eq. 17.
    """
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        return cosine_betas(num_train_timesteps)
    raise ValueError(f"unknown beta_schedule {beta_schedule!r}; choose one of {BETA_SCHEDULES}")


@dataclass(frozen=True)
class Schedule:
    """A variance-preserving noise schedule and how a model's output is read.

    The field names are diffusers' DDPMScheduler / DDIMScheduler constructor arguments.
    """

    num_train_timesteps: int = 1000  # T: training timesteps t = 0 ... T-1
    beta_start: float = 0.0001  # beta at t = 0 (linear schedules)
    beta_end: float = 0.02  # beta at t = T-1 (linear schedules)
    beta_schedule: str = "linear"  # one of BETA_SCHEDULES
    prediction_type: str = "epsilon"  # what the model predicts: one of PREDICTION_TYPES
    clip_sample: bool = True  # clamp the predicted x0 to [-clip_sample_range, clip_sample_range]
    clip_sample_range: float = 1.0  # the clamp bound (data lives in [-1, 1])
    variance_type: str = "fixed_small"  # DDPM noise: beta_tilde ("fixed_small"), beta, or learned between them
    set_alpha_to_one: bool = True  # DDIM: alpha_bar past the last step is 1 (else alpha_bar[0])
    timestep_spacing: str = "leading"  # how `respace` picks sampling timesteps: one of SPACINGS
    steps_offset: int = 0  # added to "leading" timesteps (Stable Diffusion uses 1)

    def __post_init__(self) -> None:
        choices = {"beta_schedule": BETA_SCHEDULES, "prediction_type": PREDICTION_TYPES,
                   "variance_type": VARIANCE_TYPES, "timestep_spacing": SPACINGS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"Schedule.{name}={getattr(self, name)!r} is not supported; choose one of {allowed}")
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")

    @cached_property
    def betas(self) -> torch.Tensor:
        """(T,) float32 beta_t."""
        return make_betas(self.num_train_timesteps, self.beta_start, self.beta_end, self.beta_schedule)

    @cached_property
    def alphas(self) -> torch.Tensor:
        """(T,) float32 alpha_t = 1 - beta_t."""
        return 1.0 - self.betas

    @cached_property
    def alpha_bar(self) -> torch.Tensor:
        """(T,) float32 alpha_bar_t = prod_{s <= t} alpha_s, cumulated in float32 as diffusers does."""
        return torch.cumprod(self.alphas, dim=0)

    @cached_property
    def snr(self) -> torch.Tensor:
        """(T,) float32 signal-to-noise ratio alpha_bar / (1 - alpha_bar), decreasing in t."""
        return self.alpha_bar / (1.0 - self.alpha_bar)


SCHEDULES: dict[str, Schedule] = {
    "ddpm_linear": Schedule(),  # Ho et al. 2020: T = 1000, beta 1e-4 -> 0.02
    "cosine": Schedule(beta_schedule="squaredcos_cap_v2"),  # Nichol & Dhariwal 2021
    "sd_scaled_linear": Schedule(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                 clip_sample=False, set_alpha_to_one=False, steps_offset=1),  # SD 1.x
}


def schedule_from_diffusers(config: dict[str, Any]) -> Schedule:
    """The `Schedule` for a diffusers DDPMScheduler / DDIMScheduler config (or constructor kwargs).

    Keys that the course does not model must be at their diffusers defaults, else ValueError.
    """
    unsupported = {"trained_betas": None, "thresholding": False, "rescale_betas_zero_snr": False}
    for key, default in unsupported.items():
        if config.get(key, default) != default:
            raise ValueError(f"{key}={config[key]!r} is not implemented by course.diffusion.ddpm; leave it at {default!r}")
    names = {f.name for f in fields(Schedule)}
    return Schedule(**{k: v for k, v in dict(config).items() if k in names})


# --- the forward process and the three parameterisations ---------------------------------------


def gather(alpha_bar: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """alpha_bar[t] shaped to broadcast against `like`: (B, 1, 1, ...) for a (B,) t, 0-dim for an int."""
    a = alpha_bar.to(device=like.device, dtype=like.dtype)[torch.as_tensor(t, device=like.device)]
    return a.reshape(a.shape + (1,) * (like.ndim - a.ndim))  # (B, 1, ..., 1)


def q_sample(x0: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Jump straight to xt: xt = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.

    Args:
        x0: (B, ...) clean data.
        t: (B,) integer timesteps, or one int for the whole batch.
        eps: (B, ...) standard Gaussian noise.
        alpha_bar: (T,) the schedule's cumulative alphas.

    Returns:
        (B, ...) xt.

    Ref: Ho et al. 2020, Eq. 4.
    """
    a = gather(alpha_bar, t, x0)
    return a**0.5 * x0 + (1 - a) ** 0.5 * eps


# alpha_bar_t below is alpha_bar already gathered at t (a float or a tensor broadcasting to xt).


def eps_to_x0(xt: torch.Tensor, eps: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """x0 = (xt - sqrt(1 - ab) eps) / sqrt(ab): Eq. 4 solved for x0. Ref: Ho et al. 2020, Eq. 15."""
    return (xt - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t**0.5


def x0_to_eps(xt: torch.Tensor, x0: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """eps = (xt - sqrt(ab) x0) / sqrt(1 - ab): Eq. 4 solved for eps. Ref: Ho et al. 2020, Eq. 4."""
    return (xt - alpha_bar_t**0.5 * x0) / (1 - alpha_bar_t) ** 0.5


def v_target(x0: torch.Tensor, eps: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """v = sqrt(ab) eps - sqrt(1 - ab) x0, the velocity target. Ref: Salimans & Ho 2022, Sec. 4."""
    return alpha_bar_t**0.5 * eps - (1 - alpha_bar_t) ** 0.5 * x0


def v_to_x0(xt: torch.Tensor, v: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """x0 = sqrt(ab) xt - sqrt(1 - ab) v. Ref: Salimans & Ho 2022, Appendix D."""
    return alpha_bar_t**0.5 * xt - (1 - alpha_bar_t) ** 0.5 * v


def v_to_eps(xt: torch.Tensor, v: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """eps = sqrt(ab) v + sqrt(1 - ab) xt. Ref: Salimans & Ho 2022, Appendix D."""
    return alpha_bar_t**0.5 * v + (1 - alpha_bar_t) ** 0.5 * xt


def predict_x0_eps(model_output: torch.Tensor, xt: torch.Tensor, alpha_bar_t, prediction_type: str):
    """Read a model's output as the pair (x0_hat, eps_hat), whatever it was trained to predict.

    Args:
        model_output: (B, ...) eps_hat, x0_hat or v_hat according to `prediction_type`.
        xt: (B, ...) the noisy input the model saw.
        alpha_bar_t: alpha_bar at the model's t, broadcasting to xt.
        prediction_type: one of PREDICTION_TYPES.

    Returns:
        (x0_hat, eps_hat), each (B, ...).
    """
    if prediction_type == "epsilon":
        return eps_to_x0(xt, model_output, alpha_bar_t), model_output
    if prediction_type == "sample":
        return model_output, x0_to_eps(xt, model_output, alpha_bar_t)
    if prediction_type == "v_prediction":
        return v_to_x0(xt, model_output, alpha_bar_t), v_to_eps(xt, model_output, alpha_bar_t)
    raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of {PREDICTION_TYPES}")


# --- training losses ---------------------------------------------------------------------------


def eps_loss(model_fn: Callable, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor):
    """The simple loss: mean || eps - eps_theta(xt, t) ||^2 with xt from q_sample.

    Args:
        model_fn: (xt (B, ...), t (B,)) -> eps_hat (B, ...).
        x0: (B, ...) clean data; t: (B,) timesteps; eps: (B, ...) noise; alpha_bar: (T,).

    Returns:
        A 0-dim tensor. Ref: Ho et al. 2020, Eq. 14 (Algorithm 1).
    """
    return F.mse_loss(model_fn(q_sample(x0, t, eps, alpha_bar), t), eps)


def v_loss(model_fn: Callable, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor):
    """mean || v - v_theta(xt, t) ||^2 with xt from q_sample.

    Per sample this is the eps error weighted by 1 / alpha_bar_t = 1 + 1/snr, or the x0 error
    weighted by 1 + snr ("SNR + 1" weighting), reading v_theta back through `v_to_eps`/`v_to_x0`.

    Args:
        model_fn: (xt (B, ...), t (B,)) -> v_hat (B, ...).
        x0: (B, ...) clean data; t: (B,) timesteps; eps: (B, ...) noise; alpha_bar: (T,).

    Returns:
        A 0-dim tensor. Ref: Salimans & Ho 2022, Sec. 4.
    """
    v = v_target(x0, eps, gather(alpha_bar, t, x0))
    return F.mse_loss(model_fn(q_sample(x0, t, eps, alpha_bar), t), v)


# --- sampling: timesteps, one step, the loop -------------------------------------------------


def respace(num_train_timesteps: int, num_inference_steps: int, spacing: str = "leading",
            steps_offset: int = 0) -> torch.Tensor:
    """The descending timesteps a sampler visits, as diffusers' `set_timesteps` picks them.

    Args:
        num_train_timesteps: T.
        num_inference_steps: how many steps to take, 1 ... T.
        spacing: "leading" (0, k, 2k, ... with k = T // steps, plus `steps_offset`), "trailing"
            (T-1 downwards in steps of T / steps, so the noisiest t is always visited) or
            "linspace" (round(linspace(0, T-1, steps))).
        steps_offset: added to every "leading" timestep (Stable Diffusion uses 1).

    Returns:
        (steps,) int64 timesteps, largest first.

    Ref: Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Table 2.
    """
    T, n = num_train_timesteps, num_inference_steps
    if not 1 <= n <= T:
        raise ValueError(f"num_inference_steps must be in 1 ... {T} (num_train_timesteps), got {n}")
    if spacing == "linspace":
        timesteps = np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
    elif spacing == "leading":
        timesteps = (np.arange(0, n) * (T // n)).round()[::-1].astype(np.int64) + steps_offset
    elif spacing == "trailing":
        timesteps = np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1
    else:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    if timesteps.max() >= T or timesteps.min() < 0:
        raise ValueError(f"steps_offset={steps_offset} pushes timesteps outside 0 ... {T - 1}; lower it")
    return torch.from_numpy(timesteps.copy())


def learned_log_variance(v: torch.Tensor, beta: torch.Tensor, beta_tilde: torch.Tensor) -> torch.Tensor:
    """Improved DDPM's learned variance: log Sigma = frac log beta + (1 - frac) log beta_tilde.

    The network's extra output channels v are read as frac = (v + 1) / 2, so v = -1 gives the
    posterior's beta_tilde (DDPM's "fixed_small") and v = 1 gives beta ("fixed_large"); Eq. 15 of
    the paper writes the interpolation with frac itself, the paper's code ("learned_range") with v.

    Args:
        v: (B, ...) the model's variance outputs.
        beta, beta_tilde: the step's beta and posterior variance, broadcastable to v (beta_tilde > 0).

    Returns:
        (B, ...) log variance.

    Ref: Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models", Eq. 15.
    """
    frac = (v + 1) / 2
    return frac * torch.log(beta) + (1 - frac) * torch.log(beta_tilde)


def split_learned_sigma(model_output: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 2C, ...) -> the prediction (B, C, ...) and the variance outputs v (B, C, ...)."""
    if model_output.shape[1] != 2 * xt.shape[1]:
        raise ValueError(f"variance_type 'learned_range' needs a model output of 2 x {xt.shape[1]} channels "
                         f"(prediction and v); got {model_output.shape[1]}")
    return model_output.split(xt.shape[1], dim=1)


class StepOutput(NamedTuple):
    """What one sampler step returns."""

    x_prev: torch.Tensor  # (B, ...) the sample at prev_t
    x0: torch.Tensor  # (B, ...) the model's (clipped) estimate of the clean data


def _alpha_bars(schedule: Schedule, t: int, prev_t: int, final: float | torch.Tensor, like: torch.Tensor):
    """0-dim alpha_bar_t and alpha_bar_prev in `like`'s dtype; prev_t < 0 gives `final`."""
    alpha_bar = schedule.alpha_bar.to(dtype=like.dtype)
    if not 0 <= t < schedule.num_train_timesteps or prev_t >= t:
        raise ValueError(f"need 0 <= t < {schedule.num_train_timesteps} and prev_t < t, got t={t}, prev_t={prev_t}")
    prev = alpha_bar[prev_t] if prev_t >= 0 else torch.as_tensor(final, dtype=like.dtype)
    return alpha_bar[t], prev


def _clip(x0: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    return x0.clamp(-schedule.clip_sample_range, schedule.clip_sample_range) if schedule.clip_sample else x0


def ddpm_step(model_output: torch.Tensor, t: int, xt: torch.Tensor, schedule: Schedule,
              noise: torch.Tensor | None, prev_t: int | None = None) -> StepOutput:
    """One ancestral step t -> prev_t: sample the posterior q(x_prev | xt, x0_hat).

    With alpha_t = ab_t / ab_prev and beta_t = 1 - alpha_t (the step's own beta, so respaced
    chains work), the posterior has
        mean = sqrt(ab_prev) beta_t / (1 - ab_t) x0_hat + sqrt(alpha_t) (1 - ab_prev) / (1 - ab_t) xt
        var  = (1 - ab_prev) / (1 - ab_t) beta_t   ("fixed_small", beta_tilde)   or   beta_t ("fixed_large"),
               or the model's own interpolation between the two ("learned_range", `learned_log_variance`).
    No noise is added at t = 0.

    Args:
        model_output: (B, ...) the model's output at (xt, t), read by schedule.prediction_type; with
            "learned_range", (B, 2C, ...): the prediction, then the variance outputs v.
        t: the current timestep.
        xt: (B, ...) the current sample.
        schedule: the noise schedule.
        noise: (B, ...) standard Gaussian noise for the step; may be None only when t = 0.
        prev_t: the timestep to step to; default t - 1; -1 means clean data (alpha_bar = 1).

    Returns:
        StepOutput(x_prev, x0).

    Ref: Ho et al. 2020, Eq. 6-7 and Algorithm 2; Nichol & Dhariwal 2021, Eq. 15 (learned variance).
    """
    prev_t = t - 1 if prev_t is None else int(prev_t)
    ab_t, ab_prev = _alpha_bars(schedule, t, prev_t, 1.0, xt)
    v = None
    if schedule.variance_type == "learned_range":
        model_output, v = split_learned_sigma(model_output, xt)
    alpha_t = ab_t / ab_prev
    beta_t = 1 - alpha_t
    x0, _ = predict_x0_eps(model_output, xt, ab_t, schedule.prediction_type)
    x0 = _clip(x0, schedule)
    mean = (ab_prev**0.5 * beta_t) / (1 - ab_t) * x0 + alpha_t**0.5 * (1 - ab_prev) / (1 - ab_t) * xt
    if t == 0:
        return StepOutput(mean, x0)
    if noise is None:
        raise ValueError(f"ddpm_step at t={t} > 0 needs noise: pass noise=torch.randn_like(xt)")
    beta_tilde = torch.clamp((1 - ab_prev) / (1 - ab_t) * beta_t, min=1e-20)  # kept > 0, as diffusers does
    if schedule.variance_type == "fixed_small":
        std = beta_tilde**0.5
    elif schedule.variance_type == "fixed_large":
        std = beta_t**0.5
    else:
        std = torch.exp(0.5 * learned_log_variance(v, beta_t, beta_tilde))  # (B, C, ...)
    return StepOutput(mean + std * noise, x0)


def ddim_step(model_output: torch.Tensor, t: int, xt: torch.Tensor, schedule: Schedule,
              prev_t: int | None = None, eta: float = 0.0, noise: torch.Tensor | None = None,
              use_clipped_model_output: bool = False) -> StepOutput:
    """One DDIM step t -> prev_t: x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - s^2) eps_hat + s z.

    s = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev); eta = 0 is the
    deterministic DDIM, eta = 1 the DDPM posterior noise of the step (see the module docstring).
    Past the last step (prev_t < 0) alpha_bar is 1, or alpha_bar[0] if not schedule.set_alpha_to_one.
    As in diffusers, eps_hat is the model's own unless `use_clipped_model_output`: then it is
    recomputed from the clipped x0_hat, eps_hat = (xt - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t), so the
    step's two terms describe the same xt again (diffusers' `use_clipped_model_output=True`).

    Args:
        model_output: (B, ...) the model's output at (xt, t), read by schedule.prediction_type.
        t: the current timestep.
        xt: (B, ...) the current sample.
        schedule: the noise schedule.
        prev_t: the timestep to step to; default t - 1.
        eta: 0 ... 1, how much fresh noise to inject.
        noise: (B, ...) standard Gaussian noise; needed only when eta > 0.
        use_clipped_model_output: recompute eps_hat from the clipped x0_hat (matters only with clip_sample).

    Returns:
        StepOutput(x_prev, x0).

    Ref: Song et al. 2021, "Denoising Diffusion Implicit Models", Eq. 12 and Eq. 16.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1] (0 = DDIM, 1 = DDPM-like noise), got {eta}")
    prev_t = t - 1 if prev_t is None else int(prev_t)
    final = 1.0 if schedule.set_alpha_to_one else schedule.alpha_bar[0]
    ab_t, ab_prev = _alpha_bars(schedule, t, prev_t, final, xt)
    if schedule.variance_type == "learned_range":  # DDIM ignores a learned variance: its noise is set by eta
        model_output, _ = split_learned_sigma(model_output, xt)
    x0, eps = predict_x0_eps(model_output, xt, ab_t, schedule.prediction_type)
    x0 = _clip(x0, schedule)
    if use_clipped_model_output:
        eps = x0_to_eps(xt, x0, ab_t)
    std = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)) ** 0.5
    x_prev = ab_prev**0.5 * x0 + (1 - ab_prev - std**2) ** 0.5 * eps
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise: pass noise=torch.randn_like(xt)")
        x_prev = x_prev + std * noise
    return StepOutput(x_prev, x0)


def _randn(shape, generator: torch.Generator | None, device, dtype=torch.float32) -> torch.Tensor:
    """Gaussian noise drawn on the generator's device, then moved (as diffusers' randn_tensor)."""
    draw_on = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=draw_on, dtype=dtype).to(device)


@torch.no_grad()
def sample(model_fn: Callable, shape: tuple[int, ...] | None, schedule: Schedule, steps: int,
           method: str = "ddpm", eta: float = 0.0, generator: torch.Generator | None = None,
           x_T: torch.Tensor | None = None, progress: bool = False,
           use_clipped_model_output: bool = False) -> torch.Tensor:
    """Generate samples: start from pure noise x_T and apply `steps` DDPM or DDIM steps.

    The timesteps come from `respace` with the schedule's spacing; each step goes to the next
    listed timestep (-1 after the last). Randomness is drawn from `generator` in the order
    diffusers' DDPMPipeline / DDIMPipeline draws it (x_T first, then one draw per noisy step), so
    with the same generator seed both give the same samples (for DDIM with "leading" spacing, where
    diffusers' step back by T // steps is the next listed timestep).

    Args:
        model_fn: (xt (B, ...), t (B,) int64) -> model output (B, ...).
        shape: (B, C, H, W) of the samples; may be None when x_T is given.
        schedule: the noise schedule the model was trained with.
        steps: number of sampling steps, 1 ... T.
        method: "ddpm" (ancestral) or "ddim".
        eta: DDIM noise, 0 ... 1 (ignored by "ddpm").
        generator: source of randomness; None uses torch's global one.
        x_T: (B, ...) the starting noise; drawn from `generator` (on its device) if None.
        progress: show a tqdm progress bar.
        use_clipped_model_output: DDIM only: eps_hat recomputed from the clipped x0_hat (see `ddim_step`).

    Returns:
        (B, ...) x0 samples.

    Ref: Ho et al. 2020, Algorithm 2; Song et al. 2021, Eq. 12.
    """
    if method not in ("ddpm", "ddim"):
        raise ValueError(f"unknown method {method!r}; choose 'ddpm' or 'ddim'")
    if x_T is None:
        if shape is None:
            raise ValueError("give the sample shape, or the starting noise x_T")
        device = generator.device if generator is not None else torch.device("cpu")
        x = _randn(tuple(shape), generator, device)
    else:
        if shape is not None and tuple(shape) != tuple(x_T.shape):
            raise ValueError(f"shape {tuple(shape)} does not match x_T's shape {tuple(x_T.shape)}")
        x = x_T.clone()
    timesteps = respace(schedule.num_train_timesteps, steps, schedule.timestep_spacing, schedule.steps_offset).tolist()
    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc=method)):
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        model_output = model_fn(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        if method == "ddpm":
            noise = _randn(x.shape, generator, x.device, x.dtype) if t > 0 else None
            x = ddpm_step(model_output, t, x, schedule, noise, prev_t).x_prev
        else:
            noise = _randn(x.shape, generator, x.device, x.dtype) if eta > 0 else None
            x = ddim_step(model_output, t, x, schedule, prev_t, eta, noise, use_clipped_model_output).x_prev
    return x
