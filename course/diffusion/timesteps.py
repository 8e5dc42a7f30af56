"""Where rectified flow spends its training: samplers of t in [0, 1] and their densities (chapter 08).

Rectified flow's loss E_t E ||v(xt, t) - (eps - x0)||^2 averages over t. Which t the average
draws is a choice: uniform t (Liu et al. 2022), or a density pi(t) that puts more samples in the
middle of [0, 1], where SD3 argues the velocity is hardest to learn (Esser et al. 2024, Sec. 3.1):
at t = 1 the optimal prediction is eps minus the mean of the data, at t = 0 it is the noise's mean
minus x0, both simple; in between the network must decide what the data is.

Each sampler here has its density as a pure function of t, and a way to draw t:

    uniform          pi(t) = 1
    logit-normal     t = sigmoid(u), u ~ N(m, s^2)                          (SD3 Eq. 19)
    mode(s)          t = f_mode(u) = 1 - u - s (cos^2(pi u / 2) - 1 + u),   (SD3 Eq. 20)
                     u ~ U(0, 1): f_mode is the inverse CDF (of 1 - u, also uniform)
    cosmap           t = 1 - 1 / (tan(pi u / 2) + 1), u ~ U(0, 1)           (SD3 Eq. 21)

The loss-weight view: drawing t from pi is, in expectation, uniform t with the per-t loss
multiplied by pi(t). SD3 writes every objective as an eps-loss weighted over the log-SNR
lambda = 2 log((1 - t) / t); for rectified flow its weight is w_t = t / (1 - t), and with a
sampler pi the weight becomes w_t = t / (1 - t) pi(t) (Sec. 3.1, Eq. 18 ff.). `weight` returns it.

Time convention: t = 1 pure noise, t = 0 data (as `course.diffusion.flow`). The resolution shift
(SD3 Eq. 23) and the dynamic shift live in `course.diffusion.flow` (`shift_sigmas`,
`dynamic_shift_sigmas`); `shift_for_resolution` here gives the alpha that Eq. 23 takes.

Shape letters: t, u and lambda are (B,) tensors (or any shape: every function is elementwise).
Ref: Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis",
Sec. 3.1 (Eqs. 18-21) and Sec. 5.3.2 (Eq. 23).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

Tensor = torch.Tensor
KINDS = ("uniform", "lognorm", "mode", "cosmap")
MODE_SCALE_MAX = 2 / (math.pi - 2)  # f_mode is monotone for -1 <= s <= 2 / (pi - 2) ~ 1.75 (SD3 Eq. 20)
_EPS = 1e-6  # draws are kept inside (eps, 1 - eps): the model never sees exactly t = 0 or t = 1


# ----------------------------------------------------------------------------- log-SNR
def log_snr(t: Tensor) -> Tensor:
    """lambda = log SNR of the rectified-flow point xt = (1 - t) x0 + t eps: 2 log((1 - t) / t)."""
    return 2 * (torch.log1p(-t) - torch.log(t))


def t_of_log_snr(lam: Tensor) -> Tensor:
    """The inverse of `log_snr`: t = sigmoid(-lambda / 2)."""
    return torch.sigmoid(-lam / 2)


# ----------------------------------------------------------------------------- densities pi(t)
def uniform_density(t: Tensor) -> Tensor:
    """pi(t) = 1 on (0, 1)."""
    return torch.ones_like(t)


def logit_normal_density(t: Tensor, m: float = 0.0, s: float = 1.0) -> Tensor:
    """pi(t; m, s) = 1 / (s sqrt(2 pi)) * 1 / (t (1 - t)) * exp(-(logit(t) - m)^2 / (2 s^2)) (SD3 Eq. 19)."""
    _check_scale(s)
    logit = torch.log(t) - torch.log1p(-t)
    return torch.exp(-((logit - m) ** 2) / (2 * s**2)) / (s * math.sqrt(2 * math.pi) * t * (1 - t))


def f_mode(u: Tensor, s: float) -> Tensor:
    """SD3 Eq. 20: t = 1 - u - s (cos^2(pi u / 2) - 1 + u); s = 0 is uniform, s > 0 favours the middle."""
    _check_mode_scale(s)
    return 1 - u - s * (torch.cos(math.pi / 2 * u) ** 2 - 1 + u)


def _f_mode_inverse(t: Tensor, s: float, iterations: int = 60) -> Tensor:
    """u with f_mode(u) = t, by bisection in float64 (f_mode decreases from 1 at u = 0 to 0 at u = 1)."""
    t64 = t.double()
    lo, hi = torch.zeros_like(t64), torch.ones_like(t64)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        above = f_mode(mid, s) > t64  # still left of the root
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return ((lo + hi) / 2).to(t.dtype)


def mode_density(t: Tensor, s: float = 1.29) -> Tensor:
    """pi(t; s) = 1 / |f_mode'(u)| at u = f_mode^{-1}(t), with f_mode'(u) = -1 - s + s (pi / 2) sin(pi u)."""
    _check_mode_scale(s)
    u = _f_mode_inverse(t, s).double()
    slope = -1 - s + s * math.pi / 2 * torch.sin(math.pi * u)
    return (1 / slope.abs()).to(t.dtype)


def cosmap_density(t: Tensor) -> Tensor:
    """pi(t) = 2 / (pi - 2 pi t + 2 pi t^2), the density of SD3's CosMap (Eq. 21)."""
    return 2 / (math.pi - 2 * math.pi * t + 2 * math.pi * t**2)


