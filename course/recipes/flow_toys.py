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
from course.recipes.toy_2d import ToyDenoiser

EULER_STEPS = (1, 2, 4, 8, 32, 128)  # the step counts of the chapter's table
T_SCALE = 1000.0  # the sinusoid sees 1000 t, as the DiT does


class ToyVelocity(ToyDenoiser):
    """v_theta(xt, t) for 2-D points: chapter 01's toy MLP, fed the flow time t in [0, 1] as 1000 t."""

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=xt.dtype).reshape(-1).expand(xt.shape[0])
        return super().forward(xt, T_SCALE * t)  # (B, 2)


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
    """SW2 to fresh data at each Euler step count, the floor, and the straightness (Liu et al. 2022, Eq. 3).

    SW2 alone can rank two failures oddly: a sampler that returns the noise unchanged scores better
    than one that collapses every sample onto the data's mean. So the table also gives the share of
    samples within 0.1 of a data point (`on_data_k`, a precision; real data scores `on_data_real`).
    """
    from course.world.toys import toy_2d

    from course.recipes.toy_2d import on_data_share

    real = toy_2d(name, n, seed=seed + 1000)
    out = {}
    for k in steps:
        x = toy_sample(model, n, k, seed=seed)
        out[f"sw_{k}"] = round(sliced_wasserstein(x, real), 4)
        out[f"on_data_{k}"] = round(on_data_share(x, real), 3)  # precision: the share within 0.1 of a data point
    out["on_data_real"] = round(on_data_share(toy_2d(name, n, seed=seed + 2000), real), 3)
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


# ----------------------------------------------------------------------------- the chapter's figures
LIM = 3.5  # the plotted square [-LIM, LIM]^2


@torch.no_grad()
def velocity_grid(model: nn.Module, t: float, n: int = 17, lim: float = LIM):
    """The learned field on an n x n grid at time t: (grid (n*n, 2), -v (n*n, 2)), -v being the way toward data."""
    axis = torch.linspace(-lim, lim, n)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1).reshape(-1, 2)  # (n*n, 2)
    return grid, -model(grid, torch.full((len(grid),), float(t)))


def _field_panel(ax, model, t, traj=None, sigmas=None, points=None):
    grid, arrows = velocity_grid(model, t)
    ax.quiver(grid[:, 0], grid[:, 1], arrows[:, 0], arrows[:, 1], color="tab:blue", alpha=0.7, angles="xy",
              scale_units="xy", scale=6, width=0.004)
    if traj is not None:  # where the samples are at this t
        k = int(np.argmin(np.abs(np.asarray(sigmas) - t)))
        ax.scatter(traj[k, :, 0], traj[k, :, 1], s=2, c="black", alpha=0.5)
    ax.set(xlim=(-LIM, LIM), ylim=(-LIM, LIM), aspect="equal", xticks=[], yticks=[])
    ax.set_title(f"t = {t:.2f}", fontsize=9)


def field_figure(model: nn.Module, ts=(1.0, 0.75, 0.5, 0.25, 0.0), n_points: int = 600, title: str = ""):
    """The vector field -v(x, t) (blue, toward data) and the samples riding it (black), at several t."""
    from matplotlib.figure import Figure

    sigmas = flow.uniform_sigmas(100)
    _, traj = toy_sample(model, n_points, 100, seed=3, return_trajectory=True)
    fig = Figure(figsize=(2.3 * len(ts), 2.6), layout="constrained")
    for ax, t in zip(fig.subplots(1, len(ts)), ts):
        _field_panel(ax, model, t, traj.numpy(), sigmas.tolist())
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def trajectory_figure(models: dict[str, nn.Module], n: int = 300, steps: int = 100, points: np.ndarray | None = None):
    """Each model's trajectories from noise (grey dots) to its samples (black), one panel per model."""
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(models), 3.3), layout="constrained")
    for ax, (name, model) in zip(np.atleast_1d(fig.subplots(1, len(models))), models.items()):
        _, traj = toy_sample(model, n, steps, seed=4, return_trajectory=True)
        traj = traj.numpy()  # (steps + 1, n, 2)
        if points is not None:
            ax.scatter(points[:3000, 0], points[:3000, 1], s=1, c="tab:orange", alpha=0.15)
        ax.add_collection(LineCollection(traj.transpose(1, 0, 2), colors="tab:blue", linewidths=0.5, alpha=0.35))
        ax.scatter(traj[0, :, 0], traj[0, :, 1], s=3, c="grey")
        ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=3, c="black")
        S = flow.straightness(v_fn_of(model), torch.as_tensor(traj[0]), steps=steps)
        ax.set(xlim=(-LIM, LIM), ylim=(-LIM, LIM), aspect="equal", xticks=[], yticks=[])
        ax.set_title(f"{name}\nstraightness S = {S:.3f}", fontsize=9)
    return fig


