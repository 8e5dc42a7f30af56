"""Chapter 06's experiments: DiT's Table 4 and Fig. 8 in miniature, and learned vs fixed variance.

- `conditioning_ablation`: the four block designs (in-context, cross-attention, adaLN, adaLN-Zero)
  at the same width, depth, data and steps, two seeds each; Shapes-FID and class accuracy at
  several checkpoints (a curve, as DiT's Fig. 5) and each design's Gflops.
- `patch_ablation`: patch size p = 1, 2, 4 on the 8x8 latents at equal steps: Gflops against FID
  (DiT's Fig. 8). A ~10 px object covers about one latent pixel, so p = 2 already puts a whole
  object inside one token, and p = 4 puts four cells of the 3x3 grid into one.
- `variance_table`: the shipped `dit-shapes` sampled with DDPM at 25, 50 and 250 steps with its
  learned Sigma and with the fixed beta_tilde and beta: Improved DDPM's claim is that the learned
  variance is what lets few-step ancestral sampling work.

The ablation models are not shipped: their tables go into dit-shapes' manifest entry
(`record_in_manifest`), made by `python -m course.recipes.dit_ablations all`.
Short runs on one CPU thread each: the point is the comparison at equal compute.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from course import paths
from course.nn.dit import CONDITIONINGS, DiT, get_preset, gflops
from course.recipes import dit_shapes as R

ABLATION = get_preset("dit-shapes-ablation", num_classes=len(R.CLASSES))  # D 128, depth 4, 2 heads, p = 2: 1.3 M
ABLATION_STEPS = (500, 1000, 2000)  # checkpoints of the curve
ABLATION_BATCH = 64
ABLATION_WARMUP = 60  # fixed, so that each curve is one run resumed to its next checkpoint
SEEDS = (0, 1)
PATCH_STEPS = 1000
PATCHES = (1, 2, 4)
EVAL_N = 360  # 20 images per class
EVAL_SAMPLER = dict(steps=50, guidance=1.0)  # DiT's Table 4 reports FID without guidance
VARIANCE_STEPS = (25, 50, 250)
VARIANCES = ("learned_range", "fixed_small", "fixed_large")
VARIANCE_N = 256  # images per row (the floor at the same n); 250-step rows cost ~5 min each on a shared CPU
RESULTS = paths.RUNS_DIR / "dit-ablations" / "results.json"
COMMAND = "python -m course.recipes.dit_ablations all"
# DiT-XL/2 at 400K steps, FID-50K without guidance (Peebles & Xie 2023, Table 4)
PAPER_FID = {"adaln-zero": 19.5, "adaln": 25.2, "cross-attention": 26.1, "in-context": 35.2}


def _load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def _save(results: dict) -> None:
    """Merge `results` into the file (several runners may share it), written atomically."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    merged = _load() | results
    tmp = RESULTS.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
    os.replace(tmp, RESULTS)
    results.update(merged)


VAL_SEED = 707  # held-out one-object scenes for the denoising probes (never the training bank's seed)
PROBE_T = 300  # where the probe reads the model's x0 estimate: linear schedule, sqrt(alpha_bar) = 0.59


@torch.no_grad()
def denoising_probe(model: DiT, codec, val: tuple[torch.Tensor, torch.Tensor], n_probe: int = EVAL_N) -> dict[str, float]:
    """Two low-noise measures of a model on held-out latents, cheaper and steadier than sampling.

    val_mse: the eps error averaged over t = 0, 20, ..., 980 (fixed noise), the simple loss on unseen data.
    probe_accuracy: class accuracy of the decoded x0 estimate from x_t at t = PROBE_T, the label given:
    does the network know what to draw while the object is still half noise?
    """
    from course.diffusion import ddpm
    from course.recipes.vae_shapes import decode_latents
    from course.world import metrics

    labels, z0 = val
    g = torch.Generator().manual_seed(0)
    S = R.SCHEDULE
    errs = []
    for t in range(0, S.num_train_timesteps, 20):
        eps = torch.randn(z0.shape, generator=g)
        tt = torch.full((len(z0),), t)
        out = model(ddpm.q_sample(z0, tt, eps, S.alpha_bar), tt, labels)[:, : z0.shape[1]]
        errs.append(((out - eps) ** 2).mean().item())
    z, y = z0[:n_probe], labels[:n_probe]
    tt = torch.full((len(z),), PROBE_T)
    xt = ddpm.q_sample(z, tt, torch.randn(z.shape, generator=g), S.alpha_bar)
    x0 = ddpm.eps_to_x0(xt, model(xt, tt, y)[:, : z.shape[1]], S.alpha_bar[PROBE_T])
    report = metrics.shapes_eval(decode_latents(codec, x0), [R.class_prompt(i) for i in y.tolist()])
    return {"val_mse": round(sum(errs) / len(errs), 5), "probe_accuracy": round(report.full_match, 4)}


