"""Chapter 05: `sdxl-shapes`, SDXL's conditioning trained on Shapes, its ablation and its refiner.

What `course.pipelines.sdxl` builds (time ids, two text encoders, the text_time U-Net, the pipeline), trained
the way SDXL was (Podell et al. 2023, Sec. 2), at Shapes scale:

- Data as a scraped data set gives it (`shapes.sample_variants`): 40% random crops of a larger
  render (shapes cut at the border), 30% low-resolution renders upsampled (blurry), 30% plain,
  each with its true original size and crop corner. SDXL's answer is to keep every image and
  TELL the model: the six time ids (orig h, orig w, crop top, crop left, target h, target w).
- Aspect-ratio buckets (Sec. 2.3 and App. I): every batch comes from one bucket of about the same
  pixel count, 64x64, 48x80, 80x48, and rarely 32x128; the target size is the bucket.
- Two text encoders of the course's own: `clip-shapes` (D1 = 64, CLIP ViT-L's role) and
  `clip-shapes-wide` (D2 = 96, OpenCLIP bigG's role, whose projected EOS state is the pooled
  vector, P = 96): penultimate states concatenated into cond (B, 32, 160).
- A U-Net with SDXL's layout in miniature: two levels, no attention at the highest resolution
  (8x8), two transformer blocks at 4x4 and in the mid block (SDXL: 0, 2, 10).
- Offset noise 0.05 in the loss, as SDXL's last training stage (`course.recipes.offset_noise`, where
  chapter 05 measures what it does).
- v-prediction on SD's scaled-linear schedule, as `sd1-shapes` (chapter 04 measured why).

`sdxl-shapes-no-micro` is the same model, data and steps with the time ids always zero: the
model is never told the size or crop. `sdxl-shapes-refiner` (Sec. 2.5) is a second U-Net trained
only on plain images and only on the low-noise end (t < 200), applied to the base model's
latents as SDEdit (`refine`).

Shape letters: B batch, C latent channels, h, w latent size, H, W image size, T tokens, D text
width, P pooled width, N = 6 time ids.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from course.diffusion import ddpm
from course.nn.unet import CROSS_DOWN, CROSS_MID, CROSS_UP, PLAIN_DOWN, PLAIN_UP, UNet, UNetConfig
from course.pipelines.sd1 import prompt_encoder_from_clip
from course.pipelines.sdxl import N_TIME_IDS, DualPromptEncoder, SDXLTextToImage
from course.recipes.offset_noise import offset_noise
from course.recipes.sd1_shapes import SCHEDULE, _fingerprint, _unet_config, check_parts, training_caption
from course.world import shapes
from course.zoo import Trained

# ----------------------------------------------------------------------------- the recipe

TEXT_ENCODERS, VAE = ("clip-shapes", "clip-shapes-wide"), "vae-shapes"  # frozen parts, by checkpoint name
D1, D2, P = 64, 96, 96  # the two text widths and the pooled width (clip-shapes-wide's projection)
ADDITION_TIME_EMBED_DIM = 32  # sinusoid width per time id (SDXL: 256)

SDXL_SHAPES_UNET = UNetConfig(  # 5.5 M parameters, ~0.4 s per training step at batch 64 on one CPU thread
    in_channels=4, out_channels=4, sample_size=8, block_out_channels=(64, 128),
    down_block_types=(PLAIN_DOWN, CROSS_DOWN), mid_block_type=CROSS_MID, up_block_types=(CROSS_UP, PLAIN_UP),
    layers_per_block=1, transformer_layers_per_block=(1, 2),  # the 1 is unused: no attention at 8x8 (SDXL's 0)
    num_heads=(2, 4), cross_attention_dim=D1 + D2, use_linear_projection=True, norm_num_groups=32,
    addition_embed_type="text_time", addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
    projection_class_embeddings_input_dim=P + N_TIME_IDS * ADDITION_TIME_EMBED_DIM,
)
BUCKETS = ((64, 64), (48, 80), (80, 48), (32, 128))  # (H, W): 4096, 3840, 3840, 4096 pixels; latents /8
BUCKET_SHARES = (0.62, 0.17, 0.17, 0.04)  # 32x128 is rare on purpose; 128x32 is never seen
OFFSET_NOISE = 0.05  # SDXL's last stage; see `offset_noise`
CAPTION_DROPOUT = 0.1  # dropped captions become zeros (cond and pooled), as force_zeros_for_empty_prompt expects
SHORT_CAPTION_SHARE = 0.25  # short prompts among the base pair's captions, as sd1_shapes' (the paraphrases alone: 5%)
REFINER_SHORT_CAPTION_SHARE = 0.0  # the refiner (t < 200) cannot change what or how many objects there are
P_CROP, P_LOWRES = 0.4, 0.3  # shares of cropped and of upsampled training images
BANK_SIZE = 24_576  # variants encoded once by the frozen VAE, split over the buckets by their shares
BANK_SEED = 555
HELD_OUT_SEED = 424_242
BATCH_SIZE = 64
STEPS = 7000  # 5000 before the short captions; raised as sd1_shapes' were, so the other captions keep their steps
REFINER_STEPS = 2500
REFINER_T_MAX = 200  # the refiner trains on t < 200 of 1000 (SDXL's refiner: the first 200 noise levels)
REFINE_STRENGTH = 0.2  # SDEdit strength of the refiner pass: the last 20% of the chain, t < 200
EVAL_STEPS, EVAL_GUIDANCE = 25, 3.0  # also the recommended settings: `generate`'s defaults


def _frozen_parts():
    """The dual text encoder (clip-shapes + clip-shapes-wide) and vae-shapes, frozen, with their sha256."""
    from course import checkpoints
    from course.nn.codec import load_codec_from
    from course.recipes.clip_shapes import load_clip_shapes_from

    towers, sha = [], {}
    for name in TEXT_ENCODERS:
        tensors, entry = checkpoints.load_checkpoint(name)
        towers.append(prompt_encoder_from_clip(load_clip_shapes_from(tensors, entry["config"])))
        sha[name] = entry["sha256"]
    tensors, entry = checkpoints.load_checkpoint(VAE)
    codec = load_codec_from(tensors, entry["config"]).eval().requires_grad_(False)
    sha[VAE] = entry["sha256"]
    return DualPromptEncoder(*towers), codec, sha


@dataclasses.dataclass
class Bank:
    """Training variants of one bucket, encoded once: z0 (n, C, h, w), their scenes and time ids (n, 6)."""

    size: tuple[int, int]  # (H, W) of the bucket's images
    scenes: list  # the n scenes, for their captions
    z0: torch.Tensor  # (n, C, H/8, W/8) normalised latents (posterior means) of the variants
    time_ids: torch.Tensor  # (n, 6) their original size, crop corner and target size (= the bucket)


def latent_banks(codec: nn.Module, *, p_crop: float = P_CROP, p_lowres: float = P_LOWRES, n: int = BANK_SIZE,
                 seed: int = BANK_SEED, cache: Path | None = None) -> list[Bank]:
    """One `Bank` per bucket (`BUCKETS`, sizes by `BUCKET_SHARES`), cached in `cache` when given."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from course.pipelines.sdxl import time_ids

    key = f"{n}:{seed}:{p_crop}:{p_lowres}:{BUCKETS}:{_fingerprint(codec)}"
    cached = None
    if cache is not None and Path(cache).is_file():
        with safe_open(str(cache), "pt") as f:
            if (f.metadata() or {}).get("key") == key:
                cached = {k: f.get_tensor(k) for k in f.keys()}
    banks, tensors = [], {}
    for i, (size, share) in enumerate(zip(BUCKETS, BUCKET_SHARES)):
        variants = shapes.sample_variants(round(n * share), seed + i, p_crop=p_crop, p_lowres=p_lowres, size=size)
        ids = time_ids([v.original_size for v in variants], [v.crop_top_left for v in variants],
                       [size] * len(variants))  # (n_b, 6)
        if cached is not None:
            z0 = cached[f"z0_{i}"]
        else:
            images = np.stack([v.image for v in variants])  # (n_b, H, W, 3)
            with torch.no_grad():
                z0 = torch.cat([codec.encode(shapes.to_tensor(images[j : j + 256])) for j in range(0, len(images), 256)])
        tensors[f"z0_{i}"] = z0.contiguous()
        banks.append(Bank(size, [v.scene for v in variants], z0, ids))
    if cache is not None and cached is None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(cache), metadata={"key": key})
    return banks


