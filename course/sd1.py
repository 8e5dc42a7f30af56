"""Chapter 04: a mini Stable Diffusion 1.x on Shapes (`sd1-shapes`), and the loader for real SD 1.x folders.

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
steps where the layout is decided; v weights it by SNR + 1). 10% of the captions replaced by the empty prompt so that one network learns both the conditional
and the unconditional model that classifier-free guidance needs, EMA of the weights.

The shipped checkpoint holds the U-Net only; its config names the text encoder and VAE
checkpoints with their sha256, and loading refuses parts that changed since.

`load_diffusers_folder(path)` reads a StableDiffusionPipeline folder (model_index.json, each part's
config and safetensors weights) into the course's own modules and pipeline;
`parity_sd1_pipeline` proves that it makes the same images as diffusers.

Shape letters: B batch, C latent channels, h, w latent size, T tokens, D text width.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from course import data, ddpm
from course.pipeline import TextToImage
from course.text import EOS_ID, CLIPTextConfig, CLIPTextTransformer, tokenize
from course.unet import UNet, UNetConfig, get_preset
from course.zoo import Trained

# ----------------------------------------------------------------------------- the parts


class PromptEncoder(nn.Module):
    """Prompts -> per-token text states (B, T, D): tokenizer + CLIP text transformer, as SD 1.x reads them.

    Args:
        transformer: the CLIP text transformer.
        context_length: T, tokens per prompt (77 for SD; 32 for clip-shapes).
        id_to_row: (49408,) long, CLIP BPE id -> embedding row, for a text encoder with a cut
            vocabulary (clip-shapes); None when the embedding has all 49,408 rows.
        pad_token_id: the tokenizer's padding id (EOS for SD 1.x; "!" = 0 for OpenCLIP's, see `tokenize`).
    """

    def __init__(self, transformer: CLIPTextTransformer, context_length: int, id_to_row: torch.Tensor | None = None,
                 pad_token_id: int = EOS_ID):
        super().__init__()
        self.transformer = transformer
        self.context_length = context_length
        self.pad_token_id = pad_token_id
        self.register_buffer("id_to_row", id_to_row.clone() if id_to_row is not None else None, persistent=False)

    @property
    def width(self) -> int:
        return self.transformer.config.hidden_size

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """B prompts -> (B, T) rows of the text transformer's embedding, on its device."""
        ids = tokenize(list(prompts), self.context_length, self.pad_token_id)["input_ids"]  # (B, T)
        ids = ids.to(self.transformer.token_embedding.weight.device)
        return self.id_to_row[ids] if self.id_to_row is not None else ids  # (B, T)

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> torch.Tensor:
        """B prompts -> (B, T, D) final-LayerNorm states of every token (padding included, as SD)."""
        return self.transformer(self.token_ids(prompts)).last_hidden_state  # (B, T, D)


def prompt_encoder_from_clip(clip) -> PromptEncoder:
    """The text tower of a `course.clip.MiniClip` (clip-shapes), frozen."""
    encoder = PromptEncoder(clip.text_encoder, clip.config.context_length, clip.id_to_row)
    return encoder.eval().requires_grad_(False)


class SD1Shapes(nn.Module):
    """The assembled sd1-shapes: the trained U-Net and the frozen text encoder and codec."""

    def __init__(self, unet: UNet, text_encoder: PromptEncoder, codec: nn.Module, schedule: ddpm.Schedule):
        super().__init__()
        if unet.config.cross_attention_dim != text_encoder.width:
            raise ValueError(f"the U-Net's cross_attention_dim {unet.config.cross_attention_dim} must equal the text "
                             f"width {text_encoder.width}")
        self.unet, self.text_encoder, self.codec, self.schedule = unet, text_encoder, codec, schedule

    def pipeline(self) -> TextToImage:
        return TextToImage(self.unet.eval(), self.text_encoder, self.codec, self.schedule, image_size=data.IMAGE_SIZE)


# ----------------------------------------------------------------------------- the recipe

