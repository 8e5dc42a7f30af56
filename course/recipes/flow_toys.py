"""Chapter 07's 2-D experiments: flow matching on toy sets, small enough to train live and draw.

`ToyVelocity` is an MLP v(xt, t) on points; `train_toy_flow` fits it with the conditional flow
matching loss on a path of `course.diffusion.flow` (or on reflow's couplings); the figures draw
the learned vector field, the trajectories from noise to data and the marginal densities along t;
`quality_table` scores samples by the sliced Wasserstein distance to the data at several Euler step
counts, with the real-vs-real floor at the same n, and the straightness of the flow.

The distance: sliced 2-Wasserstein (SW2), the root mean square, over random directions, of the
1-D Wasserstein-2 distance between the two sets' projections (each computed exactly by sorting).
It is zero for equal distributions up to sampling noise, which `sw_floor` measures.

Shapes: N points, (N, 2); t (N,) in [0, 1] with t = 1 noise (the course's flow convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from course.diffusion import flow
from course.nn.attention import timestep_embedding

EULER_STEPS = (1, 2, 4, 8, 32, 128)  # the step counts of the chapter's table
T_SCALE = 1000.0  # the sinusoid sees 1000 t, as the DiT does


class ToyVelocity(nn.Module):
    """v_theta(xt, t) for 2-D points: an MLP on [xt, sinusoidal embedding of 1000 t]."""

    def __init__(self, hidden: int = 128, t_dim: int = 32):
        super().__init__()
        self.t_dim = t_dim
        self.net = nn.Sequential(nn.Linear(2 + t_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=xt.dtype).reshape(-1).expand(xt.shape[0])
        emb = timestep_embedding(T_SCALE * t, self.t_dim)  # (B, t_dim)
        return self.net(torch.cat([xt, emb], dim=1))  # (B, 2 + t_dim) -> (B, 2)


@dataclass
class ToyRun:
    """A trained toy flow and how it trained."""

    model: ToyVelocity
    losses: list[float]  # the CFM loss of every step
    path: str
    seconds: float


def train_toy_flow(points: np.ndarray, path: str = "ot", steps: int = 2500, batch_size: int = 512,
                   lr: float = 3e-3, seed: int = 0, couplings: tuple[torch.Tensor, torch.Tensor] | None = None,
                   init: ToyVelocity | None = None) -> ToyRun:
    """Fit a ToyVelocity with the CFM loss (Lipman et al. 2022, Eq. 9): t ~ U(0, 1), eps ~ N(0, I).

    Args:
        points: (N, 2) data.
        couplings: reflow's (eps, x0) pairs; when given, each batch takes matched pairs instead of
            independent noise (and `points` is ignored), and the path must be "ot".
        init: start from these weights (reflow fine-tunes the 1-rectified flow).
    """
    import time

    if couplings is not None and path != "ot":
        raise ValueError("reflow trains on straight lines between its pairs: use path='ot'")
    p = flow.get_path(path)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = ToyVelocity()
    if init is not None:
        model.load_state_dict(init.state_dict())
    data = torch.as_tensor(points, dtype=torch.float32) if couplings is None else couplings[1]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 20)
    losses, t0 = [], time.perf_counter()
    for _ in range(steps):
        i = torch.randint(0, len(data), (batch_size,), generator=g)
        x0 = data[i]  # (B, 2)
        eps = torch.randn(x0.shape, generator=g) if couplings is None else couplings[0][i]
        t = torch.rand(batch_size, generator=g)
        loss = flow.cfm_loss(model(p.point(x0, eps, t), t), p.target(x0, eps, t))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return ToyRun(model.eval(), losses, path, time.perf_counter() - t0)


def v_fn_of(model: nn.Module):
    return lambda x, sigma: model(x, sigma)


@torch.no_grad()
def toy_sample(model: nn.Module, n: int, steps: int, seed: int = 0, solver: str = "euler",
               return_trajectory: bool = False):
    """Samples (n, 2) from noise with `steps` solver steps on the uniform grid (and the trajectory)."""
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return flow.sample(v_fn_of(model), x_T, flow.uniform_sigmas(steps), solver, return_trajectory)


# ----------------------------------------------------------------------------- the distance
def sliced_wasserstein(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, n_proj: int = 512,
                       seed: int = 0) -> float:
    """SW2 between two point sets of the same size (N, d): sqrt(mean over directions of W2^2 of the projections)."""
    a, b = torch.as_tensor(np.asarray(a), dtype=torch.float64), torch.as_tensor(np.asarray(b), dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"the two sets must have the same shape (N, d), got {tuple(a.shape)} and {tuple(b.shape)}")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("the point sets contain non-finite values")
    dirs = torch.randn(a.shape[1], n_proj, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)  # (d, P) unit directions
    pa, pb = (a @ dirs).sort(dim=0).values, (b @ dirs).sort(dim=0).values  # (N, P) sorted projections
    return float(((pa - pb) ** 2).mean().sqrt())


def sw_floor(name: str, n: int, seeds: tuple[int, int] = (101, 102)) -> float:
    """SW2 between two independent real samples of n points: what a perfect model would score."""
    from course.world.toys import toy_2d

    return sliced_wasserstein(toy_2d(name, n, seeds[0]), toy_2d(name, n, seeds[1]))


@torch.no_grad()
def quality_table(model: nn.Module, name: str, n: int = 4096, steps: tuple[int, ...] = EULER_STEPS,
                  seed: int = 1) -> dict[str, float]:
    """SW2 to fresh data at each Euler step count, the floor, and the straightness (Liu et al. 2022, Eq. 3)."""
    from course.world.toys import toy_2d

    real = toy_2d(name, n, seed=seed + 1000)
    out = {f"sw_{k}": round(sliced_wasserstein(toy_sample(model, n, k, seed=seed), real), 4) for k in steps}
    out["sw_floor"] = round(sw_floor(name, n), 4)
    out["straightness"] = round(flow.straightness(v_fn_of(model), torch.randn(n, 2, generator=torch.Generator()
                                                                                .manual_seed(seed)), steps=128), 4)
    return out


def reflow_toy(run: ToyRun, n_pairs: int = 20_000, pair_steps: int = 128, steps: int = 2000, seed: int = 5):
    """One reflow of a toy flow: its own (noise, sample) pairs, then fine-tuning on straight lines between them.

    Returns:
        (the reflowed ToyRun, the number of network evaluations spent on the pairs).
    """
    noise = torch.randn(n_pairs, 2, generator=torch.Generator().manual_seed(seed))
    eps, x0 = flow.reflow_couplings(v_fn_of(run.model), noise, flow.uniform_sigmas(pair_steps))
    reflowed = train_toy_flow(None, "ot", steps=steps, lr=1e-3, seed=seed, couplings=(eps, x0), init=run.model)
    return reflowed, n_pairs * pair_steps


# ----------------------------------------------------------------------------- CFM = FM in gradient
def gmm_2d(k: int = 4, radius: float = 2.0, std: float = 0.3) -> tuple[torch.Tensor, float, torch.Tensor]:
    """A 2-D Gaussian mixture: k components on a circle, isotropic std, equal weights (means, std, weights)."""
    angle = torch.arange(k, dtype=torch.float64) * 2 * np.pi / k
    return radius * torch.stack([angle.cos(), angle.sin()], 1), std, torch.full((k,), 1.0 / k, dtype=torch.float64)


def cfm_fm_gradients(model: nn.Module, path: str = "ot", n: int = 200_000, seed: int = 0):
    """The gradients of the CFM and the FM loss on a Gaussian mixture, from the same samples.

    FM regresses on the marginal field u_t(x) (closed-form here, `flow.gmm_marginal_velocity`);
    CFM on the per-sample target u_t(x | x0, eps). Their gradients agree in expectation
    (Lipman et al. 2022, Theorem 2), so from the same (x0, eps, t) they differ only by Monte Carlo
    noise, while the two losses differ by a constant (the target's conditional variance).

    Returns:
        dict with the two losses, the flattened gradients and their relative difference.
    """
    means, std, weights = gmm_2d()
    g = torch.Generator().manual_seed(seed)
    comp = torch.multinomial(weights, n, replacement=True, generator=g)
    x0 = means[comp] + std * torch.randn(n, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.98 + 0.01
    p = flow.get_path(path)
    xt, u_cond = p.point(x0, eps, t), p.target(x0, eps, t)
    u_marg = flow.gmm_marginal_velocity(xt, t, means, std, weights, p)
    model = model.double()
    grads, losses = [], []
    for target in (u_cond, u_marg):
        model.zero_grad()
        loss = flow.cfm_loss(model(xt, t), target)
        loss.backward()
        grads.append(torch.cat([q.grad.reshape(-1) for q in model.parameters()]).clone())
        losses.append(loss.item())
    model.float()
    rel = float((grads[0] - grads[1]).norm() / grads[1].norm())
    return {"cfm_loss": losses[0], "fm_loss": losses[1], "grad_cfm": grads[0], "grad_fm": grads[1], "relative_diff": rel}
