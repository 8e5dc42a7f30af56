"""Flow matching and rectified flow as pure functions (chapter 07).

A flow model learns a velocity field and samples by integrating an ODE from noise to data.

Time convention, the course's and SD3's: t = sigma = 1 is pure noise, t = 0 is data; sampling runs
t from 1 down to 0. `facebookresearch/flow_matching` and Lipman et al. 2022 use the reverse (t = 0
noise, t = 1 data): their x_t with t is this module's xt with 1 - t, and their velocity is minus
this module's. diffusers' FlowMatchEulerDiscreteScheduler uses this module's convention.

- Probability paths (`Path`): affine paths xt = a_t x0 + b_t eps, each with its velocity target
  u_t = da_t x0 + db_t eps (the time derivative of xt along one conditional path):
  "ot" (rectified flow / conditional OT: a = 1 - t, b = t, u = eps - x0), "vp" (the diffusion
  path of a VP SDE written as a flow, Lipman et al.'s FM-VP), "cosine" (a = cos(pi t / 2),
  b = sin(pi t / 2)).
- The conditional flow matching loss (Lipman et al. 2022, Eq. 9): E ||v(xt, t) - u_t||^2, and
  the closed-form marginal field of a Gaussian mixture, to show that its gradient is the
  intractable flow matching loss's (Eq. 5) in expectation.
- Conversions between the flow's velocity and the eps / x0 / v predictions of chapter 01, and
  between a DDPM alpha_bar and the flow's sigma: the one place where the two conventions meet.
- Solvers: Euler and Heun steps over a sigma grid; the grid of diffusers' scheduler, with SD3's
  shift (Esser et al. 2024, Eq. 23) and the dynamic (resolution-dependent) shift.
- Straightness (Liu et al. 2022, Eq. 3) and reflow's couplings.

Names: x0 data, eps noise (x1 in Liu et al.), xt the point at time t, u the velocity target, v
the model's velocity (`v_fn`), sigma = t on a sampler's grid. Not to be confused with chapter
01's v-prediction, `v_ddpm` below (Salimans & Ho 2022), which is the velocity of the cosine path
up to the factor pi / 2.

Shape letters: B batch, then any data dims (...); t and sigma are (B,) or scalars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

Tensor = torch.Tensor
PATHS = ("ot", "vp", "cosine")
SOLVERS = ("euler", "heun")
VP_BETA_MIN, VP_BETA_MAX = 0.1, 20.0  # the VP SDE's beta(s) = beta_min + s (beta_max - beta_min) (Song et al. 2021)


def _expand(t: Tensor | float, like: Tensor) -> Tensor:
    """t as a tensor broadcastable against `like`: (B,) -> (B, 1, 1, ...)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.reshape(t.shape + (1,) * (like.dim() - t.dim())) if t.dim() else t