def make_batch_fn(banks: list[Bank], text_encoder: DualPromptEncoder, micro_conditioning: bool = True,
                  caption_dropout: float = CAPTION_DROPOUT, short_share: float = SHORT_CAPTION_SHARE):
    """`batch_fn(step, B, generator) -> (z0 (B, C, h, w), cond (B, T, D), pooled (B, P), time_ids (B, 6))`.

    Each step draws one bucket (by its share; SDXL batches by bucket), B of its variants, a caption of
    each (`sd1_shapes.training_caption`: the short prompt with probability `short_share`, else a random
    paraphrase), and zeros for a `caption_dropout` share of the text conditioning
    (both cond and pooled: the unconditional model for CFG). Without micro-conditioning the time
    ids are zeros: the model is never told the size or the crop.
    """
    shares = torch.tensor([len(b.scenes) for b in banks], dtype=torch.float64)

    def batch_fn(step: int, batch_size: int, generator: torch.Generator):
        bank = banks[int(torch.multinomial(shares, 1, generator=generator))]
        idx = torch.randint(0, len(bank.scenes), (batch_size,), generator=generator)  # (B,)
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        captions = [training_caption(bank.scenes[i], rng, short_share) for i in idx.tolist()]
        cond, pooled = text_encoder(captions)  # (B, T, D), (B, P)
        keep = (torch.rand(batch_size, generator=generator) >= caption_dropout).float()  # (B,)
        ids = bank.time_ids[idx] if micro_conditioning else torch.zeros(batch_size, N_TIME_IDS)  # (B, 6)
        return bank.z0[idx], cond * keep[:, None, None], pooled * keep[:, None], ids
    return batch_fn


