"""Speed of the course U-Net against diffusers' UNet2DConditionModel, same config and weights.

For each preset: forward time (no grad) and AdamW training-step time (forward + MSE + backward +
step) at batch 64 on 2 CPU threads, the best of interleaved repeats (the two models take turns,
and the minimum is the least disturbed by other work on a shared machine, as `timeit` advises),
and the ratio course / diffusers (< 1: the course is faster).

    python benchmarks/bench_unet.py [--repeats N] [--batch B]
"""

from __future__ import annotations

import argparse
import time

import torch

from course.nn.unet import PRESETS, UNet, diffusers_config, get_preset


def _inputs(model: UNet, batch: int, seed: int = 0):
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    side = cfg.sample_size or 4 * 2 ** (cfg.levels - 1)
    x = torch.randn(batch, cfg.in_channels, side, side, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    cond = torch.randn(batch, 8, cfg.cross_attention_dim, generator=g) if cfg.has_cross_attention else None
    return x, t, cond


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_unet(preset: str, batch: int = 64, repeats: int = 5, threads: int = 2) -> dict:
    """Time the course U-Net and diffusers' on the preset's config with identical weights.

    Args:
        preset: a name in `course.nn.unet.PRESETS`.
        batch: batch size.
        repeats: timed repeats per model (after one warm-up each); the minimum is reported.
        threads: torch CPU threads.

    Returns:
        dict with preset, params, GFLOP of a training step, the forward and training-step
        seconds of both models, and the ratios course / diffusers.
    """
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ref = UNet2DConditionModel(**diffusers_config(get_preset(preset)))
    ours = UNet.from_diffusers(ref)
    x, t, cond = _inputs(ours, batch)

    def call(model, xx):
        return ours(xx, t, cond) if model is ours else model(xx, t, encoder_hidden_states=cond).sample

    def forward(model):
        with torch.no_grad():
            call(model, x)

    opts = {id(m): torch.optim.AdamW(m.parameters(), lr=1e-4) for m in (ours, ref)}

    def step(model):
        loss = (call(model, x) - x).pow(2).mean()
        opts[id(model)].zero_grad(set_to_none=True)
        loss.backward()
        opts[id(model)].step()

    with FlopCounterMode(display=False) as counter:
        loss = call(ours, x).pow(2).mean()
        loss.backward()
    ours.zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {k: [] for k in ("fwd_course", "fwd_diffusers", "step_course", "step_diffusers")}
    for i in range(repeats + 1):  # the first round warms up
        for name, model in (("course", ours), ("diffusers", ref)) if i % 2 else (("diffusers", ref), ("course", ours)):
            model.eval()
            f = _timed(lambda: forward(model))
            model.train()
            s = _timed(lambda: step(model))
            if i:
                times[f"fwd_{name}"].append(f)
                times[f"step_{name}"].append(s)
    med = {k: min(v) for k, v in times.items()}
    return {
        "preset": preset,
        "params": sum(p.numel() for p in ours.parameters()),
        "step_gflop": counter.get_total_flops() / 1e9,
        "batch": batch,
        "forward_course_s": med["fwd_course"],
        "forward_diffusers_s": med["fwd_diffusers"],
        "forward_ratio": med["fwd_course"] / med["fwd_diffusers"],
        "step_course_s": med["step_course"],
        "step_diffusers_s": med["step_diffusers"],
        "step_ratio": med["step_course"] / med["step_diffusers"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--preset", action="append", help="preset name (repeatable); default: all")
    args = parser.parse_args()
    head = f"{'preset':<15}{'params':>9}{'GFLOP':>7}{'fwd course':>12}{'fwd diffusers':>15}{'ratio':>7}" \
           f"{'step course':>13}{'step diffusers':>16}{'ratio':>7}"
    print(f"U-Net, batch {args.batch}, 2 threads, best of {args.repeats}")
    print(head)
    for name in args.preset or list(PRESETS):
        r = bench_unet(name, batch=args.batch, repeats=args.repeats)
        print(f"{name:<15}{r['params'] / 1e6:>8.2f}M{r['step_gflop']:>7.1f}{r['forward_course_s']:>11.3f}s"
              f"{r['forward_diffusers_s']:>14.3f}s{r['forward_ratio']:>7.2f}{r['step_course_s']:>12.3f}s"
              f"{r['step_diffusers_s']:>15.3f}s{r['step_ratio']:>7.2f}")


if __name__ == "__main__":
    main()