def density_figure(model: nn.Module, ts=(1.0, 0.8, 0.6, 0.4, 0.2, 0.0), n: int = 20_000, title: str = ""):
    """The marginal density p_t, as a histogram of the flow's own samples at each t: noise morphing into data."""
    from matplotlib.figure import Figure

    sigmas = flow.uniform_sigmas(100).tolist()
    _, traj = toy_sample(model, n, 100, seed=5, return_trajectory=True)
    fig = Figure(figsize=(2.0 * len(ts), 2.3), layout="constrained")
    for ax, t in zip(fig.subplots(1, len(ts)), ts):
        k = int(np.argmin(np.abs(np.asarray(sigmas) - t)))
        ax.hist2d(traj[k, :, 0].numpy(), traj[k, :, 1].numpy(), bins=60, range=[[-LIM, LIM], [-LIM, LIM]], cmap="magma")
        ax.set(aspect="equal", xticks=[], yticks=[])
        ax.set_title(f"p_t at t = {t:.1f}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def steps_figure(models: dict[str, nn.Module], steps=(1, 2, 4, 8, 32), n: int = 1500, points: np.ndarray | None = None):
    """Samples of each model (rows) at each Euler step count (columns), over the data in orange."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.9 * len(steps), 2.0 * len(models)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(models), len(steps)))
    for row, (name, model) in zip(axes, models.items()):
        for ax, k in zip(row, steps):
            x = toy_sample(model, n, k, seed=6).numpy()
            if points is not None:
                ax.scatter(points[:2000, 0], points[:2000, 1], s=1, c="tab:orange", alpha=0.2)
            ax.scatter(x[:, 0], x[:, 1], s=1, c="black")
            ax.set(xlim=(-LIM, LIM), ylim=(-LIM, LIM), aspect="equal", xticks=[], yticks=[])
            ax.set_title(f"{name}, {k} step{'s' if k > 1 else ''}", fontsize=8)
    return fig


def field_explorer(models: dict[str, nn.Module]):
    """The learned field and the samples riding it, at a chosen t, for each model."""
    from course.widgets import Choice, Slider, explore

    sigmas = flow.uniform_sigmas(100).tolist()
    trajs = {name: toy_sample(m, 500, 100, seed=3, return_trajectory=True)[1].numpy() for name, m in models.items()}

    def panel(model: str, t: float):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(3.2, 3.4), layout="constrained")
        ax = fig.subplots()
        _field_panel(ax, models[model], t, trajs[model], sigmas)
        ax.set_title("-v(x, t) (blue) and the samples at t", fontsize=8)
        return fig

    return explore(panel, static={"model": list(models), "t": [1.0, 0.5, 0.1]},
                   model=Choice(tuple(models), next(iter(models))), t=Slider(0.0, 1.0, 0.05, 0.5))


def steps_explorer(models: dict[str, nn.Module], points: np.ndarray):
    """Samples against the number of Euler steps, before and after reflow (or for each path)."""
    from course.widgets import Choice, Slider, explore

    def panel(model: str, steps: int):
        from matplotlib.figure import Figure

        x = toy_sample(models[model], 1500, steps, seed=6).numpy()
        fig = Figure(figsize=(3.2, 3.4), layout="constrained")
        ax = fig.subplots()
        ax.scatter(points[:2000, 0], points[:2000, 1], s=1, c="tab:orange", alpha=0.2)
        ax.scatter(x[:, 0], x[:, 1], s=1, c="black")
        real = points[: len(x)]
        ax.set(xlim=(-LIM, LIM), ylim=(-LIM, LIM), aspect="equal", xticks=[], yticks=[])
        ax.set_title(f"SW2 to data {sliced_wasserstein(x, real):.3f}", fontsize=8)
        return fig

    return explore(panel, static={"model": list(models), "steps": [1, 2, 8]},
                   model=Choice(tuple(models), next(iter(models))), steps=Slider(1, 64, 1, 2))
