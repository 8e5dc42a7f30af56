"""Chapter 02: the `vae-shapes` recipe, normalised latents, and the chapter's explorers.

`course.nn.vae` builds the network (the layout of diffusers' `AutoencoderKL`); this module trains
it on Shapes and turns it into the latent space every later chapter diffuses in:

    x0 (B, 3, 64, 64) in [-1, 1]  --encode-->  z (B, 4, 8, 8), about N(0, 1) per channel
    z                             --decode-->  x0_hat (B, 3, 64, 64)

f = 8 and 4 channels, as Stable Diffusion's 512x512x3 -> 64x64x4: 12,288 values become 256,
48x fewer (the 8x8 = 64x often quoted counts pixels and forgets that 3 colours become 4
channels). The raw latents of a VAE trained with a weak KL term are not unit-scale (SD 1.x's
had std ~5.5, hence its scaling factor 0.18215 = 1 / std); `LatentCodec` stores a per-channel
shift and scale fitted on training images (`fit_codec`) so later chapters get normalised latents;
`encode_images`, `decode_latents` and `encode_scenes` turn the Shapes world's uint8 images into
those latents and back (the codec itself is `course.nn.codec`).

`ae-shapes` is the same network trained as a plain autoencoder (no KL term, no sampling), for
the chapter's autoencoder-vs-VAE comparison. Reproduce the shipped weights with
`python -m course train vae-shapes --ship` (and `ae-shapes`). `vae-shapes` trains in two phases:
the whole VAE, then the decoder alone (`finetune_decoder`) with the objects' pixels weighted more,
because small objects lost their shape; the frozen encoder keeps the latents and their
normalisation exactly phase 1's.

Shape letters: B batch, C channels, H height, W width.
Ref: Rombach et al. 2022 (LDM), Sec. 3 and 4.3.2; Kingma & Welling 2014 (VAE).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from course.nn.codec import LatentCodec, _latent, fit_channel_normalization, fit_scaling_factor, raw_latents
from course.nn.vae import VAE, VAEConfig, kl_loss
from course.world import shapes
from course.zoo import Trained


def reconstruction_loss(
    x_hat: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None = None, l1: float = 1.0, l2: float = 1.0
) -> torch.Tensor:
    """mean(weight * (l1 |x_hat - x| + l2 (x_hat - x)^2)).

    Args:
        x_hat, x: (B, C, H, W).
        weight: per-pixel weights broadcastable to (B, C, H, W), e.g. (B, 1, H, W) from
            `foreground_weight`; None weighs every pixel 1.
        l1, l2: weights of the L1 and squared-error terms (L1 keeps small colour errors costly).
    """
    if x_hat.shape != x.shape:
        raise ValueError(f"x_hat {tuple(x_hat.shape)} and x {tuple(x.shape)} must have the same shape")
    d = x_hat - x
    per_pixel = l1 * d.abs() + l2 * d.pow(2)
    return per_pixel.mean() if weight is None else (weight * per_pixel).mean()


def foreground_weight(
    x: torch.Tensor, background: torch.Tensor, weight: float = 5.0, tol: float = 0.05
) -> torch.Tensor:
    """(B, 1, H, W) map: `weight` where a pixel differs from the background colour, else 1.

    Args:
        x: (B, C, H, W) images.
        background: (C,) the background colour, in the same value range as x.
    """
    diff = (x - background.to(x).view(1, -1, 1, 1)).abs().amax(dim=1, keepdim=True)  # (B, 1, H, W)
    return torch.where(diff > tol, weight, 1.0).to(x.dtype)

# ----------------------------------------------------------------------------- the recipe

VAE_SHAPES = VAEConfig(block_out_channels=(8, 16, 32, 64), layers_per_block=1, norm_num_groups=4)
VAE_SHAPES_STEPS = 1700
AE_SHAPES = VAEConfig(**(asdict(VAE_SHAPES) | {"variational": False}))  # the same network, no KL: chapter 02's comparison
AE_SHAPES_STEPS = 500
BATCH_SIZE = 32
KL_WEIGHT = 1e-6  # SD's weight, in SD's units: the KL summed over latent values against the reconstruction summed over pixels
FOREGROUND_WEIGHT = 5.0  # shape pixels weigh 5x the background: colour errors on the objects are what ShapesEval sees
HELD_OUT_SEED = 424_242  # evaluation scenes; training never draws this seed
STATS_SEED = 31_337  # scenes whose latents fix the normalisation (training distribution, not the held-out set)
STATS_IMAGES = 2048
_BACKGROUND = torch.tensor(shapes.BACKGROUND, dtype=torch.float32) / 127.5 - 1  # (3,) in [-1, 1]


def vae_loss(model: VAE, x0: torch.Tensor, generator: torch.Generator | None = None,
             kl_weight: float = KL_WEIGHT, fg_weight: float = FOREGROUND_WEIGHT) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of the VAE (or the plain autoencoder, which has no KL term).

    loss = mean_pixels(w * (|x0_hat - x0| + (x0_hat - x0)^2)) + kl_weight * KL / (C * H * W)

    Dividing the KL (summed over the latent's values) by the number of pixel values C*H*W puts it
    in the same units as SD's loss, which sums the reconstruction error over pixels: SD's weight
    1e-6 means the same here.

    Args:
        model: a `VAE`.
        x0: (B, 3, H, W) images in [-1, 1].
        generator: draws the reparameterisation noise eps.
        kl_weight: weight of the KL term (ignored for a plain autoencoder).
        fg_weight: weight of pixels that differ from the background (1 for the background).

    Returns:
        (the scalar loss, {"rec": ..., "kl": ...} as floats for logging).

    Ref: Rombach et al. 2022, App. G (the KL-regularised autoencoder, weight 1e-6);
        Kingma & Welling 2014, Eq. 10.
    """
    out = model(x0, sample_posterior=True, generator=generator)
    weight = foreground_weight(x0, _BACKGROUND.to(x0), fg_weight) if fg_weight != 1.0 else None
    rec = reconstruction_loss(out.sample, x0, weight)
    if out.posterior is None:
        return rec, {"rec": rec.item(), "kl": 0.0}
    kl = kl_loss(out.posterior)
    return rec + kl_weight * kl / x0[0].numel(), {"rec": rec.item(), "kl": kl.item()}