SD1_SHAPES_UNET = get_preset("shapes-latent")  # 3.2 M parameters; cross_attention_dim 64 = clip-shapes' text width
# SD 1.x's scaled-linear betas (T = 1000, DDIM "leading" + offset 1), read as v-prediction as SD 2.x does
SCHEDULE = dataclasses.replace(ddpm.SCHEDULES["sd_scaled_linear"], prediction_type="v_prediction")
SD1_SHAPES_STEPS = 9000  # ~55-65 min at ~0.36-0.45 s/step (batch 64, 2-core CPU): the quality targets need more than 30
BATCH_SIZE = 64
CAPTION_DROPOUT = 0.1  # share of captions replaced by "" during training: the unconditional model for CFG
BANK_SIZE = 32_768  # scenes whose latents are encoded once by the frozen VAE and reused
BANK_SEED = 777  # the bank's scenes; never the held-out seed
HELD_OUT_SEED = 424_242  # evaluation prompts (the scenes of `course.latent`'s held-out set)
EVAL_STEPS = 25  # DDIM steps of the evaluation (≤ 50; 25 keeps the full evaluation near 3 min on one thread)
EVAL_GUIDANCES = (1.0, 3.0, 5.0, 7.5)
TEXT_ENCODER, VAE = "clip-shapes", "vae-shapes"  # the frozen parts, by checkpoint name


def latent_bank(codec: nn.Module, n: int = BANK_SIZE, seed: int = BANK_SEED, cache: Path | None = None):
    """(scenes, z0 (n, C, h, w)): n Shapes scenes and their normalised latents (posterior means).

    Encoding once and reusing the latents moves the VAE encoder out of the training step; with
    `cache` the latents are stored there and reused by a resumed run (keyed by n, seed and a
    fingerprint of the codec's weights).
    """
    from safetensors.torch import load_file, save_file

    from course.latent import encode_scenes

    scenes = data.sample_scenes(n, seed)
    key = f"{n}:{seed}:{_fingerprint(codec)}"
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


def make_batch_fn(scenes: list[data.Scene], z0: torch.Tensor, text_encoder: PromptEncoder,
                  caption_dropout: float = CAPTION_DROPOUT):
    """The recipe's `batch_fn(step, batch_size, generator) -> (z0 (B, C, h, w), cond (B, T, D))`.

    Each step draws B bank entries, a random paraphrase of each scene's caption, and replaces a
    `caption_dropout` share of the captions by "" (Ho & Salimans 2022, Algorithm 1: p_uncond).
    """
    def batch_fn(step: int, batch_size: int, generator: torch.Generator):
        idx = torch.randint(0, len(scenes), (batch_size,), generator=generator)  # (B,)
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        drop = torch.rand(batch_size, generator=generator) < caption_dropout  # (B,)
        captions = ["" if d else data.caption(scenes[i], rng) for i, d in zip(idx.tolist(), drop.tolist())]
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
    from course.clip import load_clip_shapes_from
    from course.latent import load_codec_from

    parts = []
    for name, loader in ((TEXT_ENCODER, load_clip_shapes_from), (VAE, load_codec_from)):
        tensors, entry = checkpoints.load_checkpoint(name)
        parts.append((loader(tensors, entry["config"]).eval().requires_grad_(False), entry))
    (clip, clip_entry), (codec, vae_entry) = parts
    return prompt_encoder_from_clip(clip), codec, {TEXT_ENCODER: clip_entry["sha256"], VAE: vae_entry["sha256"]}


def sd1_config(unet_config: UNetConfig, parts_sha: dict[str, str]) -> dict:
    """What the checkpoint's config holds: the U-Net, the schedule, and the frozen parts by name and sha256."""
    return {"unet": asdict(unet_config), "schedule": asdict(SCHEDULE), "parts": parts_sha,
            "caption_dropout": CAPTION_DROPOUT}