def _evaluate(model: DiT, codec, val) -> dict[str, float]:
    model = model.eval()
    return R.evaluate_model(model, codec, EVAL_N, **EVAL_SAMPLER) | denoising_probe(model, codec, val)


def run_curve(key: str, config, steps: tuple[int, ...], seed: int, bank, codec, results: dict, val) -> None:
    """Train `config` to each of `steps` in turn (one resumable run) and evaluate the EMA at each."""
    run_dir = paths.RUNS_DIR / "dit-ablations" / key
    for s in steps:
        if f"{key}@{s}" in results:
            continue
        t0 = time.perf_counter()
        result, _ = R.train_dit(config, s, run_dir, seed=seed, batch_size=ABLATION_BATCH, bank=bank,
                                warmup_steps=ABLATION_WARMUP)
        if result.interrupted:  # Ctrl-C or SIGTERM: the state is saved; the same command resumes
            raise SystemExit(f"interrupted in {key} at step {result.step}; run `{COMMAND}` again to resume")
        metrics = _evaluate(result.ema, codec, val)
        results[f"{key}@{s}"] = metrics | {"steps": s, "seed": seed, "train_s": round(result.wall_time_s),
                                           "gflops": round(gflops(config), 4), "segment_s": round(time.perf_counter() - t0)}
        _save(results)
        print(key, s, results[f"{key}@{s}"], flush=True)


def conditioning_ablation(bank, codec, results: dict, val, seeds: tuple[int, ...] = SEEDS) -> None:
    for seed in seeds:
        for cond in CONDITIONINGS[::-1]:  # adaLN-Zero first
            steps = ABLATION_STEPS if seed == SEEDS[0] else ABLATION_STEPS[-1:]  # the curve once, the end twice
            run_curve(f"{cond}-s{seed}", dataclasses.replace(ABLATION, conditioning=cond), steps, seed,
                      bank, codec, results, val)


def patch_ablation(bank, codec, results: dict, val) -> None:
    for p in PATCHES:
        if p == ABLATION.patch_size:
            continue  # the adaLN-Zero run of the conditioning ablation, seed 0
        run_curve(f"p{p}-s0", dataclasses.replace(ABLATION, patch_size=p), (PATCH_STEPS,), 0, bank, codec, results, val)


@torch.no_grad()
def variance_table(results: dict, n: int = VARIANCE_N) -> None:
    """Shapes-FID of the shipped dit-shapes, unguided, by DDPM steps and variance."""
    pipe = R.load()
    for steps in VARIANCE_STEPS:
        for var in VARIANCES:
            key = f"variance:{var}@{steps}:n{n}"
            if key in results:
                continue
            t0 = time.perf_counter()
            m = R.evaluate_model(pipe.model, pipe.codec, n, steps=steps, guidance=1.0, variance=var)
            results[key] = m | {"sample_s": round(time.perf_counter() - t0)}
            _save(results)
            print(key, results[key], flush=True)