# ----------------------------------------------------------------------------- drawing t
def uniform_sample(n: int, generator: torch.Generator | None = None) -> Tensor:
    """(n,) t ~ U(0, 1)."""
    return torch.rand(n, generator=generator).clamp(_EPS, 1 - _EPS)


def logit_normal_sample(n: int, m: float = 0.0, s: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """(n,) t = sigmoid(u), u ~ N(m, s^2) (SD3 Eq. 19; m > 0 favours the noisy end)."""
    _check_scale(s)
    return torch.sigmoid(m + s * torch.randn(n, generator=generator)).clamp(_EPS, 1 - _EPS)


def mode_sample(n: int, s: float = 1.29, generator: torch.Generator | None = None) -> Tensor:
    """(n,) t = f_mode(u), u ~ U(0, 1): inverse-CDF sampling (SD3 Eq. 20)."""
    return f_mode(torch.rand(n, generator=generator), s).clamp(_EPS, 1 - _EPS)


def cosmap_sample(n: int, generator: torch.Generator | None = None) -> Tensor:
    """(n,) t = 1 - 1 / (tan(pi u / 2) + 1), u ~ U(0, 1) (SD3 Eq. 21)."""
    u = torch.rand(n, generator=generator)
    return (1 - 1 / (torch.tan(math.pi / 2 * u) + 1)).clamp(_EPS, 1 - _EPS)


# ----------------------------------------------------------------------------- one object per sampler
@dataclass(frozen=True)
class TimestepSampler:
    """A named sampler of t with its density; `parse("lognorm(0.5, 0.6)")` builds one from SD3's names."""

    kind: str  # one of KINDS
    m: float = 0.0  # logit-normal location (lognorm only)
    s: float = 1.0  # logit-normal scale, or the mode's scale s

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown timestep sampler {self.kind!r}; choose one of {KINDS}")
        if self.kind == "lognorm":
            _check_scale(self.s)
        if self.kind == "mode":
            _check_mode_scale(self.s)

    @property
    def name(self) -> str:
        """SD3's Table 1 name: "uniform", "lognorm(0.00, 1.00)", "mode(1.29)", "cosmap"."""
        if self.kind == "lognorm":
            return f"lognorm({self.m:.2f}, {self.s:.2f})"
        return f"mode({self.s:.2f})" if self.kind == "mode" else self.kind

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n,) draws of t in (0, 1)."""
        if self.kind == "lognorm":
            return logit_normal_sample(n, self.m, self.s, generator)
        if self.kind == "mode":
            return mode_sample(n, self.s, generator)
        return cosmap_sample(n, generator) if self.kind == "cosmap" else uniform_sample(n, generator)

    __call__ = sample  # a t_sampler(batch_size, generator), as `course.recipes.flow_shapes.train_flow` takes

    def density(self, t: Tensor) -> Tensor:
        """pi(t), elementwise."""
        if self.kind == "lognorm":
            return logit_normal_density(t, self.m, self.s)
        if self.kind == "mode":
            return mode_density(t, self.s)
        return cosmap_density(t) if self.kind == "cosmap" else uniform_density(t)

    def weight(self, t: Tensor) -> Tensor:
        """SD3's unified loss weight for rectified flow with this sampler: w_t = t / (1 - t) pi(t)."""
        return weight(t, self.density(t))


