"""Chapter 01's first model: DDPM on a 2-D toy set, small enough to train in seconds and to draw.

`ToyDenoiser` is an MLP eps(xt, t) on points; `train_toy` fits it to a toy set of
`course.world.toys`; `trajectories` runs the DDPM or DDIM chain from x_T and keeps every step;
`score_field` samples the predicted -eps on a grid (the arrows of the chapter's quiver plot).

Shapes: N points, (N, 2).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from course.diffusion import ddpm
from course.nn.attention import timestep_embedding

# ----------------------------------------------------------------------------- the 2-D toy


class ToyDenoiser(nn.Module):
    """eps_theta(xt, t) for 2-D points: an MLP on [xt, sinusoidal embedding of t]."""

    def __init__(self, hidden: int = 128, t_dim: int = 32):
        super().__init__()
        self.t_dim = t_dim
        self.net = nn.Sequential(nn.Linear(2 + t_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t.reshape(-1).expand(xt.shape[0]), self.t_dim)  # (B, t_dim)
        return self.net(torch.cat([xt, emb], dim=1))  # (B, 2 + t_dim) -> (B, 2)


def train_toy(points: np.ndarray, schedule: ddpm.Schedule, steps: int = 2000, batch_size: int = 512,
              lr: float = 3e-3, seed: int = 0) -> tuple[ToyDenoiser, list[float]]:
    """Fit a ToyDenoiser to 2-D points with the simple eps loss (Ho et al. 2020, Algorithm 1).

    Returns:
        (model in eval mode, the loss of every step).
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = torch.as_tensor(points, dtype=torch.float32)
    model = ToyDenoiser()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 10)
    losses = []
    for _ in range(steps):
        x0 = data[torch.randint(0, len(data), (batch_size,), generator=generator)]  # (B, 2)
        t = torch.randint(0, schedule.num_train_timesteps, (batch_size,), generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        loss = ddpm.eps_loss(model, x0, t, eps, schedule.alpha_bar)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return model.eval(), losses


@torch.no_grad()
def trajectories(model_fn, x_T: torch.Tensor, schedule: ddpm.Schedule, steps: int, method: str = "ddim",
                 eta: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Every intermediate sample of a DDPM / DDIM run, the same steps as `ddpm.sample` takes.

    Returns:
        (steps + 1, B, ...) from x_T to the final x0.
    """
    generator = torch.Generator().manual_seed(seed)
    timesteps = ddpm.respace(schedule.num_train_timesteps, steps, schedule.timestep_spacing, schedule.steps_offset).tolist()
    xs = [x_T]
    for i, t in enumerate(timesteps):
        x = xs[-1]
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        out = model_fn(x, torch.full((x.shape[0],), t, dtype=torch.long))
        noise = torch.randn(x.shape, generator=generator)
        if method == "ddpm":
            xs.append(ddpm.ddpm_step(out, t, x, schedule, noise, prev_t).x_prev)
        else:
            xs.append(ddpm.ddim_step(out, t, x, schedule, prev_t, eta, noise).x_prev)
    return torch.stack(xs)  # (steps + 1, B, ...)


@torch.no_grad()
def score_field(model_fn, t: int, schedule: ddpm.Schedule, lim: float = 3.0, n: int = 21):
    """The learned score grad log p_t(x) = -eps_theta(x, t) / sqrt(1 - alpha_bar_t) on an n x n grid.

    Returns:
        (grid (n*n, 2), score (n*n, 2)) as tensors. Ref: Song et al. 2021 (SDE), Eq. 2 / Ho et al. 2020, Sec. 3.2.
    """
    axis = torch.linspace(-lim, lim, n)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1).reshape(-1, 2)  # (n*n, 2)
    eps = model_fn(grid, torch.full((len(grid),), t, dtype=torch.long))
    return grid, -eps / (1 - schedule.alpha_bar[t]) ** 0.5


def on_data_share(samples: torch.Tensor | np.ndarray, points: np.ndarray, radius: float = 0.1) -> float:
    """Share of `samples` (N, 2) within `radius` of some data point of `points` (M, 2).

    A toy model that fits puts almost all its samples on the data (here: on the moons); one that
    has not learned enough leaves them in between. The radius is about the width of the moons'
    own noise.
    """
    x = torch.as_tensor(np.asarray(samples), dtype=torch.float32)
    data = torch.as_tensor(points, dtype=torch.float32)
    return float((torch.cdist(x, data).min(dim=1).values < radius).float().mean())