def train_sd1_shapes(steps: int | None, run_dir: Path, fresh: bool, progress: bool) -> Trained:
    """Train the sd1-shapes U-Net on frozen clip-shapes text states and vae-shapes latents (zoo train contract).

    Trained.model is the EMA U-Net (what is shipped); `evaluate_sd1_shapes` assembles it with the
    shipped frozen parts.
    """
    from course.train import TrainConfig, fit

    torch.manual_seed(0)
    text_encoder, codec, parts = _frozen_parts()
    t0 = time.perf_counter()
    scenes, z0 = latent_bank(codec, cache=Path(run_dir) / "latent_bank.safetensors")
    bank_s = time.perf_counter() - t0
    unet = UNet(SD1_SHAPES_UNET)
    steps = steps or SD1_SHAPES_STEPS
    config = TrainConfig(steps=steps, batch_size=BATCH_SIZE, lr=5e-4, weight_decay=0.0, warmup_steps=min(200, steps // 10),
                         schedule="cosine", ema_decay=0.999, checkpoint_every=250, log_every=50)
    result = fit(unet, sd1_loss, make_batch_fn(scenes, z0, text_encoder), config, run_dir, resume=not fresh, progress=progress)
    notes = (f"{result.step} steps at batch {BATCH_SIZE} (~{result.wall_time_s / 60:.0f} min on a 2-core CPU), "
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
    """The zoo's pipeline hook: `course.pipeline.load("sd1-shapes").generate(prompts, ...)`."""
    return model.pipeline()


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
    from course import metrics

    pipe = _assembled(model).pipeline()
    n, steps = (16, 10) if quick else (256, EVAL_STEPS)
    prompts = [data.caption(s) for s in data.sample_scenes(n, HELD_OUT_SEED)]
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
    return out


# ----------------------------------------------------------------------------- diffusers-format folders


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {path.parent.parent} a diffusers StableDiffusionPipeline folder?")
    return json.loads(path.read_text(encoding="utf-8"))


def _weights(folder: Path, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    for name in names:
        if (folder / name).is_file():
            return load_file(str(folder / name))
    raise FileNotFoundError(f"no {' or '.join(names)} in {folder}: save the pipeline with safe_serialization=True")


def unet_from_folder(folder: Path) -> UNet:
    """unet/ of a diffusers pipeline folder (config.json + safetensors) as the course's UNet."""
    from course.unet import config_from_diffusers

    unet = UNet(config_from_diffusers(_read_json(folder / "config.json")))
    unet.load_state_dict(_weights(folder, ("diffusion_pytorch_model.safetensors",)), strict=True)
    return unet.eval()


def codec_from_folder(folder: Path) -> nn.Module:
    """vae/ of a diffusers pipeline folder as a LatentCodec that decodes z / scaling_factor, as SD's pipelines do."""
    from course.latent import LatentCodec
    from course.vae import VAE, config_from_diffusers, diffusers_key_to_course

    cfg = _read_json(folder / "config.json")
    if cfg.get("latents_mean") is not None or cfg.get("latents_std") is not None:
        raise NotImplementedError("a VAE with latents_mean/latents_std: the course decodes z / scaling_factor only")
    vae = VAE(config_from_diffusers(cfg))  # force_upcast only matters in float16: the course runs float32
    state = _weights(folder, ("diffusion_pytorch_model.safetensors",))
    vae.load_state_dict({diffusers_key_to_course(k): v for k, v in state.items()}, strict=True)
    c = vae.config.latent_channels
    # shift 0 and scale = scaling_factor per channel: SD's 0.18215 (SDXL's 0.13025) as a LatentCodec
    return LatentCodec(vae, torch.zeros(c), torch.full((c,), float(vae.config.scaling_factor))).eval()


def text_encoder_from_folder(folder: Path, tokenizer_folder: Path) -> PromptEncoder:
    """text_encoder/ (CLIPTextModel or ...WithProjection) and its tokenizer/ (context length, pad token) of a folder.

    The course's CLIP tokenizer is the real one, so only the tokenizer's settings are read.
    """
    from course.text import _renamed, clip_tokenizer

    cfg = _read_json(folder / "config.json")
    state = {_renamed(k): v for k, v in _weights(folder, ("model.safetensors",)).items() if not k.endswith("position_ids")}
    projection = state["text_projection.weight"].shape[0] if "text_projection.weight" in state else None
    names = {f for f in CLIPTextConfig.__dataclass_fields__ if f != "projection_dim"}
    transformer = CLIPTextTransformer(CLIPTextConfig(**{k: v for k, v in cfg.items() if k in names}, projection_dim=projection))
    transformer.load_state_dict(state, strict=True)
    tok = _read_json(tokenizer_folder / "tokenizer_config.json") if (tokenizer_folder / "tokenizer_config.json").is_file() else {}
    pad = tok.get("pad_token")
    if pad is None and (tokenizer_folder / "special_tokens_map.json").is_file():
        pad = _read_json(tokenizer_folder / "special_tokens_map.json").get("pad_token")
    pad = (pad.get("content") if isinstance(pad, dict) else pad) or "<|endoftext|>"
    pad_id = clip_tokenizer().get_vocab().get(pad)
    if pad_id is None:
        raise ValueError(f"{tokenizer_folder}: pad token {pad!r} is not in CLIP's vocabulary")
    context = min(int(tok.get("model_max_length", 77)), transformer.config.max_position_embeddings)
    return PromptEncoder(transformer.eval(), context, pad_token_id=pad_id)


def schedule_from_folder(folder: Path) -> tuple[ddpm.Schedule, str]:
    """scheduler/ of a diffusers pipeline folder: (its betas, spacing and prediction type; the course sampler for it).

    DDIM, PNDM (SD 1.x's default) and DDPM configs share the same betas and are sampled with
    DDIM; SDXL ships an EulerDiscreteScheduler, sampled with `course.euler`. Where an Euler config
    is silent, SD's DDIM settings (no x0 clipping, alpha_bar[0] past the last step) fill the
    fields DDIM would need.
    """
    cfg = _read_json(folder / "scheduler_config.json")
    name = cfg.get("_class_name")
    if name not in ("DDIMScheduler", "PNDMScheduler", "DDPMScheduler", "EulerDiscreteScheduler"):
        raise NotImplementedError(f"scheduler {name!r}: the course samples with DDIM on a DDPM-family schedule "
                                  "(DDIM, PNDM, DDPM or EulerDiscrete configs)")
    if name != "EulerDiscreteScheduler":
        return ddpm.schedule_from_diffusers(cfg), "ddim"
    defaults = dict(interpolation_type="linear", use_karras_sigmas=False, use_exponential_sigmas=False,
                    use_beta_sigmas=False, timestep_type="discrete", final_sigmas_type="zero")
    for key, default in defaults.items():
        if cfg.get(key, default) != default:
            raise NotImplementedError(f"EulerDiscreteScheduler with {key}={cfg[key]!r}: course.euler implements {default!r}")
    return ddpm.schedule_from_diffusers({"clip_sample": False, "set_alpha_to_one": False, **cfg}), "euler"


def load_diffusers_folder(path: str | Path, image_size: int | None = None) -> TextToImage:
    """A Stable Diffusion 1.x / 2.x folder in diffusers format, read into the course's modules and pipeline.

    Reads model_index.json, then unet/, vae/, text_encoder/ (config.json + safetensors weights),
    tokenizer/ (its model_max_length and pad token: the course's CLIP tokenizer is the real one)
    and scheduler/ (betas, spacing, offset and prediction type: eps, or v for SD 2.x's 768-v
    models). No diffusers or transformers code builds the course side.

    Args:
        path: the folder `StableDiffusionPipeline.save_pretrained` wrote.
        image_size: H = W of the images; default unet sample_size * VAE downsample factor (512 for SD 1.5).

    Returns:
        a `TextToImage` pipeline.
    """
    root = Path(path)
    index = _read_json(root / "model_index.json")
    for part in ("unet", "vae", "text_encoder", "scheduler"):
        if part not in index:
            raise ValueError(f"{root}/model_index.json has no {part!r}: not a StableDiffusionPipeline folder")
    unet, codec = unet_from_folder(root / "unet"), codec_from_folder(root / "vae")
    text_encoder = text_encoder_from_folder(root / "text_encoder", root / "tokenizer")
    size = image_size or (unet.config.sample_size or 64) * codec.vae.config.downsample_factor
    schedule, sampler = schedule_from_folder(root / "scheduler")
    return TextToImage(unet, text_encoder, codec, schedule, image_size=size, sampler=sampler)


PARITY_DEFAULT_CONFIG = dict(  # tiny SD 1.x parts: an 8x8x4 latent, 16x16 images
    unet=dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
              down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
              cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8),
    vae=dict(in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1, latent_channels=4,
             norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
             sample_size=16),
    text_encoder=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=77, eos_token_id=49407, bos_token_id=49406,
                      pad_token_id=49407),
    scheduler_class="DDIMScheduler",
    scheduler=dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                   clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading"),
    steps=10, guidance=4.0,
    prompts=("a red circle in the top left", "a large blue square and a small green triangle"),
    negative_prompts=("a yellow square", "a purple circle"),
)


def parity_sd1_pipeline(config: dict | None = None, seed: int = 0, *, folder: str | Path | None = None) -> float:
    """Max |course - diffusers| of a whole SD 1.x pipeline loaded from one diffusers-format folder.

    Builds diffusers' StableDiffusionPipeline from tiny random parts (weights perturbed so no zero
    or identity initialisation hides a wrong wiring), `save_pretrained`s it, loads the folder with
    diffusers (`from_pretrained`, local files only) and with `load_diffusers_folder`, and runs both
    from the same starting latents with guidance > 1 and negative prompts.

    Args:
        config: overrides of PARITY_DEFAULT_CONFIG's keys.
        seed: seeds the weights and the starting latents.
        folder: where to save the pipeline (default: a temporary folder, removed afterwards).

    Returns:
        The larger of max |image difference| (images in [0, 1], diffusers' output_type="np")
        and max |final latent difference|.
    """
    import copy
    import tempfile

    import diffusers
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig as HFCLIPTextConfig, CLIPTextModel

    from course.text import clip_tokenizer

    cfg = {**PARITY_DEFAULT_CONFIG, **(config or {})}
    torch.manual_seed(seed)
    parts = dict(unet=UNet2DConditionModel(**cfg["unet"]), vae=AutoencoderKL(**cfg["vae"]),
                 text_encoder=CLIPTextModel(HFCLIPTextConfig(**cfg["text_encoder"])))
    with torch.no_grad():
        for module in parts.values():
            for p in module.parameters():
                p.add_(0.02 * torch.randn_like(p))
    tokenizer = copy.deepcopy(clip_tokenizer())  # a copy: the course's cached tokenizer stays as it is
    tokenizer.model_max_length = cfg["text_encoder"]["max_position_embeddings"]
    scheduler = getattr(diffusers, cfg["scheduler_class"])(**cfg["scheduler"])  # DDIMScheduler or EulerDiscreteScheduler
    ref = StableDiffusionPipeline(**parts, tokenizer=tokenizer, scheduler=scheduler,
                                  safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    prompts, negatives = list(cfg["prompts"]), list(cfg["negative_prompts"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(folder or tmp)
        ref.save_pretrained(path, safe_serialization=True)
        ref = StableDiffusionPipeline.from_pretrained(path, local_files_only=True, safety_checker=None,
                                                      requires_safety_checker=False)
        ours = load_diffusers_folder(path)
    ref.set_progress_bar_config(disable=True)
    size = ours.image_size
    latents = torch.randn((len(prompts), *ours.latent_shape), generator=torch.Generator().manual_seed(seed))
    common = dict(num_inference_steps=cfg["steps"], guidance_scale=cfg["guidance"], negative_prompt=negatives,
                  height=size, width=size)
    with torch.no_grad():
        expected = ref(prompts, latents=latents.clone(), output_type="np", **common).images  # (B, H, W, 3) in [0, 1]
        expected_z = ref(prompts, latents=latents.clone(), output_type="latent", **common).images  # (B, C, h, w)
    kwargs = dict(steps=cfg["steps"], guidance=cfg["guidance"], negative_prompts=negatives, latents=latents)
    got_z = ours.sample_latents(prompts, **kwargs)  # (B, C, h, w)
    with torch.no_grad():
        got = (ours.codec.decode(got_z) / 2 + 0.5).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3) in [0, 1], as diffusers
    saturated = float(((expected <= 0) | (expected >= 1)).mean())
    if saturated > 0.5:
        raise RuntimeError(f"{saturated:.0%} of the reference pixels are clipped: the comparison would prove little")
    return max(float(np.abs(got - expected).max()), float((got_z - expected_z).abs().max()))