def weight(t: Tensor, density: Tensor) -> Tensor:
    """w_t = t / (1 - t) * pi(t): the eps-loss weight over log-SNR of rectified flow drawn from pi (SD3 Sec. 3.1)."""
    return t / (1 - t) * density


def density_over_log_snr(t: Tensor, density: Tensor) -> Tensor:
    """The same distribution as a density over lambda = log SNR: pi(t) |dt / dlambda| = pi(t) t (1 - t) / 2.

    A logit-normal(m, s) in t is a normal N(-2m, (2s)^2) in lambda.
    """
    return density * t * (1 - t) / 2


_NUMBER = r"\s*(-?\d+(?:\.\d*)?)\s*"


def parse(name: str) -> TimestepSampler:
    """"uniform", "lognorm(m, s)", "mode(s)" or "cosmap" -> a TimestepSampler."""
    text = name.strip().lower()
    if text in ("uniform", "cosmap"):
        return TimestepSampler(text)
    if m := re.fullmatch(rf"lognorm\({_NUMBER},{_NUMBER}\)", text):
        return TimestepSampler("lognorm", float(m.group(1)), float(m.group(2)))
    if m := re.fullmatch(rf"mode\({_NUMBER}\)", text):
        return TimestepSampler("mode", s=float(m.group(1)))
    raise ValueError(f"unknown timestep sampler {name!r}: write 'uniform', 'lognorm(m, s)' (e.g. 'lognorm(0, 1)'), "
                     "'mode(s)' (e.g. 'mode(1.29)') or 'cosmap'")


# ----------------------------------------------------------------------------- the resolution shift's alpha
def shift_for_resolution(m_pixels: int, n_pixels: int) -> float:
    """alpha = sqrt(m / n): the shift of SD3 Eq. 23 that maps the schedule at n pixels to one at m pixels.

    The noise on the mean of a patch of k pixels has std sigma / sqrt(k); at m / n times the pixels a
    patch of the same area averages m / n times more of them, so the same sigma leaves sqrt(m / n)
    times the amplitude SNR. Requiring the same SNR, (1 - t_m) / t_m = (1 - t_n) / (alpha t_n), gives
    t_m = alpha t_n / (1 + (alpha - 1) t_n) (`course.diffusion.flow.shift_sigmas`).
    """
    if m_pixels < 1 or n_pixels < 1:
        raise ValueError(f"pixel counts must be >= 1, got m = {m_pixels}, n = {n_pixels}")
    return math.sqrt(m_pixels / n_pixels)


def _check_scale(s: float) -> None:
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"the logit-normal scale s must be a positive number, got {s}")


def _check_mode_scale(s: float) -> None:
    if not (math.isfinite(s) and -1 <= s <= MODE_SCALE_MAX):
        raise ValueError(f"the mode scale s must be in [-1, {MODE_SCALE_MAX:.3f}] (beyond, f_mode is not monotone and "
                         f"is no sampler), got {s}")
