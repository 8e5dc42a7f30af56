"""Chapter 08: why a higher resolution needs a shifted schedule (SD3 Sec. 5.3.2), argued and measured.

- The argument: at the same t the noise on the mean of a patch of k pixels has std t / sqrt(k)
  (independent noise averages down), while the patch's signal does not. A shape covers 4x the
  pixels at 128x128 as at 64x64, so its mean is sqrt(4) = 2x clearer: the same t destroys less.
  `coarse_snr` is that amplitude ratio; `coarse_correlation` measures it on Shapes images
  (the correlation of block means of the noisy and the clean image, blocks of the same area).
- The fix: shift the schedule by alpha = sqrt(m / n) (`course.diffusion.timesteps.shift_for_resolution`,
  `course.diffusion.flow.shift_sigmas`), so that the sampler spends its steps at the same SNR.
- The measurement: vae-shapes is convolutional and encodes 128x128 Shapes images into 16x16x4
  latents (`reconstruction`, checked first); the chapter's rf/lognorm(0, 1) DiT from the ablation
  (8x8 latents) is fine-tuned at 16x16 (64 tokens; only the fixed sin-cos positions change), then
  sampled with shift 1, sqrt(m/n) = 2 and 3 at 10 and 25 Euler steps. Images are scored at 64x64
  (2x2 average pooling) against real 128x128 renders pooled the same way, so both sides have the
  same soft edges.

Shape letters: B batch, C = 4 latent channels, h = w = 16 latent side; images (B, H, W, 3) uint8.
Ref: Esser et al. 2024, Sec. 5.3.2 (Eq. 23) and Fig. 4; Hoogeboom et al. 2023 (simple diffusion, the
noise on the mean of a patch).
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import torch

from course.diffusion import timesteps
from course.recipes import dit_shapes as R
from course.recipes import timestep_ablation as A
from course.world import shapes

SIZE = 128  # the high resolution; the base is shapes.IMAGE_SIZE = 64
ALPHA = timesteps.shift_for_resolution(SIZE**2, shapes.IMAGE_SIZE**2)  # sqrt(m / n) = 2
SHIFTS = (1.0, ALPHA, 3.0)
SAMPLE_STEPS = (10, 25)
BASE = "rf/lognorm(0.00, 1.00)"  # SD3's choice, fine-tuned from the ablation's seed-0 run
NET_128 = dataclasses.replace(A.NET, input_size=SIZE // 8)  # 16x16 latents, p = 2: 64 tokens
FINETUNE_STEPS = 300
FINETUNE_BATCH = 32
BANK_128 = 4096  # one-object scenes at 128x128
EVAL_N = 256  # Shapes-FID needs at least 2 x its 128 features; the floor is measured at the same n


# ----------------------------------------------------------------------------- the argument
def coarse_snr(t, pixels: int) -> np.ndarray:
    """Amplitude SNR of a patch mean: (1 - t) / (t / sqrt(pixels)) for a unit signal; t as an array."""
    t = np.asarray(t, dtype=np.float64)
    return (1 - t) / t * np.sqrt(pixels)


def pool(images: np.ndarray, k: int) -> np.ndarray:
    """k x k average pooling of (B, H, W, C) float or uint8 images (H, W divisible by k) -> float64."""
    B, H, W, C = images.shape
    return images.astype(np.float64).reshape(B, H // k, k, W // k, k, C).mean(axis=(2, 4))  # (B, H/k, W/k, C)


def noisy(images: np.ndarray, t: float, seed: int = 0) -> np.ndarray:
    """Rectified flow's xt in pixel space: (1 - t) x0 + t eps with x0 in [-1, 1], float (B, H, W, 3)."""
    x0 = images.astype(np.float64) / 127.5 - 1
    return (1 - t) * x0 + t * np.random.default_rng(seed).standard_normal(x0.shape)