def sdxl_loss(unet: UNet, batch, generator: torch.Generator, schedule: ddpm.Schedule = SCHEDULE,
              offset: float = OFFSET_NOISE, t_max: int | None = None) -> torch.Tensor:
    """|| v - v_theta(xt, t, cond, added) ||^2 with offset noise; t ~ U{0 .. t_max - 1} (default T).

    Ref: Salimans & Ho 2022, Sec. 4 (v); Podell et al. 2023, Sec. 2.2 (added conditioning), Sec. 2.5 (refiner: low t).
    """
    z0, cond, pooled, ids = batch
    t_max = schedule.num_train_timesteps if t_max is None else t_max
    t = torch.randint(0, t_max, (z0.shape[0],), generator=generator).to(z0.device)  # (B,)
    eps = offset_noise(tuple(z0.shape), offset, generator).to(z0.device)  # (B, C, h, w)
    added = {"text_embeds": pooled, "time_ids": ids}
    return ddpm.v_loss(lambda xt, t_: unet(xt, t_, cond, added), z0, t, eps, schedule.alpha_bar.to(z0.device))


# ----------------------------------------------------------------------------- the assembled model


class ShapesSDXLPipeline(SDXLTextToImage):
    """`SDXLTextToImage` for the course's models; a model trained without micro-conditioning gets zero ids."""

    def __init__(self, *args, micro_conditioning: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.micro_conditioning = micro_conditioning

    @torch.no_grad()
    def conditioning(self, prompts, negative_prompts, guidance, *, size, original_size=None, crop_top_left=(0, 0),
                     target_size=None):
        if not self.micro_conditioning and (original_size is not None or target_size is not None
                                            or tuple(crop_top_left) != (0, 0)):
            raise ValueError("this model was trained without micro-conditioning: it takes no original_size, "
                             "crop_top_left or target_size (use sdxl-shapes for those)")
        cond, uncond, added, added_uncond = super().conditioning(
            prompts, negative_prompts, guidance, size=size, original_size=original_size,
            crop_top_left=crop_top_left, target_size=target_size)
        if not self.micro_conditioning:
            for a in (added, added_uncond):
                if a is not None:
                    a["time_ids"] = torch.zeros_like(a["time_ids"])  # (B, 6): what it was trained with
        return cond, uncond, added, added_uncond


class SDXLShapes(nn.Module):
    """The trained U-Net with its frozen dual text encoder and codec."""

    def __init__(self, unet: UNet, text_encoder: DualPromptEncoder, codec: nn.Module, micro_conditioning: bool = True):
        super().__init__()
        self.unet, self.text_encoder, self.codec = unet, text_encoder, codec
        self.micro_conditioning = micro_conditioning

    def pipeline(self, steps: int | None = None, guidance: float | None = None) -> ShapesSDXLPipeline:
        """The pipeline; its defaults are the recommended EVAL_STEPS and EVAL_GUIDANCE unless given."""
        pipe = ShapesSDXLPipeline(self.unet.eval(), self.text_encoder, self.codec, SCHEDULE, shapes.IMAGE_SIZE,
                                  force_zeros_for_empty_prompt=True, micro_conditioning=self.micro_conditioning)
        return pipe.set_defaults(EVAL_STEPS if steps is None else steps, EVAL_GUIDANCE if guidance is None else guidance)


# ----------------------------------------------------------------------------- training (zoo contract)


def _train(name: str, steps: int, run_dir: Path, fresh: bool, progress: bool, *, micro: bool, plain: bool,
           t_max: int | None, short_share: float = SHORT_CAPTION_SHARE) -> Trained:
    from course.train import TrainConfig, fit

    torch.manual_seed(0)
    text_encoder, codec, parts = _frozen_parts()
    t0 = time.perf_counter()
    p_crop, p_lowres = (0.0, 0.0) if plain else (P_CROP, P_LOWRES)
    banks = latent_banks(codec, p_crop=p_crop, p_lowres=p_lowres, cache=Path(run_dir) / "latent_banks.safetensors")
    bank_s = time.perf_counter() - t0
    unet = UNet(SDXL_SHAPES_UNET)
    config = TrainConfig(steps=steps, batch_size=BATCH_SIZE, lr=5e-4, warmup_steps=min(200, steps // 10),
                         schedule="cosine", ema_decay=0.999, checkpoint_every=250, log_every=50)
    loss = lambda m, b, g: sdxl_loss(m, b, g, t_max=t_max)  # noqa: E731
    result = fit(unet, loss, make_batch_fn(banks, text_encoder, micro, short_share=short_share), config, run_dir,
                 resume=not fresh, progress=progress)
    n = sum(len(b.scenes) for b in banks)
    notes = (f"{name}: {result.step} steps at batch {BATCH_SIZE} (~{result.wall_time_s / 60:.0f} min on "
             f"{torch.get_num_threads()} CPU thread(s)), {short_share:.0%} of the kept captions short prompts; "
             f"bank of {n} {'plain' if plain else 'cropped/upsampled/plain'} variants in {len(BUCKETS)} buckets "
             f"encoded in {bank_s:.0f} s; frozen {', '.join(TEXT_ENCODERS)} and {VAE}.")
    cfg = {"unet": asdict(SDXL_SHAPES_UNET), "schedule": asdict(SCHEDULE), "parts": parts,
           "micro_conditioning": micro, "offset_noise": OFFSET_NOISE, "buckets": [list(b) for b in BUCKETS],
           "bucket_shares": list(BUCKET_SHARES), "caption_dropout": CAPTION_DROPOUT, "short_caption_share": short_share,
           "p_crop": p_crop, "p_lowres": p_lowres, "t_max": SCHEDULE.num_train_timesteps if t_max is None else t_max,
           "sample_steps": EVAL_STEPS, "guidance": EVAL_GUIDANCE}
    return Trained(model=(result.ema if result.ema is not None else result.model).eval(), config=cfg,
                   wall_time_s=result.wall_time_s, steps=result.step, interrupted=result.interrupted, notes=notes)


def train_sdxl_shapes(steps, run_dir, fresh, progress) -> Trained:
    """`sdxl-shapes`: micro-conditioned, on cropped, upsampled and plain variants in all buckets."""
    from course.train import recipe_steps

    return _train("sdxl-shapes", recipe_steps(steps, STEPS), run_dir, fresh, progress, micro=True, plain=False, t_max=None)


def train_sdxl_shapes_no_micro(steps, run_dir, fresh, progress) -> Trained:
    """`sdxl-shapes-no-micro`: the same data and steps, time ids always zero (the ablation)."""
    from course.train import recipe_steps

    return _train("sdxl-shapes-no-micro", recipe_steps(steps, STEPS), run_dir, fresh, progress, micro=False, plain=False, t_max=None)


def train_sdxl_shapes_refiner(steps, run_dir, fresh, progress) -> Trained:
    """`sdxl-shapes-refiner`: plain images only, t < REFINER_T_MAX only."""
    from course.train import recipe_steps

    return _train("sdxl-shapes-refiner", recipe_steps(steps, REFINER_STEPS), run_dir, fresh, progress, micro=True,
                  plain=True, t_max=REFINER_T_MAX, short_share=REFINER_SHORT_CAPTION_SHARE)


def load_sdxl_shapes_from(tensors: dict[str, torch.Tensor], config: dict) -> SDXLShapes:
    """Rebuild a model of this module from its U-Net tensors and config, with the shipped frozen parts.

    Raises:
        ValueError: a shipped text encoder or VAE is not the one this U-Net was trained with.
    """
    from course import checkpoints

    name = ("sdxl-shapes-refiner" if config.get("t_max", 1000) < SCHEDULE.num_train_timesteps
            else "sdxl-shapes" if config.get("micro_conditioning", True) else "sdxl-shapes-no-micro")
    unet = UNet(_unet_config(config["unet"]))
    checkpoints.load_into(unet, tensors, source=name)
    text_encoder, codec, parts = _frozen_parts()
    check_parts(name, config.get("parts", {}), parts)
    return SDXLShapes(unet.eval(), text_encoder, codec, bool(config.get("micro_conditioning", True)))


def sdxl_shapes_pipeline(model: SDXLShapes, config: dict) -> ShapesSDXLPipeline:
    """The zoo's pipeline hook: `course.pipelines.base.load("sdxl-shapes").generate(prompts, ...)`.

    Its default steps and guidance are the config's recommended ones ("sample_steps", "guidance").
    """
    return model.pipeline(config.get("sample_steps", EVAL_STEPS), config.get("guidance", EVAL_GUIDANCE))


def load(name: str = "sdxl-shapes") -> SDXLShapes:
    """A shipped model of this chapter by name (hash-verified)."""
    from course import checkpoints

    tensors, entry = checkpoints.load_checkpoint(name)
    return load_sdxl_shapes_from(tensors, entry["config"])


# ----------------------------------------------------------------------------- the refiner


@torch.no_grad()
def refine(base: ShapesSDXLPipeline, refiner: ShapesSDXLPipeline, prompts: list[str], *, steps: int = EVAL_STEPS,
           guidance: float = EVAL_GUIDANCE, seed: int = 0, strength: float = REFINE_STRENGTH,
           size: tuple[int, int] | None = None, **conditioning) -> tuple[np.ndarray, np.ndarray]:
    """Base model, then the refiner as SDEdit on its latents: (base images, refined images), uint8 (B, H, W, 3).

    The refiner re-noises the base z0 to t ~ strength * T and runs the last int(steps * strength)
    DDIM steps itself (Podell et al. 2023, Sec. 2.5; Meng et al. 2022, SDEdit).
    """
    if not 0.0 < strength <= REFINER_T_MAX / SCHEDULE.num_train_timesteps:
        raise ValueError(f"strength must be in (0, {REFINER_T_MAX / SCHEDULE.num_train_timesteps}]: the refiner was "
                         f"trained on t < {REFINER_T_MAX} only; got {strength}")
    common = dict(steps=steps, guidance=guidance, seed=seed, size=size, **conditioning)
    z0 = base.sample_latents(prompts, **common)  # (B, C, h, w)
    z_ref = refiner.sample_latents(prompts, init_latents=z0, strength=strength, **common)  # (B, C, h, w)
    return shapes.to_images(base.codec.decode(z0)), shapes.to_images(refiner.codec.decode(z_ref))


# ----------------------------------------------------------------------------- measuring (chapter 05)


def held_out_prompts(n: int) -> list[str]:
    return [shapes.caption(s) for s in shapes.sample_scenes(n, HELD_OUT_SEED)]


def _generate(pipe, prompts, batch_size: int = 128, **kwargs) -> np.ndarray:
    return np.concatenate([pipe.generate(prompts[i : i + batch_size], seed=i, **kwargs)
                           for i in range(0, len(prompts), batch_size)])


def image_report(images: np.ndarray, prompts: list[str]) -> dict[str, float]:
    """The chapter's measures of 64x64 images: cut-off share, sharpness, ShapesEval, Shapes-FID vs plain renders."""
    from course.world import metrics

    report = metrics.shapes_eval(images, prompts)
    by = report.by_objects()
    return {"cut_off_share": round(metrics.cut_off_share(images), 4),
            "sharpness": round(float(metrics.sharpness(images).mean()), 5),
            "shapes_eval_full_match": round(report.full_match, 4),
            "shapes_eval_full_match_one_object": round(by[1].full_match, 4) if 1 in by else math.nan,
            "shapes_eval_full_match_two_objects": round(by[2].full_match, 4) if 2 in by else math.nan,
            "shapes_fid": round(metrics.shapes_fid(images), 2)}


def _assembled(model: nn.Module, micro: bool = True) -> SDXLShapes:
    if isinstance(model, SDXLShapes):
        return model
    if isinstance(model, UNet):  # what the training recipe returns
        text_encoder, codec, _ = _frozen_parts()
        return SDXLShapes(model.eval(), text_encoder, codec, micro)
    raise TypeError(f"expected an SDXLShapes or its UNet, got {type(model).__name__}")


@torch.no_grad()
def evaluate_sdxl_shapes(model: nn.Module, quick: bool = False) -> dict[str, float]:
    """At the default conditioning (original = target = 64x64, crop (0, 0)), guidance 3, 25 DDIM steps:
    `image_report` of one image per held-out prompt (512; quick: 256 with 10 steps), and the same
    measures of 512 real renders as the reference; unless quick, `prompt_style_metrics` (256 scenes)."""
    n, steps = (256, 10) if quick else (512, EVAL_STEPS)
    prompts = held_out_prompts(n)
    images = _generate(_assembled(model).pipeline(), prompts, steps=steps, guidance=EVAL_GUIDANCE)
    out = {"held_out_prompts": n, "ddim_steps": steps, "guidance": EVAL_GUIDANCE, **image_report(images, prompts)}
    return out if quick else out | prompt_style_metrics(model)


@torch.no_grad()
def evaluate_sdxl_shapes_no_micro(model: nn.Module, quick: bool = False) -> dict[str, float]:
    """`evaluate_sdxl_shapes` for the model trained without micro-conditioning."""
    return evaluate_sdxl_shapes(_assembled(model, micro=False), quick)


@torch.no_grad()
def evaluate_sdxl_shapes_refiner(model: nn.Module, quick: bool = False) -> dict[str, float]:
    """The shipped sdxl-shapes without and with this refiner (strength 0.2), and the time each costs."""
    n, steps = (256, 10) if quick else (512, EVAL_STEPS)
    prompts = held_out_prompts(n)
    base, refiner = load("sdxl-shapes").pipeline(), _assembled(model).pipeline()
    t0 = time.perf_counter()
    base_images = _generate(base, prompts, steps=steps, guidance=EVAL_GUIDANCE)
    base_s = time.perf_counter() - t0
    pairs = [refine(base, refiner, prompts[i : i + 128], steps=steps, guidance=EVAL_GUIDANCE, seed=i)
             for i in range(0, n, 128)]
    refined = np.concatenate([p[1] for p in pairs])
    total_s = time.perf_counter() - t0 - base_s
    out = {"held_out_prompts": n, "ddim_steps": steps, "guidance": EVAL_GUIDANCE, "strength": REFINE_STRENGTH,
           "base_s_per_image": round(base_s / n, 5), "base_plus_refiner_s_per_image": round(total_s / n, 5)}
    out |= {f"base_{k}": v for k, v in image_report(base_images, prompts).items()}
    out |= {f"refined_{k}": v for k, v in image_report(refined, prompts).items()}
    if not quick:  # the three prompt styles, each image also refined: "base_style_..." and "refined_style_..."
        styles = prompt_style_metrics(load("sdxl-shapes"), refiner=model)
        out |= {k if k.startswith("refined_") else f"base_{k}": v for k, v in styles.items()}
    return out


# ----------------------------------------------------------------------------- figures and widgets (chapter 05)


def _grid(rows: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Rows of uint8 images (n, H, W, 3) -> one uint8 image with white gaps."""
    from course.recipes.vae_shapes import _strip

    strips = [_strip(list(r), gap) for r in rows]
    pad = np.full((gap, strips[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([x for s in strips for x in (s, pad)][:-1], axis=0)


@torch.no_grad()
def conditioning_sweep(pipe: ShapesSDXLPipeline, prompt: str, *, originals=(16, 32, 64, 128),
                       crops=((0, 0), (16, 16), (32, 32)), seed: int = 0, steps: int = 20,
                       guidance: float = EVAL_GUIDANCE) -> np.ndarray:
    """SDXL's Fig. 3 and 4 in miniature: one prompt and seed, rows of crop corners, columns of original sizes.

    Returns:
        uint8 (len(crops) * 64 + gaps, len(originals) * 64 + gaps, 3).
    """
    n = len(originals)
    rows = [pipe.generate([prompt] * n, steps=steps, guidance=guidance, seed=seed,
                          latents=torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(seed)).expand(n, -1, -1, -1),
                          original_size=[(o, o) for o in originals], crop_top_left=[c] * n) for c in crops]
    return _grid(rows)


def conditioning_explorer(pipe: ShapesSDXLPipeline, prompt: str = "a large green circle in the center"):
    """Sliders for the original size and the crop corner on one seed (static: a sweep of the crop)."""
    from course.widgets import Choice, Slider, explore

    def panel(original: int, crop_top: int, crop_left: int, seed: int) -> np.ndarray:
        return pipe.generate([prompt], steps=20, guidance=EVAL_GUIDANCE, seed=seed, original_size=(original, original),
                             crop_top_left=(crop_top, crop_left))[0]

    return explore(panel, static={"crop_top": [0, 24, 48], "original": [64, 128]},
                   original=Slider(16, 128, 8, 64), crop_top=Slider(0, 64, 4, 0), crop_left=Slider(0, 64, 4, 0),
                   seed=Choice((0, 1, 2, 3), 1))


def refiner_explorer(base: ShapesSDXLPipeline, refiner: ShapesSDXLPipeline,
                     prompts: tuple[str, ...] = ("a small blue triangle in the top left",
                                                 "a green square to the left of a red circle")):
    """Base vs refined on one prompt and seed; the refiner's strength as a slider (static: three strengths)."""
    from course.widgets import Choice, Slider, explore

    def panel(prompt: str, strength: float, seed: int) -> np.ndarray:
        b, r = refine(base, refiner, [prompt], steps=EVAL_STEPS, seed=seed, strength=strength)
        return _grid([np.stack([b[0], r[0]])])

    return explore(panel, static={"strength": [0.08, 0.12, 0.2]}, prompt=Choice(prompts),
                   strength=Slider(0.04, 0.2, 0.04, 0.2), seed=Choice((0, 1, 2, 3)))


@torch.no_grad()
def crop_ablation(n: int = 128, steps: int = 15, seed: int = 0) -> dict[str, dict[str, float]]:
    """Cut-off share and sharpness: real plain renders, the training mix, sdxl-shapes at crop (0, 0) and the ablation.

    A small live version of the manifest's numbers (n prompts, `steps` DDIM steps, guidance 3).
    """
    from course.world import metrics

    prompts = held_out_prompts(n)
    scenes = shapes.sample_scenes(n, HELD_OUT_SEED)
    sets = {"real, plain": shapes.render_batch(scenes),
            "real, training mix": np.stack([v.image for v in shapes.sample_variants(n, HELD_OUT_SEED)])}
    for name in ("sdxl-shapes", "sdxl-shapes-no-micro"):
        sets[name] = _generate(load(name).pipeline(), prompts, steps=steps, guidance=EVAL_GUIDANCE)
    return {k: {"cut_off_share": metrics.cut_off_share(v), "sharpness": float(metrics.sharpness(v).mean())}
            for k, v in sets.items()}


@torch.no_grad()
def prompt_style_metrics(model: nn.Module, n: int = 256, *, refiner: nn.Module | None = None, steps: int = EVAL_STEPS,
                         guidance: float = EVAL_GUIDANCE, strength: float = REFINE_STRENGTH,
                         batch_size: int = 128) -> dict[str, float]:
    """ShapesEval per prompt style (canonical, paraphrase, short) on the same n held-out scenes, per attribute.

    With `refiner` (an SDXLShapes, e.g. `load("sdxl-shapes-refiner")`), each image is also refined
    (`refine`, same seed) and scored: keys "refined_style_..." beside the base model's "style_...".

    Returns:
        `course.world.metrics.style_table` keys and the settings.
    """
    from course.world import metrics

    base = _assembled(model).pipeline()
    ref = _assembled(refiner).pipeline() if refiner is not None else None
    scenes = shapes.sample_scenes(n, HELD_OUT_SEED)
    out: dict[str, float] = {"style_held_out_prompts": n, "style_ddim_steps": steps, "style_guidance": guidance}
    base_reports, refined_reports = {}, {}
    for style in metrics.PROMPT_STYLES:
        prompts = metrics.style_prompts(scenes, style)
        base_images, refined_images = [], []
        for i in range(0, n, batch_size):
            chunk = prompts[i : i + batch_size]
            if ref is None:
                base_images.append(base.generate(chunk, steps=steps, guidance=guidance, seed=i))
            else:
                b, r = refine(base, ref, chunk, steps=steps, guidance=guidance, seed=i, strength=strength)
                base_images.append(b)
                refined_images.append(r)
        base_reports[style] = metrics.shapes_eval(np.concatenate(base_images), prompts)
        if ref is not None:
            refined_reports[style] = metrics.shapes_eval(np.concatenate(refined_images), prompts)
    out |= metrics.style_table(base_reports)
    if ref is not None:
        out |= {"style_refine_strength": strength} | metrics.style_table(refined_reports, prefix="refined_")
    return out
