"""Chapter 08's figures of the timestep samplers: densities and loss weights, against t and log-SNR.

The math is `course.diffusion.timesteps`; this module only draws it:

- `density_figure`: pi(t) and SD3's weight w_t = t / (1 - t) pi(t) for the chapter's samplers, over
  t and over lambda = log SNR (where a logit-normal is a plain Gaussian), with a histogram of draws
  under each density so that the sampler and its formula are seen to agree.
- `density_explorer`: the logit-normal's (m, s) against its density and weight (uniform and
  lognorm(0, 1) drawn for reference).
- `ablation_figure`, `per_t_figure`: the stored ablation (FID against accuracy per sampler setting)
  and the per-t velocity loss of the trained models beside the best linear predictor's.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from course.diffusion import timesteps

CHAPTER_SAMPLERS = ("uniform", "lognorm(0.00, 1.00)", "lognorm(0.50, 0.60)", "lognorm(1.00, 0.60)", "mode(1.29)", "cosmap")
_T = torch.linspace(0, 1, 2001, dtype=torch.float64)[1:-1]
_LAM_RANGE = (-10.0, 10.0)


def _curves(name: str):
    s = timesteps.parse(name)
    p = s.density(_T)
    return s, p.numpy(), s.weight(_T).numpy(), timesteps.density_over_log_snr(_T, p).numpy()


def density_figure(names=CHAPTER_SAMPLERS, draws: int = 50_000) -> Figure:
    """Four panels: pi(t) with histograms of draws, w_t over t, the density over lambda, w over lambda."""
    fig = Figure(figsize=(13, 6.2), layout="constrained")
    axes = fig.subplots(2, 2)
    t, lam = _T.numpy(), timesteps.log_snr(_T).numpy()
    g = torch.Generator().manual_seed(0)
    for k, name in enumerate(names):
        s, p, w, p_lam = _curves(name)
        colour = f"C{k}"
        axes[0, 0].plot(t, p, color=colour, label=s.name)
        axes[0, 0].hist(s.sample(draws, g).numpy(), bins=50, range=(0, 1), density=True, histtype="step", color=colour,
                        alpha=0.45, lw=0.8)
        axes[0, 1].plot(t, w, color=colour, label=s.name)
        axes[1, 0].plot(lam, p_lam, color=colour, label=s.name)
        axes[1, 1].plot(lam, w, color=colour, label=s.name)
    axes[0, 0].set(xlabel="t (0 data, 1 noise)", ylabel="density pi(t)", ylim=(0, 4.0),
                   title="densities pi(t); thin steps: histograms of 50,000 draws")
    axes[0, 1].set(xlabel="t", ylabel="w_t = t / (1 - t) pi(t) (log)", yscale="log", ylim=(1e-3, 1e2),
                   title="SD3's loss weight (eps-loss over log-SNR)")
    axes[1, 0].set(xlabel="log-SNR lambda = 2 log((1 - t) / t)", ylabel="density over lambda", xlim=_LAM_RANGE,
                   title="the same densities over lambda (logit-normal = a Gaussian here)")
    axes[1, 1].set(xlabel="log-SNR lambda", ylabel="w (log)", yscale="log", ylim=(1e-3, 1e2), xlim=_LAM_RANGE,
                   title="the weights over lambda (high lambda = nearly clean)")
    axes[0, 0].legend(fontsize=8)
    return fig


def density_panel(m: float, s: float) -> Figure:
    """One logit-normal(m, s): its density and weight over t, uniform and lognorm(0, 1) for reference."""
    fig = Figure(figsize=(6.4, 2.6), layout="constrained")
    ax_p, ax_w = fig.subplots(1, 2)
    t = _T.numpy()
    for name, style in (("uniform", ":"), ("lognorm(0.00, 1.00)", "--")):
        _, p, w, _ = _curves(name)
        ax_p.plot(t, p, "k" + style, lw=0.8, label=name)
        ax_w.plot(t, w, "k" + style, lw=0.8)
    sampler = timesteps.TimestepSampler("lognorm", m, s)
    ax_p.plot(t, sampler.density(_T).numpy(), "C3", lw=1.6, label=sampler.name)
    ax_w.plot(t, sampler.weight(_T).numpy(), "C3", lw=1.6)
    median = float(torch.sigmoid(torch.tensor(m)))
    ax_p.axvline(median, color="C3", lw=0.6)
    ax_p.set(xlabel="t", ylabel="pi(t)", ylim=(0, 3.6), title=f"density (median t = {median:.2f})")
    ax_w.set(xlabel="t", ylabel="w_t (log)", yscale="log", ylim=(1e-3, 1e2), title="loss weight")
    ax_p.legend(fontsize=7, loc="upper left")
    return fig


def density_explorer():
    """Explorer: the logit-normal's location m and scale s against its density and weight."""
    from course.widgets import Slider, explore

    return explore(density_panel, static={"m": [-0.5, 0.0, 1.0], "s": [0.6, 1.0]},
                   m=Slider(-2.0, 2.0, 0.1, 0.0), s=Slider(0.2, 2.0, 0.05, 1.0))


