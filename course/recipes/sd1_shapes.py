"""Chapter 04: a mini Stable Diffusion 1.x on Shapes (`sd1-shapes`): its recipe, evaluation and pipeline.

Stable Diffusion 1.x is three frozen-or-trained parts and a sampler (Rombach et al. 2022, Sec. 3.3):

    prompt --CLIP tokenizer--> ids (B, T) --CLIP text encoder--> cond (B, T, D)   (last hidden state)
    noise (B, 4, h, w) --U-Net(xt, t, cond), guided DDIM--> z0 --VAE decoder--> image (B, 3, 8h, 8w)

`sd1-shapes` is the same recipe at Shapes scale: the U-Net of preset "shapes-latent" (cross-
attention width 64 = the text width of `clip-shapes`), the frozen text tower of `clip-shapes`
(per-token states, 32 tokens instead of 77 x 768), and the frozen `vae-shapes` (64x64x3 <-> 8x8x4,
per-channel normalised latents, which play the role of SD's scaling factor 0.18215). Only the
U-Net trains, on SD's scaled-linear schedule (beta 0.00085 -> 0.012, T = 1000), with
v-prediction (Salimans & Ho 2022; SD 2.x's "768-v" models) rather than SD 1.x's eps-prediction:
in a measured pilot (1500 steps, same U-Net and data) v scored 0.35 full match on one-object
prompts where eps scored 0.10 (eps weights the x0 error by SNR, which is ~0.005 at the noisiest
steps where the layout is decided; v weights it by SNR + 1). The captions are the world's paraphrases,
with a quarter of them replaced by the short prompt a person types first ("a red circle"; see
SHORT_CAPTION_SHARE and `course.recipes.short_prompts` for why); 10% of the captions are replaced by the
empty prompt, so that one network learns both the conditional and the unconditional model that
classifier-free guidance needs; EMA of the weights.

The shipped checkpoint holds the U-Net only; its config names the text encoder and VAE
checkpoints with their sha256, and loading refuses parts that changed since.

The prompt encoder and the loader of real SD 1.x / 2.x folders are in `course.pipelines.sd1`.

Shape letters: B batch, C latent channels, h, w latent size, T tokens, D text width.
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
from course.nn.unet import UNet, UNetConfig, get_preset
from course.pipelines.base import TextToImage
from course.pipelines.sd1 import PromptEncoder, prompt_encoder_from_clip
from course.world import shapes
from course.zoo import Trained


class SD1Shapes(nn.Module):
    """The assembled sd1-shapes: the trained U-Net and the frozen text encoder and codec."""

    def __init__(self, unet: UNet, text_encoder: PromptEncoder, codec: nn.Module, schedule: ddpm.Schedule):
        super().__init__()
        if unet.config.cross_attention_dim != text_encoder.width:
            raise ValueError(f"the U-Net's cross_attention_dim {unet.config.cross_attention_dim} must equal the text "
                             f"width {text_encoder.width}")
        self.unet, self.text_encoder, self.codec, self.schedule = unet, text_encoder, codec, schedule

    def pipeline(self, steps: int | None = None, guidance: float | None = None) -> TextToImage:
        """The TextToImage pipeline; its defaults are the recommended SAMPLE_STEPS and GUIDANCE unless given."""
        pipe = TextToImage(self.unet.eval(), self.text_encoder, self.codec, self.schedule, image_size=shapes.IMAGE_SIZE)
        return pipe.set_defaults(SAMPLE_STEPS if steps is None else steps, GUIDANCE if guidance is None else guidance)


# ----------------------------------------------------------------------------- the recipe

SD1_SHAPES_UNET = get_preset("shapes-latent")  # 3.2 M parameters; cross_attention_dim 64 = clip-shapes' text width
# SD 1.x's scaled-linear betas (T = 1000, DDIM "leading" + offset 1), read as v-prediction as SD 2.x does
SCHEDULE = dataclasses.replace(ddpm.SCHEDULES["sd_scaled_linear"], prediction_type="v_prediction")
SD1_SHAPES_STEPS = 12_000  # 72 min at ~0.36 s/step (batch 64, one thread beside another training): the targets need it
BATCH_SIZE = 64
CAPTION_DROPOUT = 0.1  # share of captions replaced by "" during training: the unconditional model for CFG
# Share of the kept captions replaced by the short prompt (colour and shape only, "a red circle"). The world's
# paraphrases alone are 5% short, and the first sd1-shapes, trained on them (9000 steps), followed short prompts
# worst: one-object full match 0.67 against 0.86 canonical, mostly by drawing a second object, already at w = 1
# (`course.recipes.short_prompts`). At 9000 steps a 0.25 share traded canonical for short (one object 0.80 and
# 0.79); with 12,000 steps, so that the other captions keep their 9000 steps' worth, it gains both (w = 3, 25
# DDIM steps, 256 held-out scenes): canonical one / two objects 0.93 / 0.19, paraphrase 0.86 / 0.14, short
# 0.82 / 0.14 (first model: 0.86 / 0.16, 0.81 / 0.10, 0.67 / 0.02).
SHORT_CAPTION_SHARE = 0.25
BANK_SIZE = 32_768  # scenes whose latents are encoded once by the frozen VAE and reused
BANK_SEED = 777  # the bank's scenes; never the held-out seed
HELD_OUT_SEED = 424_242  # evaluation prompts (the scenes of `course.recipes.vae_shapes`'s held-out set)
EVAL_STEPS = 25  # DDIM steps of the evaluation (≤ 50; 25 keeps the full evaluation near 3 min on one thread)
EVAL_GUIDANCES = (1.0, 3.0, 5.0, 7.5)
# The recommended settings, `generate`'s defaults: the best scale of the shipped evaluation (w = 3: full match
# 0.54 against 0.45 / 0.41 / 0.26 at w = 1 / 5 / 7.5, 25 DDIM steps) at the evaluation's steps
SAMPLE_STEPS, GUIDANCE = EVAL_STEPS, 3.0
TEXT_ENCODER, VAE = "clip-shapes", "vae-shapes"  # the frozen parts, by checkpoint name


def latent_bank(codec: nn.Module, n: int = BANK_SIZE, seed: int = BANK_SEED, cache: Path | None = None,
                max_objects: int = 2):
    """(scenes, z0 (n, C, h, w)): n Shapes scenes (up to `max_objects` each) and their normalised latents.

    Encoding once and reusing the latents moves the VAE encoder out of the training step; with
    `cache` the latents are stored there and reused by a resumed run (keyed by n, seed and a
    fingerprint of the codec's weights).
    """
    from safetensors.torch import load_file, save_file

    from course.recipes.vae_shapes import encode_scenes

    scenes = shapes.sample_scenes(n, seed, max_objects=max_objects)
    key = f"{n}:{seed}:{_fingerprint(codec)}" + ("" if max_objects == 2 else f":max_objects={max_objects}")
    if cache is not None and Path(cache).is_file():
        from safetensors import safe_open

        with safe_open(str(cache), "pt") as f:
            if (f.metadata() or {}).get("key") == key:
                return scenes, load_file(str(cache))["z0"]
    z0 = encode_scenes(codec, scenes)  # (n, C, h, w)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        save_file({"z0": z0.contiguous()}, str(cache), metadata={"key": key})
    return scenes, z0


def _fingerprint(module: nn.Module) -> str:
    tensors = [*module.state_dict().values(), *module.buffers()]  # buffers too: LatentCodec's shift/scale are not saved
    total = sum(float(p.double().abs().sum()) for p in tensors if p.is_floating_point())
    return f"{total:.10e}"


def training_caption(scene: shapes.Scene, rng: np.random.Generator, short_share: float = SHORT_CAPTION_SHARE) -> str:
    """One training caption: the short prompt (colour and shape only) with probability `short_share`, else a
    random paraphrase of the world's caption. The paraphrases alone drop every size and position in 5% of
    the captions only, which is why a model trained on them follows the prompts people type first worst."""
    if short_share > 0 and rng.random() < short_share:  # no draw at 0: the shipped recipe's random stream
        return shapes.short_caption(scene)
    return shapes.caption(scene, rng)


def make_batch_fn(scenes: list[shapes.Scene], z0: torch.Tensor, text_encoder: PromptEncoder,
                  caption_dropout: float = CAPTION_DROPOUT, short_share: float = SHORT_CAPTION_SHARE):
    """The recipe's `batch_fn(step, batch_size, generator) -> (z0 (B, C, h, w), cond (B, T, D))`.

    Each step draws B bank entries, a caption of each (`training_caption`: a short prompt with
    probability `short_share`, else a random paraphrase), and replaces a `caption_dropout` share of
    the captions by "" (Ho & Salimans 2022, Algorithm 1: p_uncond).
    """
    def batch_fn(step: int, batch_size: int, generator: torch.Generator):
        idx = torch.randint(0, len(scenes), (batch_size,), generator=generator)  # (B,)
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        drop = torch.rand(batch_size, generator=generator) < caption_dropout  # (B,)
        captions = ["" if d else training_caption(scenes[i], rng, short_share) for i, d in zip(idx.tolist(), drop.tolist())]
        return z0[idx], text_encoder(captions)  # (B, C, h, w), (B, T, D)
    return batch_fn


def sd1_loss(unet: UNet, batch, generator: torch.Generator, schedule: ddpm.Schedule = SCHEDULE) -> torch.Tensor:
    """The diffusion loss on latents: t ~ U{0 .. T-1}, eps ~ N(0, I), xt = q_sample(z0, t, eps), then
    || v - v_theta(xt, t, cond) ||^2 (schedule.prediction_type "v_prediction") or
    || eps - eps_theta(xt, t, cond) ||^2 ("epsilon", SD 1.x).

    Ref: Ho et al. 2020, Eq. 14; Salimans & Ho 2022, Sec. 4 (v); Rombach et al. 2022, Eq. 2 (on latents, with cond).
    """
    z0, cond = batch
    t = torch.randint(0, schedule.num_train_timesteps, (z0.shape[0],), generator=generator).to(z0.device)  # (B,)
    eps = torch.randn(z0.shape, generator=generator).to(z0.device)  # (B, C, h, w)
    losses = {"epsilon": ddpm.eps_loss, "v_prediction": ddpm.v_loss}
    if schedule.prediction_type not in losses:
        raise ValueError(f"sd1_loss trains {tuple(losses)} models, not {schedule.prediction_type!r}")
    loss = losses[schedule.prediction_type]
    return loss(lambda xt, t_: unet(xt, t_, cond), z0, t, eps, schedule.alpha_bar.to(z0.device))


def _frozen_parts():
    """The shipped clip-shapes text tower and vae-shapes codec, frozen, and their manifest entries."""
    from course import checkpoints
    from course.nn.codec import load_codec_from
    from course.recipes.clip_shapes import load_clip_shapes_from

    parts = []
    for name, loader in ((TEXT_ENCODER, load_clip_shapes_from), (VAE, load_codec_from)):
        tensors, entry = checkpoints.load_checkpoint(name)
        parts.append((loader(tensors, entry["config"]).eval().requires_grad_(False), entry))
    (clip, clip_entry), (codec, vae_entry) = parts
    return prompt_encoder_from_clip(clip), codec, {TEXT_ENCODER: clip_entry["sha256"], VAE: vae_entry["sha256"]}


def sd1_config(unet_config: UNetConfig, parts_sha: dict[str, str]) -> dict:
    """What the checkpoint's config holds: the U-Net, the schedule, and the frozen parts by name and sha256."""
    return {"unet": asdict(unet_config), "schedule": asdict(SCHEDULE), "parts": parts_sha,
            "caption_dropout": CAPTION_DROPOUT, "short_caption_share": SHORT_CAPTION_SHARE,
            "sample_steps": SAMPLE_STEPS, "guidance": GUIDANCE}


def train_sd1_shapes(steps: int | None, run_dir: Path, fresh: bool, progress: bool) -> Trained:
    """Train the sd1-shapes U-Net on frozen clip-shapes text states and vae-shapes latents (zoo train contract).

    Trained.model is the EMA U-Net (what is shipped); `evaluate_sd1_shapes` assembles it with the
    shipped frozen parts.
    """
    from course.train import TrainConfig, fit, recipe_steps

    steps = recipe_steps(steps, SD1_SHAPES_STEPS)  # refused before the slow latent bank
    torch.manual_seed(0)
    text_encoder, codec, parts = _frozen_parts()
    t0 = time.perf_counter()
    scenes, z0 = latent_bank(codec, cache=Path(run_dir) / "latent_bank.safetensors")
    bank_s = time.perf_counter() - t0
    unet = UNet(SD1_SHAPES_UNET)
    config = TrainConfig(steps=steps, batch_size=BATCH_SIZE, lr=5e-4, weight_decay=0.0, warmup_steps=min(200, steps // 10),
                         schedule="cosine", ema_decay=0.999, checkpoint_every=250, log_every=50)
    result = fit(unet, sd1_loss, make_batch_fn(scenes, z0, text_encoder), config, run_dir, resume=not fresh, progress=progress)
    notes = (f"{result.step} steps at batch {BATCH_SIZE} (~{result.wall_time_s / 60:.0f} min on {torch.get_num_threads()} "
             f"CPU thread(s)), {SHORT_CAPTION_SHARE:.0%} of the kept captions short prompts, "
             f"latent bank of {len(scenes)} scenes encoded in {bank_s:.0f} s; frozen {TEXT_ENCODER} and {VAE}.")
    return Trained(model=(result.ema if result.ema is not None else result.model).eval(),
                   config=sd1_config(SD1_SHAPES_UNET, parts), wall_time_s=result.wall_time_s,
                   steps=result.step, interrupted=result.interrupted, notes=notes)


def _unet_config(d: dict) -> UNetConfig:
    return UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def check_parts(model: str, trained_on: dict[str, str], shipped: dict[str, str]) -> None:
    """Refuse frozen parts (by checkpoint name -> sha256) that changed since `model` was trained on them."""
    for name, sha in trained_on.items():
        if shipped.get(name) != sha:
            raise ValueError(f"{model} was trained on {name} with sha256 {sha[:12]}..., but the shipped {name} is "
                             f"{str(shipped.get(name))[:12]}...: retrain with `python -m course train {model} --ship`")


def load_sd1_shapes_from(tensors: dict[str, torch.Tensor], config: dict) -> SD1Shapes:
    """Rebuild sd1-shapes from its U-Net tensors and config, with the shipped frozen parts (zoo load contract).

    Raises:
        ValueError: the shipped clip-shapes or vae-shapes is not the one this U-Net was trained on.
    """
    from course import checkpoints

    unet = UNet(_unet_config(config["unet"]))
    checkpoints.load_into(unet, tensors, source="sd1-shapes")
    text_encoder, codec, parts = _frozen_parts()
    check_parts("sd1-shapes", config.get("parts", {}), parts)
    schedule = ddpm.Schedule(**config["schedule"]) if "schedule" in config else SCHEDULE
    return SD1Shapes(unet.eval(), text_encoder, codec, schedule)


def sd1_shapes_pipeline(model: SD1Shapes, config: dict) -> TextToImage:
    """The zoo's pipeline hook: `course.pipelines.base.load("sd1-shapes").generate(prompts, ...)`.

    Its default steps and guidance are the config's recommended ones ("sample_steps", "guidance").
    """
    return model.pipeline(config.get("sample_steps", SAMPLE_STEPS), config.get("guidance", GUIDANCE))


def _assembled(model: nn.Module) -> SD1Shapes:
    if isinstance(model, SD1Shapes):
        return model
    if isinstance(model, UNet):  # what the training recipe returns: add the shipped frozen parts
        text_encoder, codec, _ = _frozen_parts()
        device = next(model.parameters()).device
        return SD1Shapes(model.eval(), text_encoder.to(device), codec.to(device), SCHEDULE)
    raise TypeError(f"expected an SD1Shapes or its UNet, got {type(model).__name__}")


@torch.no_grad()
def evaluate_sd1_shapes(model: nn.Module, quick: bool = False, *, batch_size: int = 128) -> dict[str, float]:
    """ShapesEval full match of generated images on held-out canonical prompts, per guidance scale.

    For each w in EVAL_GUIDANCES, one image per prompt (256 prompts, EVAL_STEPS DDIM steps; quick:
    16 prompts, 10 steps), scored overall and on the one- and two-object prompts.

    Returns:
        {"shapes_eval_full_match_w3": ..., "..._one_object_w3": ..., "..._two_objects_w3": ..., ...}.
    """
    from course.world import metrics

    pipe = _assembled(model).pipeline()
    n, steps = (16, 10) if quick else (256, EVAL_STEPS)
    prompts = [shapes.caption(s) for s in shapes.sample_scenes(n, HELD_OUT_SEED)]
    out: dict[str, float] = {"held_out_prompts": n, "ddim_steps": steps}
    for w in EVAL_GUIDANCES:
        images = np.concatenate([pipe.generate(prompts[i : i + batch_size], steps=steps, guidance=w, seed=i)
                                 for i in range(0, n, batch_size)])  # (n, 64, 64, 3) uint8
        report = metrics.shapes_eval(images, prompts)
        by = report.by_objects()
        tag = f"w{w:g}"
        out[f"shapes_eval_full_match_{tag}"] = round(report.full_match, 4)
        out[f"shapes_eval_full_match_one_object_{tag}"] = round(by[1].full_match, 4) if 1 in by else math.nan
        out[f"shapes_eval_full_match_two_objects_{tag}"] = round(by[2].full_match, 4) if 2 in by else math.nan
    if not quick:  # the three prompt styles at the recommended settings, per attribute
        out |= prompt_style_metrics(model, n, batch_size=batch_size)
    return out


@torch.no_grad()
def prompt_style_metrics(model: nn.Module, n: int = 256, *, steps: int = SAMPLE_STEPS, guidance: float = GUIDANCE,
                         batch_size: int = 128) -> dict[str, float]:
    """ShapesEval per prompt style (canonical, paraphrase, short) on the same n held-out scenes, per attribute.

    One image per prompt, batch i seeded with its first index as in `evaluate_sd1_shapes`, so the
    canonical style repeats that evaluation's images at the same steps and guidance.

    Returns:
        `course.world.metrics.style_table` keys (style_short_one_full_match, ...) and the settings.
    """
    from course.world import metrics

    pipe = _assembled(model).pipeline()

    def generate(prompts: list[str]) -> np.ndarray:
        return np.concatenate([pipe.generate(prompts[i : i + batch_size], steps=steps, guidance=guidance, seed=i)
                               for i in range(0, len(prompts), batch_size)])  # (n, 64, 64, 3)

    reports = metrics.prompt_style_eval(generate, shapes.sample_scenes(n, HELD_OUT_SEED))
    return {"style_held_out_prompts": n, "style_ddim_steps": steps, "style_guidance": guidance,
            **metrics.style_table(reports)}