def coarse_correlation(images: np.ndarray, t: float, block_fraction: int = 8, seed: int = 0) -> float:
    """Correlation of the block means of xt and x0, blocks of 1/block_fraction of the side (same area at any size)."""
    k = images.shape[1] // block_fraction
    a, b = pool(noisy(images, t, seed), k), pool(images.astype(np.float64) / 127.5 - 1, k)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def scenes(n: int, seed: int) -> list[shapes.Scene]:
    return shapes.sample_scenes(n, seed, max_objects=1)


# ----------------------------------------------------------------------------- vae-shapes at 128
@torch.no_grad()
def encode(codec, images: np.ndarray, batch_size: int = 128) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> normalised latents (B, 4, S/8, S/8); vae-shapes is convolutional, any S = 8k."""
    x = shapes.to_tensor(images)
    return torch.cat([codec.encode(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def decode(codec, z: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    return np.concatenate([shapes.to_images(codec.decode(z[i : i + batch_size])) for i in range(0, len(z), batch_size)])


def downsample(images: np.ndarray) -> np.ndarray:
    """uint8 (B, 128, 128, 3) -> uint8 (B, 64, 64, 3) by 2x2 averaging: what the 64x64 scorers read."""
    return np.clip(np.round(pool(images, images.shape[1] // shapes.IMAGE_SIZE)), 0, 255).astype(np.uint8)


@torch.no_grad()
def reconstruction(codec, n: int = 256, seed: int = 4242) -> dict[str, dict[str, float]]:
    """vae-shapes' PSNR and ShapesEval of its reconstructions at 64x64 and at 128x128 (scored pooled to 64)."""
    from course.recipes.vae_shapes import psnr
    from course.world import metrics

    sc = shapes.sample_scenes(n, seed)
    prompts = [shapes.caption(s) for s in sc]
    out = {}
    for size in (shapes.IMAGE_SIZE, SIZE):
        x = shapes.render_batch(sc, size)
        x_hat = decode(codec, encode(codec, x))
        scored = x_hat if size == shapes.IMAGE_SIZE else downsample(x_hat)
        out[str(size)] = {"psnr_db": round(float(psnr(x_hat, x).mean()), 2),
                          "shapes_eval": round(metrics.shapes_eval(scored, prompts).full_match, 4),
                          "latent": list(encode(codec, x[:1]).shape[1:])}
    return out


# ----------------------------------------------------------------------------- data, fine-tune, evaluation
def bank_128(codec, n: int = BANK_128, seed: int = R.BANK_SEED + 128, cache=None):
    """(labels (n,), z0 (n, 4, 16, 16)): one-object scenes rendered at 128x128 and encoded, cached in `cache`."""
    from safetensors.torch import load_file, save_file

    if cache is not None and cache.is_file():
        t = load_file(str(cache))
        if len(t["z0"]) == n:
            return t["labels"], t["z0"]
    sc = scenes(n, seed)
    labels = torch.tensor([R.label_of(s) for s in sc])
    z0 = torch.cat([encode(codec, shapes.render_batch(sc[i : i + 256], SIZE)) for i in range(0, n, 256)])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({"labels": labels, "z0": z0.contiguous()}, str(cache))
    return labels, z0


def real_128(n: int, seed: int = R.EVAL_SEED) -> np.ndarray:
    """n real one-object images, classes balanced, rendered at 128x128 and pooled to 64 (the FID reference)."""
    rng = np.random.default_rng(seed)
    sc = []
    for label in R.balanced_labels(n).tolist():
        colour, shape = R.CLASSES[label]
        base = shapes.Scene((shapes.SceneObject(colour, shape, None, None),))
        sc.append(shapes.complete_scene(base, seed=int(rng.integers(2**31))))
    return downsample(shapes.render_batch(sc, SIZE))