# ----------------------------------------------------------------------------- tables
def conditioning_table(results: dict) -> dict[str, dict]:
    """Per design: FID and class accuracy at each checkpoint, mean and spread over seeds, and Gflops."""
    out = {}
    for cond in CONDITIONINGS:
        rows = {}
        for s in ABLATION_STEPS:
            runs = [results.get(f"{cond}-s{seed}@{s}") for seed in SEEDS]
            runs = [r for r in runs if r]
            if not runs:
                continue
            fids, accs = [r["fid"] for r in runs], [r["class_accuracy"] for r in runs]
            mses, probes = [r["val_mse"] for r in runs], [r["probe_accuracy"] for r in runs]
            rows[s] = {"fid": round(float(np.mean(fids)), 2), "fid_spread": round((max(fids) - min(fids)) / 2, 2),
                       "val_mse": round(float(np.mean(mses)), 5), "val_mse_spread": round((max(mses) - min(mses)) / 2, 5),
                       "probe_accuracy": round(float(np.mean(probes)), 3),
                       "probe_spread": round((max(probes) - min(probes)) / 2, 3),
                       "class_accuracy": round(float(np.mean(accs)), 3),
                       "accuracy_spread": round((max(accs) - min(accs)) / 2, 3), "seeds": len(runs),
                       "fid_floor": runs[0]["fid_floor"]}
        if rows:
            out[cond] = {"by_steps": rows, "gflops": round(gflops(dataclasses.replace(ABLATION, conditioning=cond)), 4),
                         "paper_fid_xl2_400k": PAPER_FID[cond]}
    return out


def ranking(table: dict[str, dict], steps: int = ABLATION_STEPS[-1]) -> list[str]:
    """Designs ordered by mean FID at `steps` (best first)."""
    have = [c for c in table if steps in table[c]["by_steps"] or str(steps) in table[c]["by_steps"]]
    return sorted(have, key=lambda c: table[c]["by_steps"].get(steps, table[c]["by_steps"].get(str(steps)))["fid"])