# ----------------------------------------------------------------------------- probability paths
@dataclass(frozen=True)
class Path:
    """An affine probability path xt = a(t) x0 + b(t) eps, t in [0, 1], t = 1 noise.

    Each coefficient function maps a tensor t to a tensor of the same shape.
    """

    name: str
    a: Callable[[Tensor], Tensor]  # signal coefficient, a(0) = 1
    b: Callable[[Tensor], Tensor]  # noise coefficient, b(1) = 1 (or nearly, for vp)
    da: Callable[[Tensor], Tensor]  # d a / d t
    db: Callable[[Tensor], Tensor]  # d b / d t

    def point(self, x0: Tensor, eps: Tensor, t: Tensor | float) -> Tensor:
        """xt = a_t x0 + b_t eps."""
        t = _expand(t, x0)
        return self.a(t) * x0 + self.b(t) * eps

    def target(self, x0: Tensor, eps: Tensor, t: Tensor | float) -> Tensor:
        """u_t(xt | x0, eps) = da_t x0 + db_t eps, the conditional velocity (Lipman et al. 2022, Eq. 15)."""
        t = _expand(t, x0)
        return self.da(t) * x0 + self.db(t) * eps

    def x0_eps(self, xt: Tensor, v: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(x0, eps) from a point and a velocity: solves xt = a x0 + b eps, v = da x0 + db eps."""
        t = _expand(t, xt)
        a, b, da, db = self.a(t), self.b(t), self.da(t), self.db(t)
        det = a * db - b * da
        return (db * xt - b * v) / det, (a * v - da * xt) / det


def _vp_log_a(t: Tensor) -> Tensor:
    # a(t) = exp(-T(t) / 2), T(t) = int_0^t beta(s) ds
    return -0.5 * (VP_BETA_MIN * t + 0.5 * (VP_BETA_MAX - VP_BETA_MIN) * t**2)


def _vp_a(t: Tensor) -> Tensor:
    return torch.exp(_vp_log_a(t))


def _vp_da(t: Tensor) -> Tensor:
    return -0.5 * (VP_BETA_MIN + (VP_BETA_MAX - VP_BETA_MIN) * t) * _vp_a(t)


def _vp_b(t: Tensor) -> Tensor:
    return torch.sqrt(-torch.expm1(2 * _vp_log_a(t)))  # sqrt(1 - a^2), exact near t = 0


def _vp_db(t: Tensor) -> Tensor:
    return -_vp_a(t) * _vp_da(t) / _vp_b(t).clamp_min(1e-12)


_HALF_PI = math.pi / 2
PATH_REGISTRY: dict[str, Path] = {
    # Liu et al. 2022 rectified flow; Lipman et al. 2022 Eq. 20 (sigma_min = 0), in this module's time
    "ot": Path("ot", a=lambda t: 1 - t, b=lambda t: t, da=lambda t: -torch.ones_like(t), db=lambda t: torch.ones_like(t)),
    # Lipman et al. 2022 Eq. 19 (FM-VP): the VP SDE's marginal path; b(1) = sqrt(1 - e^-10.05) ~ 1
    "vp": Path("vp", a=_vp_a, b=_vp_b, da=_vp_da, db=_vp_db),
    # Nichol & Dhariwal's cosine schedule without its offset; Albergo & Vanden-Eijnden's trigonometric interpolant
    "cosine": Path("cosine", a=lambda t: torch.cos(_HALF_PI * t), b=lambda t: torch.sin(_HALF_PI * t),
                   da=lambda t: -_HALF_PI * torch.sin(_HALF_PI * t), db=lambda t: _HALF_PI * torch.cos(_HALF_PI * t)),
}


def get_path(name: str) -> Path:
    if name not in PATH_REGISTRY:
        raise ValueError(f"unknown probability path {name!r}; choose one of {PATHS}")
    return PATH_REGISTRY[name]


def rf_path(x0: Tensor, eps: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
    """Rectified flow's (xt, u): xt = (1 - t) x0 + t eps, u = eps - x0 (Liu et al. 2022, Eq. 1)."""
    te = _expand(t, x0)
    return (1 - te) * x0 + te * eps, eps - x0


# ----------------------------------------------------------------------------- the loss
def cfm_loss(v: Tensor, u: Tensor) -> Tensor:
    """Conditional flow matching loss: mean ||v - u||^2 (Lipman et al. 2022, Eq. 9), averaged over elements."""
    if v.shape != u.shape:
        raise ValueError(f"the velocity {tuple(v.shape)} and its target {tuple(u.shape)} must have the same shape")
    return ((v - u) ** 2).mean()


def gmm_posterior(x: Tensor, t: Tensor | float, means: Tensor, std: float, weights: Tensor, path: Path):
    """E[x0 | xt = x] and E[eps | xt = x] for data from an isotropic Gaussian mixture.

    Data x0 ~ sum_k w_k N(mu_k, std^2 I). Under the path, xt | k ~ N(a mu_k, (a^2 std^2 + b^2) I),
    so the posterior over components and each component's Gaussian conditional are closed-form.

    Args:
        x: (B, d) points; t: a scalar or (B,) times in (0, 1]; means: (K, d); weights: (K,).

    Returns:
        (E[x0 | x], E[eps | x]), each (B, d).
    """
    t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])[:, None, None]  # (B, 1, 1)
    a, b = path.a(t), path.b(t)
    var = a**2 * std**2 + b**2  # (B, 1, 1): the variance of xt within a component
    diff = x[:, None, :] - a * means[None]  # (B, K, d): xt minus each component's mean
    log_r = torch.log(weights)[None] - 0.5 * (diff**2).sum(-1) / var[..., 0]  # (B, K)
    r = torch.softmax(log_r, dim=1)  # (B, K): the posterior over components
    x0_k = means[None] + a * std**2 / var * diff  # (B, K, d)
    eps_k = b / var * diff  # (B, K, d)
    return (r[..., None] * x0_k).sum(1), (r[..., None] * eps_k).sum(1)