def metrics_128(images_128: np.ndarray, labels: torch.Tensor, classifier=None) -> dict[str, float]:
    """Shapes-FID of pooled 128x128 samples against pooled real renders (with the floor at the same n), and accuracy."""
    from course.world import metrics
    from course.world.classifiers import load_shapes_classifier

    classifier = classifier or load_shapes_classifier()
    n = len(images_128)
    images = downsample(images_128)
    fid = metrics.fid(classifier, images, real_128(n))
    floor = metrics.fid(classifier, real_128(n, R.EVAL_SEED + 1), real_128(n, R.EVAL_SEED + 2))
    acc = metrics.shapes_eval(images, [R.class_prompt(i) for i in labels.tolist()]).full_match
    return {"fid": round(fid, 2), "fid_floor": round(floor, 2), "class_accuracy": round(acc, 4), "n": n}


def run(results: dict) -> None:
    """The shift experiment (resumable): reconstruction at 128, the fine-tune, the shift x steps table."""
    from course.recipes.dit_shapes import _frozen_codec

    codec, _ = _frozen_codec()
    shift = results.get("shift", {})
    if "reconstruction" not in shift:
        shift["reconstruction"] = reconstruction(codec)
        results["shift"] = shift
        A.save_results(results)
    base_key = A.run_key(BASE, 0)
    if base_key not in results:
        raise SystemExit(f"the shift experiment fine-tunes {base_key}: run the ablation first")
    t0 = time.perf_counter()
    bank = bank_128(codec, cache=A.RUN_DIR / "bank_128.safetensors")
    bank_s = time.perf_counter() - t0
    base = A.train(BASE, A.STEPS, A.RUN_DIR / A._dir_name(BASE, 0), bank=A.banks()[1]).ema  # finished: loads
    ft = A.train(BASE, FINETUNE_STEPS, A.RUN_DIR / "finetune-128", bank=bank, config=NET_128, init=base,
                 batch_size=FINETUNE_BATCH)
    if ft.interrupted:
        raise SystemExit("interrupted in the fine-tune; run the same command again to resume")
    shift["finetune"] = {"steps": FINETUNE_STEPS, "batch": FINETUNE_BATCH, "train_s": round(ft.wall_time_s),
                         "bank": BANK_128, "bank_s": round(bank_s), "from": base_key}
    model = ft.ema.eval()
    labels = R.balanced_labels(EVAL_N)
    table = shift.setdefault("table", {})
    for steps in SAMPLE_STEPS:
        for alpha in SHIFTS:
            key = f"shift={alpha:g}@{steps}"
            if key in table:
                continue
            t1 = time.perf_counter()
            z = A.sample_latents(model, BASE, labels, steps=steps, shift=alpha, batch_size=96)
            table[key] = metrics_128(decode(codec, z), labels) | {"shift": alpha, "steps": steps,
                                                                   "sample_s": round(time.perf_counter() - t1)}
            results["shift"] = shift
            A.save_results(results)
            print(key, table[key], flush=True)


# ----------------------------------------------------------------------------- the chapter's figures
def noise_figure(prompt: str = "a large red circle in the center", seed: int = 5, t_values=(0.6, 0.8, 0.9, 0.95),
                 blocks: int = 16):
    """One scene at 64 and at 128 px noised to the same t, and the block means of each (blocks x blocks, equal areas)."""
    from matplotlib.figure import Figure

    scene = shapes.complete_scene(shapes.parse(prompt), seed)
    fig = Figure(figsize=(2.1 * len(t_values), 8.8), layout="constrained")
    axes = fig.subplots(4, len(t_values))
    for r, size in enumerate((shapes.IMAGE_SIZE, SIZE)):
        image = shapes.render_batch([scene], size)
        k = size // blocks  # pixels per block side: 4 at 64 px, 8 at 128 px
        for c, t in enumerate(t_values):
            xt = noisy(image, t, seed=c)[0]
            coarse = np.kron(pool(xt[None], k)[0], np.ones((k, k, 1)))
            for j, (view, label) in enumerate(((xt, "xt"), (coarse, f"{k}x{k} means"))):
                ax = axes[2 * r + j, c]
                ax.imshow(np.clip((view + 1) / 2, 0, 1), interpolation="nearest")
                ax.set_title(f"{size} px, t = {t}: {label}", fontsize=8)
                ax.set_axis_off()
    fig.suptitle(f"'{prompt}' at the same t: block means of equal area ({blocks}x{blocks} blocks) are cleaner at 128 px",
                 fontsize=10)
    return fig