def patch_table(results: dict) -> dict[str, dict]:
    out = {}
    for p in PATCHES:
        key = f"p{p}-s0@{PATCH_STEPS}" if p != ABLATION.patch_size else f"adaln-zero-s0@{PATCH_STEPS}"
        if key in results:
            r = results[key]
            out[f"p={p}"] = {"tokens": (ABLATION.input_size // p) ** 2, "gflops": r["gflops"], "fid": r["fid"],
                             "val_mse": r["val_mse"], "probe_accuracy": r["probe_accuracy"],
                             "class_accuracy": r["class_accuracy"], "fid_floor": r["fid_floor"], "train_s": r["train_s"]}
    return out


def variance_summary(results: dict) -> dict[str, dict]:
    out = {}
    for steps in VARIANCE_STEPS:
        for var in VARIANCES:
            r = results.get(f"variance:{var}@{steps}:n{VARIANCE_N}")
            if r:
                out.setdefault(f"ddpm-{steps}", {})[var] = {"fid": r["fid"], "class_accuracy": r["class_accuracy"]}
                out[f"ddpm-{steps}"]["fid_floor"] = r["fid_floor"]
    return out


def record_in_manifest(results: dict) -> dict:
    """Write the three tables into dit-shapes' manifest entry (its weights and metrics unchanged)."""
    from course import checkpoints

    manifest = checkpoints.read_manifest()
    entry = manifest["dit-shapes"]
    entry["ablations"] = {"command": COMMAND, "conditioning": conditioning_table(results),
                          "conditioning_ranking_at_2000": ranking(conditioning_table(results)),
                          "patch": patch_table(results), "variance": variance_summary(results),
                          "protocol": f"{EVAL_N} images (20 per class), DDPM {EVAL_SAMPLER['steps']} steps, learned "
                                      f"sigma, no guidance; ablation DiT D={ABLATION.hidden_size}, depth "
                                      f"{ABLATION.depth}, batch {ABLATION_BATCH}, seeds {list(SEEDS)}"}
    checkpoints._atomic_write_text(paths.MANIFEST_PATH, checkpoints._dump_json(manifest))
    return entry["ablations"]


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "all"
    if what not in ("conditioning", "patch", "variance", "record", "all"):
        print("usage: python -m course.recipes.dit_ablations [conditioning [SEED ...]|patch|variance|record|all]")
        return 2
    results = _load()
    if what in ("conditioning", "patch", "all"):
        codec, _ = R._frozen_codec()
        bank = R.class_bank(codec, cache=paths.RUNS_DIR / "dit-ablations" / "class_bank.safetensors")
        val = R.class_bank(codec, n=2048, seed=VAL_SEED, cache=paths.RUNS_DIR / "dit-ablations" / "val_bank.safetensors")
        if what in ("conditioning", "all"):
            seeds = tuple(int(s) for s in argv[1:]) or SEEDS  # e.g. `conditioning 1`: one seed, in a second process
            conditioning_ablation(bank, codec, results, val, seeds)
        if what in ("patch", "all"):
            patch_ablation(bank, codec, results, val)
    if what in ("variance", "all"):
        variance_table(results)
    if what in ("record", "all"):
        print(json.dumps(record_in_manifest(results), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# ----------------------------------------------------------------------------- the chapter's figures
def conditioning_figure(table: dict[str, dict]):
    """FID, the t = 300 probe and the validation MSE against training steps per design (DiT's Fig. 5 in miniature)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = (("fid", "fid_spread", "Shapes-FID (log)"), ("probe_accuracy", "probe_spread", "class accuracy of x0 from t = 300"),
              ("val_mse", "val_mse_spread", "validation eps-MSE"))
    for cond, row in table.items():
        steps = sorted(int(s) for s in row["by_steps"])
        rows = [row["by_steps"].get(s, row["by_steps"].get(str(s))) for s in steps]
        for ax, (key, spread, _) in zip(axes, panels):
            ax.errorbar(steps, [r[key] for r in rows], yerr=[r[spread] for r in rows], marker="o", capsize=3,
                        label=f"{cond} ({row['gflops'] * 1e3:.1f} Mflops)")
    for ax, (_, _, title) in zip(axes, panels):
        ax.set(xlabel="training steps", title=title)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle("the four conditionings at equal width, depth, data and steps (bars: half the range of 2 seeds at 2000 "
                 "steps; earlier points one seed)", fontsize=9)
    return fig


def patch_figure(table: dict[str, dict]):
    """Gflops against Shapes-FID and validation MSE for p = 1, 2, 4 at equal steps (DiT's Fig. 8 in miniature)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), layout="constrained")
    for ax, key, label in zip(fig.subplots(1, 2), ("fid", "val_mse"), ("Shapes-FID (sampled, noisy)", "validation eps-MSE")):
        for name, r in table.items():
            ax.scatter(r["gflops"] * 1e3, r[key], s=40)
            ax.annotate(f"{name}: {r['tokens']} tokens", (r["gflops"] * 1e3, r[key]), textcoords="offset points",
                        xytext=(6, 4), fontsize=8)
        ax.set(xscale="log", xlabel="Mflops per forward pass (log)", ylabel=label, title=f"{label} after {PATCH_STEPS} steps")
        xs = [r["gflops"] * 1e3 for r in table.values()]
        ax.minorticks_off()
        ax.set_xticks(xs, [f"{x:.1f}" for x in xs])
    return fig


def patch_viewer(seed: int = 3):
    """One Shapes image with the token grid of p = 1, 2, 4 drawn over it (a latent pixel is 8 image pixels)."""
    from matplotlib.figure import Figure

    from course.widgets import Choice, explore
    from course.world import shapes

    image = shapes.render(shapes.sample_scenes(1, seed)[0])

    def panel(p: int):
        fig = Figure(figsize=(2.8, 3.0), layout="constrained")
        ax = fig.subplots()
        ax.imshow(image)
        step = 8 * p  # image pixels per token side
        for k in range(step, 64, step):
            ax.axhline(k - 0.5, color="k", lw=0.6)
            ax.axvline(k - 0.5, color="k", lw=0.6)
        n = (8 // p) ** 2
        g = gflops(dataclasses.replace(ABLATION, patch_size=p)) * 1e3
        ax.set_title(f"p = {p}: {n} tokens of {8 * p} px\n{g:.1f} Mflops (ablation DiT)", fontsize=8)
        ax.set_axis_off()
        return fig

    return explore(panel, static={"p": [1, 2, 4]}, p=Choice((1, 2, 4), 2))