# ----------------------------------------------------------------------------- the stored ablation
def ablation_figure(record: dict) -> Figure:
    """FID (log) against class accuracy for each formulation at 5 and 25 steps, seeds as points, means as labels."""
    from matplotlib.ticker import FuncFormatter

    from course.recipes.timestep_ablation import EVAL_STEPS

    table = record["table"]
    plain = FuncFormatter(lambda y, _: f"{y:g}")
    seeds = max(row["seeds"] for row in table.values())
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    for ax, steps in zip(fig.subplots(1, len(EVAL_STEPS)), EVAL_STEPS):
        for k, (f, row) in enumerate(table.items()):
            r = row[str(steps)]
            ax.errorbar(r["class_accuracy"], r["fid"], xerr=r["accuracy_spread"], yerr=r["fid_spread"], fmt="o",
                        color=f"C{k}", capsize=3, label=f)
        ax.set(xlabel="class accuracy (higher is better)", ylabel="Shapes-FID (log, lower is better)", yscale="log",
               title=f"{steps} sampling steps" + (" (bars: half the range over the seeds)" if seeds > 1 else " (one seed)"))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.legend(fontsize=7, loc="upper right")
    return fig


def per_t_figure(record: dict, names=("rf/uniform", "rf/lognorm(0.00, 1.00)", "rf/mode(1.29)", "eps/linear")) -> Figure:
    """Left: velocity MSE by t of trained models and of the best linear predictor. Right: what the network adds."""
    per_t = record["per_t"]
    t = np.array(per_t["t"])
    lin = np.array(per_t["gaussian_linear"])
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    ax_l, ax_g = fig.subplots(1, 2)
    ax_l.plot(t, lin, "k--", label="best linear predictor (Gaussian data)")
    early = per_t.get("early")
    if early:
        ax_l.plot(t, early["loss"], ":", color="C0", label=f"rf/uniform after {early['steps']} steps")
    for k, name in enumerate(names):
        if name in per_t["by_formulation"]:
            loss = np.array(per_t["by_formulation"][name])
            ax_l.plot(t, loss, color=f"C{k}", label=name)
            ax_g.plot(t, lin - loss, color=f"C{k}", label=name)
    top = 1.3
    off = [f"{n} ({v:.2f} at t = {t[-1]:.2f})" for n in names if n in per_t["by_formulation"]
           and (v := per_t["by_formulation"][n][-1]) > top]
    ax_l.set(xlabel="t (0 data, 1 noise)", ylabel="velocity MSE per element", ylim=(0, top))
    ax_l.set_title("the loss at each t (held-out latents)" + (f"\noff the axis: {', '.join(off)}" if off else ""),
                   fontsize=10)
    ax_g.axhline(0, color="k", lw=0.5)
    ax_g.set(xlabel="t", ylabel="linear MSE - model MSE", ylim=(-0.4, 0.45))
    ax_g.set_title("what the network learned beyond a linear map" + ("\n(the same curves, clipped at -0.4)" if off else ""),
                   fontsize=10)
    ax_l.legend(fontsize=7)
    return fig