def gmm_marginal_velocity(x: Tensor, t: Tensor | float, means: Tensor, std: float, weights: Tensor, path: Path) -> Tensor:
    """The marginal field u_t(x) = E[u_t(xt | x0, eps) | xt = x] of a Gaussian mixture: what FM regresses on.

    Ref: Lipman et al. 2022, Eq. 8 (the marginal field); Theorem 2 (CFM and FM have the same gradient).
    """
    x0, eps = gmm_posterior(x, t, means, std, weights, path)
    t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])[:, None]  # (B, 1)
    return path.da(t) * x0 + path.db(t) * eps


# ----------------------------------------------------------------------------- conversions
def sigma_from_alpha_bar(alpha_bar: Tensor) -> Tensor:
    """The flow time of a VP point: xt / (sqrt(ab) + sqrt(1 - ab)) is rectified flow's point at this sigma.

    Both points have the same signal-to-noise ratio: SNR = ab / (1 - ab) = ((1 - sigma) / sigma)^2.
    """
    s, n = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    return n / (s + n)


def alpha_bar_from_sigma(sigma: Tensor) -> Tensor:
    """The inverse of `sigma_from_alpha_bar`: ab = (1 - sigma)^2 / ((1 - sigma)^2 + sigma^2)."""
    return (1 - sigma) ** 2 / ((1 - sigma) ** 2 + sigma**2)


def flow_point_from_vp(xt_vp: Tensor, alpha_bar: Tensor) -> tuple[Tensor, Tensor]:
    """(xt on the OT path, sigma) for a VP point xt = sqrt(ab) x0 + sqrt(1 - ab) eps."""
    alpha_bar = torch.as_tensor(alpha_bar, dtype=xt_vp.dtype)
    scale = alpha_bar.sqrt() + (1 - alpha_bar).sqrt()
    return xt_vp / _expand(scale, xt_vp), sigma_from_alpha_bar(alpha_bar)


def velocity_from_eps(xt: Tensor, eps: Tensor, sigma: Tensor | float) -> Tensor:
    """OT velocity from an eps prediction at a rectified-flow point: x0 = (xt - sigma eps) / (1 - sigma), u = eps - x0."""
    s = _expand(sigma, xt)
    return eps - (xt - s * eps) / (1 - s)


def velocity_to_eps(xt: Tensor, v: Tensor, sigma: Tensor | float) -> Tensor:
    """eps = xt + (1 - sigma) v on the OT path."""
    return xt + (1 - _expand(sigma, xt)) * v


def velocity_to_x0(xt: Tensor, v: Tensor, sigma: Tensor | float) -> Tensor:
    """x0 = xt - sigma v on the OT path (what SD3's sampler denoises to)."""
    return xt - _expand(sigma, xt) * v


def velocity_from_x0(xt: Tensor, x0: Tensor, sigma: Tensor | float) -> Tensor:
    """u = (xt - x0) / sigma on the OT path."""
    return (xt - x0) / _expand(sigma, xt)