def shapes_images(step: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """A fresh batch of Shapes images (B, 3, 64, 64) in [-1, 1] (never from the held-out seeds)."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    if seed in (HELD_OUT_SEED, STATS_SEED):
        seed += 1
    return shapes.to_tensor(shapes.render_batch(shapes.sample_scenes(batch_size, seed)))


def _recipe_loss(model, x0, generator):
    return vae_loss(model, x0, generator)[0]


def _train_codec(vae_config: VAEConfig, steps: int, run_dir: Path, fresh: bool, progress: bool, notes: str) -> Trained:
    """The recipe shared by `vae-shapes` and `ae-shapes`: fit, then fit the latent normalisation."""
    from course.train import TrainConfig, fit

    torch.manual_seed(0)
    model = VAE(vae_config)
    config = TrainConfig(steps=steps, batch_size=BATCH_SIZE, lr=2e-3, warmup_steps=min(100, steps // 10),
                         schedule="cosine", ema_decay=0.999, checkpoint_every=100, log_every=50)
    result = fit(model, _recipe_loss, shapes_images, config, run_dir, resume=not fresh, progress=progress)
    codec = fit_codec((result.ema if result.ema is not None else result.model).eval())
    notes = f"{steps} steps at batch {BATCH_SIZE} (~{result.wall_time_s / 60:.0f} min on one CPU thread). {notes}"
    return Trained(model=codec, config=codec.config_dict(), wall_time_s=result.wall_time_s,
                   steps=result.step, interrupted=result.interrupted, notes=notes)


DECODER_STEPS = 1000  # phase 2 of vae-shapes: decoder-only fine-tune (sized to ~20-25 min on one shared CPU thread)
DECODER_BATCH_SIZE = 32
DECODER_LR = 3e-4
DECODER_FOREGROUND_WEIGHT = 20.0  # phase 2 weighs shape pixels (and a 1-pixel ring around them) 20x: their colour and outline


def decoder_loss(model: VAE, x0: torch.Tensor, generator: torch.Generator | None = None,
                 fg_weight: float = DECODER_FOREGROUND_WEIGHT) -> torch.Tensor:
    """Phase 2's loss: the reconstruction error with the objects and their outline weighted `fg_weight`.

    loss = mean_pixels(w * (|x0_hat - x0| + (x0_hat - x0)^2)), w = fg_weight on shape pixels and the
    1-pixel ring around them (a 3x3 dilation of the mask: where a blurred outline spills), else 1.
    The encoder is frozen, so the KL term is a constant and left out. Small (10 px) objects lose
    their corners first; the ring puts their outline, not only their inside, in the loss.

    Args:
        model: a `VAE` whose encoder is frozen.
        x0: (B, 3, H, W) images in [-1, 1].
        generator: draws the posterior sample's eps.
        fg_weight: weight of the objects and their ring.

    Returns:
        the scalar loss.

    Ref: Rombach et al. 2022, App. G (the reconstruction term of the KL autoencoder).
    """
    with torch.no_grad():
        q = model.encode(x0)
        z = _latent(q, sample=True, generator=generator)  # (B, c, h, w)
        weight = foreground_weight(x0, _BACKGROUND.to(x0), fg_weight)  # (B, 1, H, W)
        weight = nn.functional.max_pool2d(weight, 3, stride=1, padding=1)  # (B, 1, H, W): dilated by one pixel
    return reconstruction_loss(model.decode(z), x0, weight)


def freeze_encoder(vae: VAE) -> VAE:
    """Stop gradients into encoder + quant_conv (in place): the latents of every image stay bit-identical."""
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    return vae


def finetune_decoder(vae: VAE, config, run_dir: Path | None, fresh: bool = False, progress: bool = False):
    """Fine-tune post_quant_conv + decoder of a trained VAE with `decoder_loss`; the encoder stays frozen.

    Args:
        vae: the trained VAE (a copy is trained; `vae` itself is untouched).
        config: the phase's `course.train.TrainConfig`.
        run_dir: where its resumable state lives (None: nowhere).

    Returns:
        the `course.train.TrainResult` (its `ema` is the copy to keep).
    """
    import copy

    from course.train import fit

    model = freeze_encoder(copy.deepcopy(vae).train())
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("encoder.", "quant_conv."))}
    result = fit(model, lambda m, x0, g: decoder_loss(m, x0, g), shapes_images, config, run_dir,
                 resume=not fresh, progress=progress)
    for net in (result.model, result.ema):
        if net is None:
            continue
        state = net.state_dict()
        changed = [k for k, v in frozen.items() if not torch.equal(state[k], v)]
        if changed:
            raise RuntimeError(f"the frozen encoder changed in {changed[:3]}: the latents of chapters 04+ would no longer match")
    return result


def train_vae_shapes(steps: int | None, run_dir: Path, fresh: bool, progress: bool) -> Trained:
    """Train `vae-shapes` (zoo train contract): phase 1 the whole VAE, phase 2 the decoder only.

    Phase 1 (in run_dir, `steps` or VAE_SHAPES_STEPS) trains everything with `vae_loss`; the latent
    normalisation is fitted on its encoder. Phase 2 (in run_dir / "decoder", DECODER_STEPS) starts
    from phase 1's EMA weights and fine-tunes only the decoder with `decoder_loss`: the encoder, and
    so every latent and the normalisation, stay exactly phase 1's.
    """
    from course.train import TrainConfig, fit, recipe_steps

    steps = recipe_steps(steps, VAE_SHAPES_STEPS)
    torch.manual_seed(0)
    config = TrainConfig(steps=steps, batch_size=BATCH_SIZE, lr=2e-3, warmup_steps=min(100, steps // 10),
                         schedule="cosine", ema_decay=0.999, checkpoint_every=100, log_every=50)
    phase1 = fit(VAE(VAE_SHAPES), _recipe_loss, shapes_images, config, run_dir, resume=not fresh, progress=progress)
    if phase1.interrupted:
        return Trained(model=phase1.ema, config={}, wall_time_s=phase1.wall_time_s, steps=phase1.step, interrupted=True)
    codec1 = fit_codec(phase1.ema.eval())  # the normalisation: a function of the encoder alone
    config2 = TrainConfig(steps=DECODER_STEPS, batch_size=DECODER_BATCH_SIZE, lr=DECODER_LR, warmup_steps=50,
                          schedule="cosine", ema_decay=0.995, checkpoint_every=100, log_every=50, seed=1)
    phase2 = finetune_decoder(codec1.vae, config2, run_dir / "decoder", fresh=fresh, progress=progress)
    wall = phase1.wall_time_s + phase2.wall_time_s
    if phase2.interrupted:
        return Trained(model=phase2.ema, config={}, wall_time_s=wall, steps=phase1.step + phase2.step, interrupted=True)
    vae = VAE(codec1.vae.config).eval()  # phase 1's config: its fitted scaling_factor
    vae.load_state_dict(phase2.ema.state_dict())
    codec = LatentCodec(vae, codec1.shift, codec1.scale).eval()
    notes = (
        f"Two phases, ~{wall / 60:.0f} min in all on one shared CPU thread. Phase 1: {phase1.step} steps at batch "
        f"{BATCH_SIZE} (~{phase1.wall_time_s / 60:.0f} min), the whole VAE, loss L1 + L2 with shape pixels weighted "
        f"{FOREGROUND_WEIGHT:g}x, KL weight 1e-6 (SD's), lr 2e-3 cosine, EMA 0.999; the latent normalisation is "
        f"fitted on its encoder. Phase 2: {phase2.step} steps at batch {DECODER_BATCH_SIZE} "
        f"(~{phase2.wall_time_s / 60:.0f} min), post_quant_conv + decoder only (encoder and quant_conv frozen, so the "
        f"latents and their normalisation are phase 1's, bit for bit), loss L1 + L2 with shape pixels and a 1-px ring "
        f"around them weighted {DECODER_FOREGROUND_WEIGHT:g}x, lr {DECODER_LR:g} cosine, EMA 0.995: small (10 px) "
        "objects lost their shape after phase 1 (ShapesEval 0.826 on reconstructions). Not bit-reproducible: "
        "phase 1 was planned for 2,600 steps and shortened (Ctrl-C, resume with fewer steps) to 2,000 at step 550 "
        "and to 1,700 at step ~1,140 when the shared CPU slowed to ~2 s/step, so its cosine schedule ran slower "
        "before those steps than a fresh 1,700-step run's; phase 2 was added afterwards, resuming from phase 1's "
        "finished state.")
    return Trained(model=codec, config=codec.config_dict(), wall_time_s=wall,
                   steps=phase1.step + phase2.step, interrupted=False, notes=notes)


def train_ae_shapes(steps: int | None, run_dir: Path, fresh: bool, progress: bool) -> Trained:
    """Train `ae-shapes`: the same network and loss without the KL term, for chapter 02's comparison."""
    from course.train import recipe_steps

    return _train_codec(AE_SHAPES, recipe_steps(steps, AE_SHAPES_STEPS), run_dir, fresh, progress, notes=(
        "A comparison model, trained for fewer steps than vae-shapes (CPU time); not used by later chapters."))


def fit_codec(vae: VAE, n: int | None = None, seed: int = STATS_SEED) -> LatentCodec:
    """Fit SD's global scaling factor and the per-channel normalisation on `n` Shapes images (default STATS_IMAGES).

    The global factor is found as SD's 0.18215 was: 1 / std of posterior samples z of a batch of
    training images, so that scaling_factor * z has unit variance. It is kept in the VAE config
    (diffusers' `scaling_factor`); the codec uses the per-channel (shift, scale).

    Ref: Rombach et al. 2022, Sec. 4.3.2 ("rescale the latent space by the component-wise std").
    """
    vae = vae.eval()
    x0 = shapes.to_tensor(shapes.render_batch(shapes.sample_scenes(STATS_IMAGES if n is None else n, seed)))  # (n, 3, 64, 64)
    z = raw_latents(vae, x0, sample=True, generator=torch.Generator().manual_seed(seed))  # (n, C, h, w)
    if vae.config.variational:
        config = VAEConfig(**(asdict(vae.config) | {"scaling_factor": round(fit_scaling_factor(z), 6)}))
        fitted = VAE(config).eval()
        fitted.load_state_dict(vae.state_dict())
        vae = fitted
    shift, scale = fit_channel_normalization(raw_latents(vae, x0))
    return LatentCodec(vae, shift, scale).eval()


@torch.no_grad()
def encode_images(codec: LatentCodec, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Shapes images -> normalised latents (B, 4, 8, 8): what chapters 04-09 diffuse.

    Args:
        images: uint8 (B, 64, 64, 3) as `shapes.render_batch` gives, or float (B, 3, 64, 64) in [-1, 1].
    """
    x0 = shapes.to_tensor(images) if isinstance(images, np.ndarray) else images
    if x0.ndim != 4 or x0.shape[1:] != (3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE):
        raise ValueError(f"expected Shapes images (B, 3, 64, 64) or uint8 (B, 64, 64, 3); got {tuple(x0.shape)}")
    device = codec.shift.device
    return torch.cat([codec.encode(x0[i : i + batch_size].to(device)) for i in range(0, len(x0), batch_size)])


@torch.no_grad()
def decode_latents(codec: LatentCodec, z: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Normalised latents (B, 4, 8, 8) -> uint8 images (B, 64, 64, 3)."""
    if z.ndim != 4 or tuple(z.shape[1:2]) != codec.latent_shape[:1]:
        raise ValueError(f"expected latents (B, {codec.latent_shape[0]}, h, w); got {tuple(z.shape)}")
    device = codec.shift.device
    return np.concatenate([shapes.to_images(codec.decode(z[i : i + batch_size].to(device))) for i in range(0, len(z), batch_size)])


def encode_scenes(codec: LatentCodec, scenes: list[shapes.Scene], batch_size: int = 256) -> torch.Tensor:
    """Render scenes and encode them: a latent data set to cache once and train on."""
    return torch.cat([encode_images(codec, shapes.render_batch(scenes[i : i + batch_size])) for i in range(0, len(scenes), batch_size)])


# ----------------------------------------------------------------------------- evaluation


def psnr(x_hat: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images (B, H, W, 3): 10 log10(255^2 / MSE)."""
    mse = ((x_hat.astype(np.float64) - x.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


@torch.no_grad()
def evaluate_vae_shapes(model: LatentCodec, quick: bool = False) -> dict[str, float]:
    """Held-out reconstruction quality: PSNR, and ShapesEval on the reconstructions (zoo contract).

    Reconstructions go through the normalised latents (encode then decode), as a latent model's
    samples do. ShapesEval scores them against the captions of the originals.
    """
    from course.world import metrics

    n = 256 if quick else 1000
    scenes = shapes.sample_scenes(n, HELD_OUT_SEED)
    images = shapes.render_batch(scenes)
    recon = decode_latents(model, encode_images(model, images))
    report = metrics.shapes_eval(recon, [shapes.caption(s) for s in scenes])
    by = report.by_objects()
    p = psnr(recon, images)
    cfg = model.vae.config
    return {
        "held_out_images": n,
        "psnr_db": round(float(p.mean()), 2),
        "psnr_db_worst_decile": round(float(np.quantile(p, 0.1)), 2),
        "shapes_eval_full_match": round(report.full_match, 4),
        "shapes_eval_full_match_one_object": round(by[1].full_match, 4) if 1 in by else math.nan,
        "shapes_eval_full_match_two_objects": round(by[2].full_match, 4) if 2 in by else math.nan,
        "scaling_factor": round(cfg.scaling_factor, 5),
        "latent_raw_std_min": round(float((1 / model.scale).min()), 3),
        "latent_raw_std_max": round(float((1 / model.scale).max()), 3),
    }


# ----------------------------------------------------------------------------- cost of pixel vs latent diffusion


def denoiser_config(space: str):
    """The same conv U-Net (widths of chapter 04's "shapes-latent") on 64x64x3 pixels or on 8x8x4 latents.

    Unconditional and without attention, so the comparison isolates what the VAE changes: the
    number of positions the denoiser runs on. (With self-attention at full resolution the pixel
    model would fare far worse: attention costs grow with the square of the positions.)
    """
    from course.nn.unet import PLAIN_DOWN, PLAIN_MID, PLAIN_UP, UNetConfig, get_preset

    widths = get_preset("shapes-latent").block_out_channels
    channels, size = {"pixels": (3, shapes.IMAGE_SIZE), "latents": (4, shapes.IMAGE_SIZE // VAE_SHAPES.downsample_factor)}[space]
    n = len(widths)
    return UNetConfig(in_channels=channels, out_channels=channels, sample_size=size, block_out_channels=widths,
                      down_block_types=(PLAIN_DOWN,) * n, mid_block_type=PLAIN_MID, up_block_types=(PLAIN_UP,) * n,
                      layers_per_block=1, num_heads=1, cross_attention_dim=None, norm_num_groups=32)


def pixel_vs_latent_cost(batch_size: int = 8, sampling_steps: int = 50, repeat: int = 2) -> dict[str, float]:
    """Measure one diffusion training step and one sampling run in pixel space and in latent space.

    A training step is a forward and backward pass of the denoiser on a batch of noisy inputs; a
    sampling run is `sampling_steps` forward passes, plus one VAE decode for the latent model
    (the encoder is not needed to sample; to train, latents are encoded once and cached).

    Returns:
        seconds per image for each, and the ratios pixel / latent.
    """
    from course.nn.unet import UNet
    from course.nn.vae import VAE as _VAE
    from course.runtime import best_time

    out = {}
    torch.manual_seed(0)
    for space in ("pixels", "latents"):
        cfg = denoiser_config(space)
        model = UNet(cfg)
        xt = torch.randn(batch_size, cfg.in_channels, cfg.sample_size, cfg.sample_size)
        t = torch.randint(0, 1000, (batch_size,))

        def train_step():
            model.zero_grad(set_to_none=True)
            (model(xt, t) - xt).pow(2).mean().backward()

        def forward():
            with torch.no_grad():
                model(xt, t)

        out[f"{space}_params"] = sum(p.numel() for p in model.parameters())
        reps = repeat if space == "pixels" else 5 * repeat  # the cheap latent model: more tries, a steadier best time
        out[f"{space}_train_ms_per_image"] = 1e3 * best_time(train_step, reps) / batch_size
        out[f"{space}_forward_ms_per_image"] = 1e3 * best_time(forward, reps) / batch_size
    decoder = _VAE(VAE_SHAPES).eval()
    z = torch.randn(batch_size, 4, 8, 8)
    with torch.no_grad():
        out["vae_decode_ms_per_image"] = 1e3 * best_time(lambda: decoder.decode(z), 5 * repeat) / batch_size
    out["pixels_sample_ms_per_image"] = sampling_steps * out["pixels_forward_ms_per_image"]
    out["latents_sample_ms_per_image"] = sampling_steps * out["latents_forward_ms_per_image"] + out["vae_decode_ms_per_image"]
    out["train_step_ratio"] = out["pixels_train_ms_per_image"] / out["latents_train_ms_per_image"]
    out["sampling_ratio"] = out["pixels_sample_ms_per_image"] / out["latents_sample_ms_per_image"]
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}


# ----------------------------------------------------------------------------- chapter 02's explorers

_CMAP_RANGE = 3.0  # normalised latents are shown on a diverging colour map over [-3, 3]


def _strip(panels: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Panels (64, 64, 3) uint8 side by side with white gaps."""
    h = panels[0].shape[0]
    sep = np.full((h, gap, 3), 255, np.uint8)
    return np.concatenate([p for panel in panels for p in (panel, sep)][:-1], axis=1)


def _heat(channel: torch.Tensor, size: int = shapes.IMAGE_SIZE) -> np.ndarray:
    """(h, w) latent channel -> (size, size, 3) uint8 on a red-white-blue map (nearest upsampling)."""
    from matplotlib import colormaps

    v = (channel.detach().float().clamp(-_CMAP_RANGE, _CMAP_RANGE) / (2 * _CMAP_RANGE) + 0.5).numpy()
    rgb = (colormaps["RdBu_r"](v)[..., :3] * 255).astype(np.uint8)  # (h, w, 3)
    k = size // channel.shape[-1]
    return rgb.repeat(k, axis=0).repeat(k, axis=1)


def channel_view(codec: LatentCodec, seed: int) -> np.ndarray:
    """One Shapes scene, its 4 normalised latent channels (8x8, blue < 0 < red) and its reconstruction."""
    images = shapes.render_batch(shapes.sample_scenes(1, seed))
    z = encode_images(codec, images)  # (1, 4, 8, 8)
    recon = decode_latents(codec, z)
    return _strip([images[0], *(_heat(z[0, c]) for c in range(z.shape[1])), recon[0]])


@torch.no_grad()
def perturb_view(codec: LatentCodec, seed: int, channel: str, noise: float) -> np.ndarray:
    """Encode a scene, add N(0, noise^2) to one latent channel (or all), decode: original | clean | perturbed."""
    images = shapes.render_batch(shapes.sample_scenes(1, seed))
    z = encode_images(codec, images)  # (1, 4, 8, 8)
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(z) if channel == "all" else (torch.arange(z.shape[1]) == int(channel)).float().view(1, -1, 1, 1)
    return _strip([images[0], decode_latents(codec, z)[0], decode_latents(codec, z + noise * mask * eps)[0]])


def latent_viewer(codec: LatentCodec):
    """Widget: pick a scene, see its latent channels (the last expression of a cell)."""
    from course.widgets import Slider, explore

    def latent_channels(seed: int) -> np.ndarray:
        return channel_view(codec, seed)

    return explore(latent_channels, static={"seed": [0, 1, 2]}, seed=Slider(0, 999, 1, 0))


def perturb_explorer(codec: LatentCodec):
    """Widget: encode -> perturb one channel or all -> decode (the last expression of a cell)."""
    from course.widgets import Choice, Slider, explore

    def encode_perturb_decode(seed: int, channel: str, noise: float) -> np.ndarray:
        return perturb_view(codec, seed, channel, noise)

    return explore(encode_perturb_decode, static={"noise": [0.0, 0.3, 1.0, 2.0]},
                   seed=Slider(0, 999, 1, 7), channel=Choice(("all", "0", "1", "2", "3")), noise=Slider(0.0, 3.0, 0.1, 0.5))