def snr_figure(n: int = 64, seed: int = 1):
    """Left: the analytic SNR of a block mean. Right: the measured correlation of block means, and the shifted t."""
    from matplotlib.figure import Figure

    from course.diffusion.flow import shift_sigmas

    t = np.linspace(0.05, 0.98, 40)
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax_a, ax_m = fig.subplots(1, 2)
    for size, colour in ((shapes.IMAGE_SIZE, "C0"), (SIZE, "C1")):
        ax_a.plot(t, coarse_snr(t, (size // 8) ** 2), color=colour, label=f"{size} px: block of {(size // 8) ** 2} px")
    ax_a.axhline(1, color="k", lw=0.5)
    ax_a.set(xlabel="t", ylabel="amplitude SNR of a block mean (log)", yscale="log",
             title="(1 - t) / (t / sqrt(pixels)): 4x the pixels, 2x the SNR")
    ax_a.legend(fontsize=8)
    sc = scenes(n, seed)
    im64, im128 = shapes.render_batch(sc, shapes.IMAGE_SIZE), shapes.render_batch(sc, SIZE)
    ax_m.plot(t, [coarse_correlation(im64, x) for x in t], "C0", label="64 px at t")
    ax_m.plot(t, [coarse_correlation(im128, x) for x in t], "C1", label="128 px at t")
    t_shift = shift_sigmas(torch.from_numpy(t), ALPHA).numpy()
    ax_m.plot(t, [coarse_correlation(im128, x) for x in t_shift], "k--",
              label=f"128 px at the shifted t (alpha = {ALPHA:g})")
    ax_m.set(xlabel="t (at 64 px)", ylabel="corr(block means of xt, of x0)",
             title=f"measured on {n} Shapes images, 8x8 blocks of equal area")
    ax_m.legend(fontsize=8)
    return fig


def shift_panel(alpha: float, size: int = SIZE, steps: int = 8, prompt: str = "a large red circle in the center"):
    """The sigma grid shifted by alpha, and a Shapes image noised to each of its sigmas (what xt is at each step).

    On track, a sampler's xt at step i is distributed as the forward process at sigma_i; so the strip
    shows at which steps the object is still undecided (pure noise) and at which it is already plain.
    """
    from matplotlib.figure import Figure

    from course.diffusion import flow

    sigmas = flow.flow_sigmas(steps, shift=alpha).numpy()
    image = shapes.render_batch([shapes.complete_scene(shapes.parse(prompt), 5)], size)
    fig = Figure(figsize=(1.15 * steps, 3.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(1.25, 1))
    ax = top.subplots()
    ax.plot(range(steps + 1), sigmas, "o-", color="C3", label=f"shift {alpha:g}")
    ax.plot(range(steps + 1), flow.flow_sigmas(steps).numpy(), "k:", lw=0.8, label="shift 1")
    ax.set(xlabel="step", ylabel="sigma", title=f"{steps} Euler steps at {size} px")
    ax.legend(fontsize=7)
    for i, ax in enumerate(bottom.subplots(1, steps)):
        ax.imshow(np.clip((noisy(image, float(sigmas[i]), seed=i)[0] + 1) / 2, 0, 1), interpolation="nearest")
        ax.set_title(f"sigma {sigmas[i]:.2f}", fontsize=7)
        ax.set_axis_off()
    return fig


def shift_explorer():
    """Explorer: the shift alpha and the resolution against the sigma schedule and xt at each step."""
    from course.widgets import Choice, Slider, explore

    return explore(shift_panel, static={"alpha": [1.0, 3.0], "size": [shapes.IMAGE_SIZE, SIZE]},
                   alpha=Slider(0.25, 6.0, 0.25, 1.0), size=Choice((shapes.IMAGE_SIZE, SIZE), SIZE))

if __name__ == "__main__":
    results = A.load_results()
    run(results)
    print(json.dumps(A.record(results)["shift"], indent=1))