def v_ddpm_from_velocity(xt_vp: Tensor, v: Tensor, alpha_bar: Tensor) -> Tensor:
    """Chapter 01's v = sqrt(ab) eps - sqrt(1 - ab) x0 from an OT velocity, at the VP point of the same SNR."""
    xt, sigma = flow_point_from_vp(xt_vp, alpha_bar)
    x0, eps = velocity_to_x0(xt, v, sigma), velocity_to_eps(xt, v, sigma)
    ab = _expand(torch.as_tensor(alpha_bar, dtype=xt.dtype), xt)
    return ab.sqrt() * eps - (1 - ab).sqrt() * x0


# ----------------------------------------------------------------------------- the sigma grid and the shift
def shift_sigmas(sigmas: Tensor, shift: float) -> Tensor:
    """SD3's resolution shift: shift * s / (1 + (shift - 1) s), shift = sqrt(m / n) (Esser et al. 2024, Eq. 23)."""
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a positive finite number, got {shift}")
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def dynamic_shift_sigmas(sigmas: Tensor, mu: float, exponent: float = 1.0) -> Tensor:
    """diffusers' dynamic shift: e^mu / (e^mu + (1/s - 1)^exponent); with exponent 1 it is shift_sigmas(s, e^mu)."""
    if not math.isfinite(mu):
        raise ValueError(f"mu must be a finite number, got {mu}")
    return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** exponent)


