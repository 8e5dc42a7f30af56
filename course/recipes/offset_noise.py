"""Chapter 05's offset-noise study: why plain diffusion makes dark and light images too grey.

SD's scaled-linear schedule keeps alpha_bar = 0.0047 at its last step, so x_T still holds
sqrt(0.0047) = 0.068 of the image. The noise's per-channel MEAN over N pixels has std 1/sqrt(N)
(0.031 at 32x32), so the image's mean brightness survives in x_T far better than any detail: the
model learns to read it off x_T. At sampling time x_T is pure noise with mean ~0, and the samples'
brightness is pulled toward the data's average. Offset noise trains with

    eps' = eps + s * offset,   eps ~ N(0, I) of shape (B, C, H, W),   offset ~ N(0, I) of shape (B, C, 1, 1)

so the noise's mean is random too (std sqrt(1/N + s^2)) and the model must choose the brightness
itself. SDXL's last training stage used s = 0.05.

What the shipped pair shows (n = 512, DDIM-50 from the same x_T, 8000 training steps each): the
model trained with plain noise puts 95% of its samples in between dark and light (brightness std
0.14), the one trained with offset 0.05 only 5% (std 0.34; the data: 0% and 0.39). The plain
model reads the brightness off x_T's mean: `generate(..., mean_shift=+-0.06)` turns its grey
images dark or light. (At 2500 steps neither model had learned this, and both were 96% grey.)

    data        brightness_images, brightness_batch       Shapes at 32x32, half on a dark background
    recipe      UNET_CONFIG, offset_noise, make_loss, train_brightness(_offset), load_brightness
    study       generate, brightness, brightness_table, study_images, brightness_study, mean_snr
    figure      brightness_figure

Shapes: B batch, C = 3 channels, H = W = 32; images uint8 (B, H, W, 3) outside the model,
float (B, C, H, W) in [-1, 1] inside. Brightness is the mean over pixels and channels, in [0, 1].

Ref: Guttenberg 2023, "Diffusion with offset noise" (crosslabs.org); Podell et al. 2023 (SDXL).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from course.diffusion import ddpm
from course.nn.unet import PLAIN_DOWN, PLAIN_MID, PLAIN_UP, UNet, UNetConfig
from course.world import shapes
from course.zoo import Trained

RESOLUTION = 32
P_DARK = 0.5  # share of images drawn on shapes.DARK_BACKGROUND (the rest on shapes.BACKGROUND)
DARK, LIGHT = 0.25, 0.75  # brightness below DARK is "dark", above LIGHT "light", else "in between"

# ----------------------------------------------------------------------------- data


def brightness_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` Shapes scenes at 32x32, each on a dark or a light background chosen by a seeded coin.

    Returns:
        (uint8 images (n, 32, 32, 3), bool (n,) True where the background is dark).
    """
    scenes = shapes.sample_scenes(n, seed)
    dark = np.random.default_rng([seed, 5]).random(n) < P_DARK  # its own stream, not sample_scenes'
    images = np.empty((n, RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    for mask, background in ((dark, shapes.DARK_BACKGROUND), (~dark, shapes.BACKGROUND)):
        if mask.any():
            images[mask] = shapes.render_batch([s for s, m in zip(scenes, mask) if m], RESOLUTION, background)
    return images, dark


def brightness_batch(step: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """A fresh training batch for `course.train.fit`, (B, 3, 32, 32) in [-1, 1]."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return shapes.to_tensor(brightness_images(batch_size, seed)[0])  # (B, 3, 32, 32)


# ----------------------------------------------------------------------------- the recipe

# ddpm-fashion's network with three channels: four plain levels 32 -> 16 -> 8 -> 4, widths doubling
# as the resolution halves, self-attention in the 4x4 mid block so every pixel sees the whole
# image (one background per image). 0.62 M parameters (2.5 MB), 0.14 s per batch-64 step on one thread.
# Two GroupNorm groups, not ddpm-fashion's 8: with 8 groups of the 8 full-resolution channels the
# output norm is an InstanceNorm, which erases every per-channel mean of the last features, so the
# network can hardly make eps_hat's mean depend on xt's mean, the very thing offset noise asks it
# to learn (regressing a per-channel offset of the input: MSE 0.061 of 0.09 after 300 steps with
# 8 groups, 0.004 with 2). SD's GroupNorm(32) over 320+ channels has 10+ channels per group.
UNET_CONFIG = UNetConfig(
    in_channels=3, out_channels=3, sample_size=RESOLUTION,
    block_out_channels=(8, 16, 32, 64),
    down_block_types=(PLAIN_DOWN,) * 4, mid_block_type=PLAIN_MID, up_block_types=(PLAIN_UP,) * 4,
    layers_per_block=1, num_heads=1, cross_attention_dim=None, norm_num_groups=2,
    mid_block_self_attention=True,
)
SCHEDULE = ddpm.SCHEDULES["sd_scaled_linear"]  # SD's: eps-prediction, alpha_bar[999] = 0.0047, "leading" + 1
SAMPLE_STEPS = 50  # DDIM, eta = 0: timesteps 981, 961, ..., 1
TRAIN_STEPS = 8000  # ~18 min on one thread (2500 steps left the samples visibly noisy)
BATCH_SIZE = 64
SDXL_OFFSET = 0.05  # SDXL's offset-noise strength


def offset_noise(shape: tuple[int, ...], strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """eps + strength * offset: Gaussian noise whose per-image, per-channel mean is random too.

    The offset is always drawn (after eps), so strength = 0 returns exactly torch.randn(shape)
    and two runs differing only in strength see the same eps, t and data.

    Args:
        shape: (B, C, H, W).
        strength: s, the std of the offset (0 = plain noise; SDXL: 0.05).
        generator: the CPU generator to draw from.

    Returns:
        (B, C, H, W) float32; each pixel has variance 1 + s^2, the mean over H, W has variance 1/(HW) + s^2.

    Ref: Guttenberg 2023, "Diffusion with offset noise".
    """
    eps = torch.randn(shape, generator=generator)
    offset = torch.randn((*shape[:2], *(1,) * (len(shape) - 2)), generator=generator)  # (B, C, 1, 1)
    return eps + strength * offset


def make_loss(strength: float, schedule: ddpm.Schedule = SCHEDULE):
    """loss_fn(model, x0, generator) for `course.train.fit`: the eps loss with offset noise.

    Args:
        strength: the offset-noise strength s (0 = Ho et al.'s loss).
        schedule: the noise schedule.

    Returns:
        A function (model, x0 (B, C, H, W), generator) -> 0-dim loss.

    Ref: Ho et al. 2020, Eq. 14, with eps replaced by `offset_noise` (Guttenberg 2023).
    """
    alpha_bar = schedule.alpha_bar

    def loss_fn(model, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        t = torch.randint(0, schedule.num_train_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
        eps = offset_noise(tuple(x0.shape), strength, generator).to(x0.device)
        return ddpm.eps_loss(lambda xt, tt: model(xt, tt), x0, t, eps, alpha_bar)

    return loss_fn


def train_config(steps: int | None = None):
    """The TrainConfig of both models (AdamW 2e-3, 200 warm-up steps, cosine decay, EMA 0.999, seed 0)."""
    from course.train import TrainConfig, recipe_steps

    steps = recipe_steps(steps, TRAIN_STEPS)
    return TrainConfig(steps=steps, batch_size=BATCH_SIZE, lr=2e-3, warmup_steps=min(200, steps // 2),
                       schedule="cosine", ema_decay=0.999, checkpoint_every=500, log_every=100)


def _train(strength: float, steps: int | None, run_dir: Path, fresh: bool, progress: bool) -> Trained:
    from course.train import fit

    torch.manual_seed(0)
    model = UNet(UNET_CONFIG)
    result = fit(model, make_loss(strength), brightness_batch, train_config(steps), run_dir,
                 resume=not fresh, progress=progress)
    config = {"unet": asdict(UNET_CONFIG), "schedule": asdict(SCHEDULE), "offset_noise": strength,
              "resolution": RESOLUTION}
    return Trained(model=result.ema if result.ema is not None else result.model, config=config,
                   wall_time_s=result.wall_time_s, steps=result.step, interrupted=result.interrupted,
                   notes=f"EMA weights; eps loss with offset noise {strength}, SD scaled-linear schedule, "
                         f"batch {BATCH_SIZE}, one CPU thread (OMP_NUM_THREADS=1)")


def train_brightness(steps: int | None, run_dir: Path, fresh: bool, progress: bool) -> Trained:
    """`ddpm-brightness`: plain noise (offset 0)."""
    return _train(0.0, steps, run_dir, fresh, progress)


def train_brightness_offset(steps: int | None, run_dir: Path, fresh: bool, progress: bool) -> Trained:
    """`ddpm-brightness-offset`: the same run with offset noise 0.05."""
    return _train(SDXL_OFFSET, steps, run_dir, fresh, progress)


def load_brightness(tensors: dict[str, torch.Tensor], config: dict) -> UNet:
    """Rebuild either model's U-Net from its manifest config and load its (verified) weights."""
    from course import checkpoints

    unet_cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in config["unet"].items()}  # JSON lists -> tuples
    model = UNet(UNetConfig(**unet_cfg))
    checkpoints.load_into(model, tensors, source=f"ddpm-brightness (offset {config.get('offset_noise')})")
    return model.eval()


# ----------------------------------------------------------------------------- the study


@torch.no_grad()
def generate(model: nn.Module, n: int, seed: int = 0, steps: int = SAMPLE_STEPS, *, mean_shift: float = 0.0,
             schedule: ddpm.Schedule = SCHEDULE, batch_size: int = 256) -> np.ndarray:
    """`n` DDIM samples (eta = 0) from plain x_T ~ N(0, I), as SDXL samples: uint8 (n, 32, 32, 3).

    x_T comes from one CPU generator seeded with `seed`, so two models given the same seed start
    from the same noise. `mean_shift` is added to every pixel of x_T: the brightness a model that
    reads it off x_T will follow. Ref: Song et al. 2021, Eq. 12.
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        x_T = torch.randn((min(batch_size, n - start), 3, RESOLUTION, RESOLUTION), generator=generator)  # (b, C, H, W)
        x_T = x_T.to(device) + mean_shift
        x0 = ddpm.sample(lambda xt, t: model(xt, t), None, schedule, steps, "ddim", x_T=x_T)
        out.append(shapes.to_images(x0))  # (b, 32, 32, 3), clipped to [-1, 1]
    return np.concatenate(out)


def brightness(images: np.ndarray) -> np.ndarray:
    """uint8 (B, H, W, 3) -> (B,) mean brightness in [0, 1]."""
    return images.reshape(len(images), -1).mean(axis=1) / 255.0  # (B, H*W*3) -> (B,)


def brightness_stats(b: np.ndarray) -> dict[str, float]:
    """Mean, std and the shares dark (< 0.25), light (> 0.75) and in between of brightnesses b (B,)."""
    shares = {name: round(float(np.mean(x)), 4) for name, x in
              (("share_dark", b < DARK), ("share_light", b > LIGHT), ("share_between", (b >= DARK) & (b <= LIGHT)))}
    return {"mean": round(float(b.mean()), 4), "std": round(float(b.std()), 4), **shares}


def study_images(models: dict[str, nn.Module], n: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """{"data": n held-out data images, name: n samples of each model from the same x_T}, uint8 (n, 32, 32, 3)."""
    images = {"data": brightness_images(n, seed=10_000 + seed)[0]}  # seeds the training stream does not pick on purpose
    images.update({name: generate(model, n, seed) for name, model in models.items()})
    return images


def brightness_table(images: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """`brightness_stats` of every entry of `study_images`, plus n."""
    return {name: {**brightness_stats(brightness(x)), "n": len(x)} for name, x in images.items()}


def brightness_study(models: dict[str, nn.Module], n: int = 256, seed: int = 0) -> dict[str, dict[str, float]]:
    """The per-image mean-brightness distribution of the data and of each model's DDIM-50 samples.

    Args:
        models: name -> eps_theta trained with SCHEDULE, e.g. {"no offset": m0, "offset 0.05": m1}.
        n: images per row.
        seed: seeds the data draw and the shared x_T.

    Returns:
        {"data": stats, name: stats, ...} with stats from `brightness_stats` and "n".

    Ref: Guttenberg 2023, "Diffusion with offset noise".
    """
    return brightness_table(study_images(models, n, seed))


def mean_snr(schedule: ddpm.Schedule = SCHEDULE, t: int | None = None, pixels: int = RESOLUTION**2,
             strength: float = 0.0) -> float:
    """How well a per-channel image mean of 1 survives in xt: sqrt(ab_t) / (sqrt(1 - ab_t) sqrt(1/N + s^2)).

    The numerator is the mean's share of xt, the denominator the std of the noise's mean over N
    pixels with offset strength s; t defaults to T-1. This is an AMPLITUDE ratio (std over std);
    square it for a power SNR, the ab / (1 - ab) of chapter 01. Ref: Guttenberg 2023.
    """
    ab = float(schedule.alpha_bar[schedule.num_train_timesteps - 1 if t is None else t])
    return ab**0.5 / ((1 - ab) ** 0.5 * (1 / pixels + strength**2) ** 0.5)


EVAL_N = 512  # images per row of the manifest's table: 2 x 512 x 50 U-Net calls, ~30 s


def evaluate_brightness(model: nn.Module, quick: bool = False) -> dict[str, float]:
    """The manifest's metrics: the model's brightness stats at n = EVAL_N (quick: 128) and the data's."""
    table = brightness_study({"model": model}, 128 if quick else EVAL_N)
    return {**table["model"], **{f"data_{k}": v for k, v in table["data"].items() if k != "n"}}


# ----------------------------------------------------------------------------- figure


def brightness_figure(images: dict[str, np.ndarray], n_show: int = 8):
    """Histograms of per-image mean brightness (one per entry of `study_images`) and a row of samples each.

    Returns:
        a matplotlib Figure.
    """
    from matplotlib.figure import Figure

    table = brightness_table(images)
    fig = Figure(figsize=(11, 3.2 + 1.2 * len(images)), layout="constrained")
    grid = fig.add_gridspec(1 + len(images), n_show, height_ratios=[2.5] + [1] * len(images))
    ax = fig.add_subplot(grid[0, :])
    bins = np.linspace(0, 1, 41)
    for name, x in images.items():
        s = table[name]
        ax.hist(brightness(x), bins=bins, histtype="step", lw=2,
                label=f"{name}: std {s['std']:.2f}, in between {100 * s['share_between']:.0f}%")
    for edge in (DARK, LIGHT):
        ax.axvline(edge, color="k", ls=":", lw=1)
    ax.set(xlabel="per-image mean brightness", ylabel="images", xlim=(0, 1))
    ax.legend(fontsize=8, loc="upper center")
    for row, (name, x) in enumerate(images.items(), start=1):
        for i in range(min(n_show, len(x))):
            a = fig.add_subplot(grid[row, i])
            a.imshow(x[i])
            a.set_axis_off()
            if i == 0:
                a.set_title(name, loc="left", fontsize=9)
    return fig