def calculate_shift(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096,
                    base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """mu from the image's token count: a line through (base_seq_len, base_shift) and (max_seq_len, max_shift).

    The rule of diffusers' SD3 / Flux pipelines: more tokens, more shift.
    """
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * m + (base_shift - m * base_seq_len)


def flow_sigmas(steps: int, *, shift: float = 1.0, mu: float | None = None, num_train_timesteps: int = 1000) -> Tensor:
    """The sampler's grid, (steps + 1,) from sigma_max down to 0: FlowMatchEulerDiscreteScheduler's.

    diffusers spaces `steps` points evenly from 1 to sigma_min (the training grid's smallest sigma,
    itself shifted when the shift is static), shifts them, and appends 0. With `mu` the dynamic
    shift replaces the static one. The model's timestep input is sigma * num_train_timesteps.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    import numpy as np  # float64 as diffusers computes it, then float32

    sigma_min = 1.0 / num_train_timesteps
    if mu is None:
        sigma_min = float(torch.tensor(shift * sigma_min / (1 + (shift - 1) * sigma_min), dtype=torch.float32))
    s = np.linspace(1.0 * num_train_timesteps, sigma_min * num_train_timesteps, steps) / num_train_timesteps
    s = math.exp(mu) / (math.exp(mu) + (1 / s - 1)) if mu is not None else shift * s / (1 + (shift - 1) * s)
    return torch.cat([torch.from_numpy(np.asarray(s)).float(), torch.zeros(1)])


def uniform_sigmas(steps: int, shift: float = 1.0) -> Tensor:
    """An evenly spaced grid 1 -> 0 with `steps` steps, shifted: the textbook Euler grid."""
    return shift_sigmas(torch.linspace(1.0, 0.0, steps + 1), shift)


# ----------------------------------------------------------------------------- solvers
def euler_step(x: Tensor, v: Tensor, sigma: Tensor | float, sigma_next: Tensor | float) -> Tensor:
    """One Euler step of dx/dsigma = v: x + (sigma_next - sigma) v. Sigma decreases, so this moves toward data."""
    return x + (_expand(sigma_next, x) - _expand(sigma, x)) * v


def heun_step(v_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, sigma: float, sigma_next: float,
              v: Tensor | None = None) -> Tensor:
    """Heun's second-order step (Karras et al. 2022, Alg. 1): Euler, then the average of both slopes.

    The last step (sigma_next = 0) is a plain Euler step, as in Karras et al.'s sampler. `v` may pass
    the slope at (x, sigma) if it is known already.
    """
    B = x.shape[0]
    v = v_fn(x, torch.full((B,), sigma)) if v is None else v
    x_euler = euler_step(x, v, sigma, sigma_next)
    if sigma_next == 0:
        return x_euler
    v_next = v_fn(x_euler, torch.full((B,), sigma_next))
    return x + (sigma_next - sigma) * 0.5 * (v + v_next)


def sample(v_fn: Callable[[Tensor, Tensor], Tensor], x_T: Tensor, sigmas: Tensor, solver: str = "euler",
           return_trajectory: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Integrate dx/dsigma = v_fn(x, sigma) along `sigmas` (from noise toward data).

    Args:
        v_fn: (x (B, ...), sigma (B,)) -> v (B, ...).
        x_T: (B, ...) the starting points at sigmas[0] (usually noise at sigma = 1).
        sigmas: (N + 1,) decreasing grid. Euler costs N evaluations, Heun 2N - 1.
        return_trajectory: also return every point, (N + 1, B, ...).

    Ref: Liu et al. 2022, Eq. 2 (the Euler sampler of rectified flow).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
    sigmas = [float(s) for s in sigmas]
    if any(b >= a for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError("sigmas must decrease strictly (noise -> data)")
    x, traj = x_T, [x_T]
    for sigma, sigma_next in zip(sigmas, sigmas[1:]):
        if solver == "euler":
            x = euler_step(x, v_fn(x, torch.full((x.shape[0],), sigma)), sigma, sigma_next)
        else:
            x = heun_step(v_fn, x, sigma, sigma_next)
        if return_trajectory:
            traj.append(x)
    return (x, torch.stack(traj)) if return_trajectory else x


def nfe(steps: int, solver: str) -> int:
    """Network evaluations of `sample` with `steps` steps (without guidance's doubling)."""
    return steps if solver == "euler" else 2 * steps - 1


# ----------------------------------------------------------------------------- straightness and reflow
@torch.no_grad()
def straightness(v_fn: Callable[[Tensor, Tensor], Tensor], x_T: Tensor, steps: int = 100) -> float:
    """S = int_0^1 E ||(x1 - x0) - v(xt, t)||^2 dt along the flow's own trajectories (Liu et al. 2022, Eq. 3).

    x1 = x_T is the noise, x0 the end of its trajectory (an Euler solve with `steps` steps); the
    integral is the Euler grid's Riemann sum. S = 0 exactly when every trajectory is a straight
    line travelled at constant speed, which one Euler step integrates exactly. The squared norm is
    summed over the data dims and averaged over the batch.
    """
    sigmas = uniform_sigmas(steps)
    x, vs, dts = x_T, [], []
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        v = v_fn(x, torch.full((x.shape[0],), sigma))
        vs.append(v)
        dts.append(sigma - sigma_next)
        x = euler_step(x, v, sigma, sigma_next)
    chord = x_T - x  # x1 - x0, (B, ...)
    dims = tuple(range(1, x.dim()))
    return float(sum(dt * ((chord - v) ** 2).sum(dims).mean() for v, dt in zip(vs, dts)))


@torch.no_grad()
def reflow_couplings(v_fn: Callable[[Tensor, Tensor], Tensor], noise: Tensor, sigmas: Tensor,
                     solver: str = "euler") -> tuple[Tensor, Tensor]:
    """Reflow's (noise, sample) pairs: each noise integrated to data by the trained flow.

    Training a new flow on the straight lines between these pairs (the OT path with the pair as
    (eps, x0) instead of independent draws) gives the 2-rectified flow (Liu et al. 2022, Sec. 2.3):
    the new flow's paths follow the old flow's couplings, which no longer cross, so they come out
    straighter and need fewer steps.

    Returns:
        (noise, x0), both shaped like `noise`.
    """
    return noise, sample(v_fn, noise, sigmas, solver)
