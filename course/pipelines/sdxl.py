"""Chapter 05: what SDXL changed in the conditioning, on the course's parts, and a loader for SDXL folders.

SDXL (Podell et al. 2023, Sec. 2) keeps SD 1.x's recipe (VAE latents, an eps-prediction U-Net,
CLIP text, guided sampling) and changes what the U-Net is told and where its parameters sit:

- Two text encoders (Sec. 2.1): CLIP ViT-L/14 (D1 = 768) and OpenCLIP ViT-bigG/14 (D2 = 1280)
  read the same prompt; their PENULTIMATE layers' outputs (no final LayerNorm) are concatenated
  on channels into cond (B, 77, 2048), which every cross-attention reads.
- A pooled text vector (Sec. 2.1): bigG's projected EOS state (B, P = 1280) conditions the whole
  image through the time embedding, as a class label would.
- Micro-conditioning (Sec. 2.2): original size, crop top-left corner and target size, N = 6
  integers per image, each a 256-wide sinusoid (the timestep's Fourier features); with the
  pooled vector (B, P + 6 * 256 = 2816) -> MLP -> added to the time embedding. Trained with each
  image's true size and crop, the model can be asked for a large original size and crop (0, 0):
  no blurry look of upscaled small images, no objects cut off by random crops.
- Uneven depth (Sec. 2.1, Tab. 1): three levels (320, 640, 1280) instead of four, no attention
  at the highest resolution (a plain DownBlock2D), 2 and 10 transformer blocks per attention
  layer at the others: 2.6 B U-Net parameters, 3x SD 1.5's.

`course.nn.unet.UNet` already implements addition_embed_type="text_time" and per-level depth
(`parity_sdxl_unet`). This module adds `time_ids`, `DualPromptEncoder`, `SDXLTextToImage`
(course.pipelines.base's guided DDIM with the added conditioning), `load_diffusers_sdxl_folder` and its
proof `parity_sdxl_pipeline`, and `count_parameters_meta` (the real models' sizes, on the meta
device: shapes without storage).

Shape letters: B batch, C latent channels, h, w latent size, T tokens, D text width (D1, D2 per
encoder), P pooled width, N = 6 size and crop ids.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from course.diffusion import ddpm
from course.nn.clip_text import CLIPTextTransformer
from course.nn.unet import UNet, parity_unet
from course.pipelines.base import TextToImage
from course.pipelines.sd1 import PARITY_DEFAULT_CONFIG as SD1_PARITY_CONFIG
from course.pipelines.sd1 import (
    PromptEncoder,
    _read_json,
    codec_from_folder,
    schedule_from_folder,
    text_encoder_from_folder,
    unet_from_folder,
)

N_TIME_IDS = 6  # (original h, original w, crop top, crop left, target h, target w)

# ----------------------------------------------------------------------------- micro-conditioning


def _pairs(value, name: str, minimum: int) -> torch.Tensor:
    """An (h, w) pair or a (B, 2) batch of pairs -> float64 (B, 2), checked."""
    t = torch.as_tensor(value, dtype=torch.float64)
    t = t[None] if t.ndim == 1 else t  # (1, 2) for a single pair
    if t.ndim != 2 or t.shape[1] != 2:
        raise ValueError(f"{name} must be a pair (h, w) / (top, left) or a (B, 2) batch of pairs, got {value!r}")
    if not torch.isfinite(t).all() or (t != t.round()).any() or (t < minimum).any():
        raise ValueError(f"{name} must hold whole numbers of pixels >= {minimum}, got {value!r}")
    return t


def time_ids(original_size, crop_top_left, target_size) -> torch.Tensor:
    """SDXL's size and crop conditioning, in its order: (orig h, orig w, crop top, crop left, target h, target w).

    At training time: the size of the image before it was resized to the training resolution, the
    top-left corner of the crop taken from the resized image, and the training (bucket) size. At
    sampling time they are wishes: a large original size asks for a sharp image, crop (0, 0) for
    an object that is not cut off, and diffusers' default is (H, W), (0, 0), (H, W).

    Args:
        original_size: (h, w), or a (B, 2) batch; > 0.
        crop_top_left: (top, left), or (B, 2); >= 0.
        target_size: (h, w), or (B, 2); > 0.

    Returns:
        float32 (B, 6); B = 1 when all three are single pairs, else the batch size they share.

    Raises:
        ValueError: not a pair, negative or fractional pixels, zero sizes, mismatched batches.

    Ref: Podell et al. 2023, Sec. 2.2 ("Conditioning the Model on Image Size / on Cropping Parameters").
    """
    parts = [_pairs(original_size, "original_size", 1), _pairs(crop_top_left, "crop_top_left", 0),
             _pairs(target_size, "target_size", 1)]
    B = max(p.shape[0] for p in parts)
    if any(p.shape[0] not in (1, B) for p in parts):
        raise ValueError(f"batches of sizes and crops must agree (or be single pairs): {[p.shape[0] for p in parts]}")
    return torch.cat([p.expand(B, 2) for p in parts], dim=1).float()  # (B, 6)


# ----------------------------------------------------------------------------- two text encoders


class DualPromptEncoder(nn.Module):
    """Prompts -> SDXL's text conditioning: cond (B, T, D1 + D2) and pooled (B, P); frozen.

    Args:
        first: the first tower (CLIP ViT-L/14 in SDXL) as an `sd1.PromptEncoder` (its transformer,
            context length and optional id_to_row).
        second: the second tower (OpenCLIP ViT-bigG/14); its transformer needs a text projection (P).
            Each `PromptEncoder` carries its tokenizer's pad id: SDXL's pad with "<|endoftext|>"
            (49407) and "!" (0).

    Ref: Podell et al. 2023, Sec. 2.1; diffusers StableDiffusionXLPipeline.encode_prompt.
    """

    def __init__(self, first: PromptEncoder, second: PromptEncoder):
        super().__init__()
        if second.transformer.text_projection is None:
            raise ValueError("the second text encoder needs a text projection: SDXL's pooled vector is its text_embeds")
        if first.context_length != second.context_length:
            raise ValueError(f"the encoders' states are concatenated per token: context lengths {first.context_length} "
                             f"and {second.context_length} must be equal")
        self.encoders = nn.ModuleList([first, second])
        self.eval().requires_grad_(False)

    @property
    def width(self) -> int:
        """D1 + D2, the U-Net's cross_attention_dim."""
        return sum(e.width for e in self.encoders)

    @property
    def pooled_width(self) -> int:
        """P, the second encoder's projection width."""
        return self.encoders[1].transformer.config.projection_dim

    def check_prompts(self, prompts: list[str]) -> list[str]:
        """Each encoder's `PromptEncoder.check_prompts`, each problem once."""
        return list(dict.fromkeys(p for e in self.encoders for p in e.check_prompts(prompts)))

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """B prompts -> (cond (B, T, D1 + D2) penultimate-layer states, pooled (B, P) of the second encoder)."""
        states = []
        for encoder in self.encoders:
            out = encoder.transformer(encoder.token_ids(prompts))  # ids (B, T), each with its own pad token
            states.append(out.penultimate)  # (B, T, D_i): second-to-last layer, no final LayerNorm
        return torch.cat(states, dim=-1), out.text_embeds  # (B, T, D1 + D2), (B, P)


# ----------------------------------------------------------------------------- the pipeline


class SDXLTextToImage(TextToImage):
    """SDXL text-to-image: `TextToImage`'s guided DDIM or Euler, with SDXL's conditioning on both branches.

    Per image the U-Net gets cond (B, T, D1 + D2) and added = {"text_embeds": pooled (B, P),
    "time_ids": (B, 6)}. The unconditional branch gets the negative prompts' cond and pooled; with
    no negative prompts and `force_zeros_for_empty_prompt` (SDXL base's setting) it gets zeros
    rather than the empty prompt's states. Both branches get the same time ids (diffusers'
    default). `generate` and `sample_latents` are `TextToImage`'s (steps, guidance, seed,
    negative_prompts, latents, img2img ...) with three more keywords, original_size,
    crop_top_left and target_size: see `conditioning`.

    Args:
        unet: a U-Net with addition_embed_type="text_time" (cross_attention_dim D1 + D2,
            projection_class_embeddings_input_dim P + 6 * addition_time_embed_dim).
        text_encoder: a `DualPromptEncoder`.
        codec, schedule, image_size, sampler: as in `TextToImage`.
        force_zeros_for_empty_prompt: zeros as the unconditional input when no negative prompt is given.
    """

    def __init__(self, unet: UNet, text_encoder: DualPromptEncoder, codec: nn.Module, schedule: ddpm.Schedule,
                 image_size: int, force_zeros_for_empty_prompt: bool = True, sampler: str = "ddim"):
        cfg = unet.config
        if cfg.addition_embed_type != "text_time":
            raise ValueError("SDXL's U-Net has addition_embed_type='text_time' (pooled text + size/crop ids)")
        if cfg.cross_attention_dim != text_encoder.width:
            raise ValueError(f"the U-Net's cross_attention_dim {cfg.cross_attention_dim} must equal "
                             f"D1 + D2 = {text_encoder.width}")
        expected = text_encoder.pooled_width + N_TIME_IDS * cfg.addition_time_embed_dim
        if cfg.projection_class_embeddings_input_dim != expected:  # a refiner's 5 ids (with aesthetic score) fail here
            raise ValueError(f"projection_class_embeddings_input_dim {cfg.projection_class_embeddings_input_dim} must "
                             f"be P + 6 * addition_time_embed_dim = {expected}")
        super().__init__(unet, text_encoder, codec, schedule, image_size, sampler)
        self.force_zeros_for_empty_prompt = force_zeros_for_empty_prompt

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], negative_prompts: list[str] | None, guidance: float):
        """((cond (B, T, D), pooled (B, P)), (uncond, pooled_uncond) or None when guidance == 1)."""
        cond, pooled = self.text_encoder(list(prompts))  # (B, T, D), (B, P)
        if guidance == 1.0:
            return (cond, pooled), None
        if negative_prompts is None and self.force_zeros_for_empty_prompt:
            return (cond, pooled), (torch.zeros_like(cond), torch.zeros_like(pooled))
        negatives = list(negative_prompts) if negative_prompts is not None else [""] * len(prompts)
        return (cond, pooled), self.text_encoder(negatives)

    @torch.no_grad()
    def conditioning(self, prompts: list[str], negative_prompts: list[str] | None, guidance: float, *,
                     size: tuple[int, int], original_size=None, crop_top_left=(0, 0), target_size=None):
        """(cond, uncond, added, added_uncond) for `TextToImage.sample_latents`.

        Args:
            prompts, negative_prompts, guidance: as in `TextToImage.generate`.
            size: (H, W) of the images being generated (`generate(size=...)`).
            original_size: (h, w) the image should look as if it had had before resizing, or a (B, 2)
                batch; default (H, W). Large asks for a sharp image.
            crop_top_left: (top, left) of the pretended crop, or (B, 2); (0, 0) asks for an uncut object.
            target_size: (h, w), or (B, 2); default (H, W).

        Ref: Podell et al. 2023, Sec. 2.2.
        """
        ids = time_ids(size if original_size is None else original_size, crop_top_left,
                       size if target_size is None else target_size)  # (1 or B, 6)
        if ids.shape[0] not in (1, len(prompts)):
            raise ValueError(f"{ids.shape[0]} sizes/crops for {len(prompts)} prompts: give one pair, or one per prompt")
        ids = ids.expand(len(prompts), N_TIME_IDS)  # (B, 6)
        (cond, pooled), negative = self.encode_prompts(prompts, negative_prompts, guidance)
        added = {"text_embeds": pooled, "time_ids": ids}
        if negative is None:
            return cond, None, added, None
        uncond, pooled_uncond = negative
        return cond, uncond, added, {"text_embeds": pooled_uncond, "time_ids": ids}  # the same ids on both branches


# ----------------------------------------------------------------------------- diffusers-format folders

SDXL_PARTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")


def load_diffusers_sdxl_folder(path: str | Path, image_size: int | None = None) -> SDXLTextToImage:
    """An SDXL base folder in diffusers format, read into the course's modules and `SDXLTextToImage`.

    Reads model_index.json (and its force_zeros_for_empty_prompt), unet/, vae/, text_encoder/
    (CLIPTextModel), text_encoder_2/ (CLIPTextModelWithProjection), tokenizer/ and tokenizer_2/
    (their context length and pad token: the course's CLIP tokenizer is the real one) and
    scheduler/ (DDIM-family, or SDXL's EulerDiscreteScheduler, whose betas the course samples with
    DDIM). No diffusers or transformers module builds the course side.

    Args:
        path: the folder `StableDiffusionXLPipeline.save_pretrained` wrote.
        image_size: H = W of the images; default unet sample_size * VAE downsample factor (1024 for SDXL).

    Raises:
        ValueError: a part is missing from model_index.json (e.g. the refiner, which has no text_encoder).
        FileNotFoundError: a part's folder, config or safetensors weights are missing.
    """
    root = Path(path)
    index = _read_json(root / "model_index.json")
    missing = ", ".join(repr(p) for p in SDXL_PARTS if not isinstance(index.get(p), list) or index[p][0] is None)
    if missing:
        raise ValueError(f"{root}/model_index.json has no {missing}: not a StableDiffusionXLPipeline (base) folder")
    for part in SDXL_PARTS:
        if not (root / part).is_dir():
            raise FileNotFoundError(f"{root / part} is missing, though model_index.json lists it")
    first = text_encoder_from_folder(root / "text_encoder", root / "tokenizer")
    second = text_encoder_from_folder(root / "text_encoder_2", root / "tokenizer_2")
    unet, codec = unet_from_folder(root / "unet"), codec_from_folder(root / "vae")
    side = 128 if unet.config.sample_size is None else unet.config.sample_size  # latents per side
    size = side * codec.vae.config.downsample_factor if image_size is None else image_size
    force_zeros = bool(index.get("force_zeros_for_empty_prompt", True))
    text_encoder = DualPromptEncoder(first, second)
    schedule, sampler = schedule_from_folder(root / "scheduler")  # SDXL ships Euler: sampled with course.diffusion.euler
    return SDXLTextToImage(unet, text_encoder, codec, schedule, size, force_zeros, sampler)


# ----------------------------------------------------------------------------- parity with diffusers

SDXL_UNET_PARITY_CONFIG = dict(  # SDXL's shape in miniature: no attention at the top level, then depth 1 and 2
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32, 64), layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 1, 2), attention_head_dim=(1, 2, 4), cross_attention_dim=40,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=24 + N_TIME_IDS * 8, norm_num_groups=8,
)


def parity_sdxl_unet(config: dict | None = None, seed: int = 0) -> float:
    """Max |course - diffusers| of an SDXL-shaped U-Net (text_time added embedding, uneven depth).

    `course.nn.unet.parity_unet` already feeds text_time models pooled text and six time ids; this
    gives it SDXL's shape. config: UNet2DConditionModel arguments (default SDXL_UNET_PARITY_CONFIG).
    """
    return parity_unet(dict(config or SDXL_UNET_PARITY_CONFIG), seed)


_TEXT_2 = dict(vocab_size=49408, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
               max_position_embeddings=77, hidden_act="gelu", projection_dim=24,
               bos_token_id=0, eos_token_id=2, pad_token_id=1)  # bigG's legacy ids: the pooled EOS is argmax(ids)
SDXL_PARITY_CONFIG = dict(  # tiny SDXL parts: widths 32 + 48 = 80 concatenated, P = 24, an 8x8x4 latent, 16x16 images
    unet=dict(SDXL_UNET_PARITY_CONFIG, sample_size=8, block_out_channels=(32, 64),
              down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
              up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
              transformer_layers_per_block=(1, 2), attention_head_dim=(2, 4), cross_attention_dim=32 + 48),
    vae=dict(SD1_PARITY_CONFIG["vae"], force_upcast=False, scaling_factor=0.13025),
    text_encoder=SD1_PARITY_CONFIG["text_encoder"], text_encoder_2=_TEXT_2,
    scheduler_class="DDIMScheduler", scheduler=SD1_PARITY_CONFIG["scheduler"], steps=10, guidance=4.0,
    prompts=SD1_PARITY_CONFIG["prompts"], negative_prompts=SD1_PARITY_CONFIG["negative_prompts"],
    original_size=(24, 40), crop_top_left=(4, 12), target_size=(16, 24),
)


_DIFFUSERS_NAMES = {"negative_prompts": "negative_prompt", "crop_top_left": "crops_coords_top_left"}


def parity_sdxl_pipeline(config: dict | None = None, seed: int = 0, *, folder: str | Path | None = None) -> float:
    """Max |course - diffusers| of a whole SDXL pipeline loaded from one diffusers-format folder.

    StableDiffusionXLPipeline from tiny random parts (weights perturbed so no zero or identity
    initialisation hides a wrong wiring; the second tokenizer pads with "!" as OpenCLIP's; a
    DDIMScheduler by default, or cfg["scheduler_class"] = "EulerDiscreteScheduler", SDXL's own) is saved, loaded with diffusers (local files only) and
    with `load_diffusers_sdxl_folder`, and both run from the same latents with guidance > 1:
    with negative prompts and non-default sizes and crop, then with no negative prompts
    (force_zeros_for_empty_prompt: zeros as uncond) and default sizes.

    Args:
        config: overrides of SDXL_PARITY_CONFIG's keys.
        seed: seeds the weights and the starting latents.
        folder: where to save the pipeline (default: a temporary folder, removed afterwards).

    Returns:
        The largest max |image difference| (images in [0, 1]) or max |final latent difference|.
    """
    import copy
    import tempfile

    import diffusers
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig as HFCLIPTextConfig
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from course.nn.clip_text import clip_tokenizer

    cfg = {**SDXL_PARITY_CONFIG, **(config or {})}
    torch.manual_seed(seed)
    parts = dict(unet=UNet2DConditionModel(**cfg["unet"]), vae=AutoencoderKL(**cfg["vae"]),
                 text_encoder=CLIPTextModel(HFCLIPTextConfig(**cfg["text_encoder"])),
                 text_encoder_2=CLIPTextModelWithProjection(HFCLIPTextConfig(**cfg["text_encoder_2"])))
    with torch.no_grad():
        for module in parts.values():
            for p in module.parameters():
                p.add_(0.02 * torch.randn_like(p))
    tokenizer, tokenizer_2 = copy.deepcopy(clip_tokenizer()), copy.deepcopy(clip_tokenizer())  # not the cached one
    tokenizer.model_max_length = tokenizer_2.model_max_length = cfg["text_encoder"]["max_position_embeddings"]
    tokenizer_2.pad_token = "!"  # OpenCLIP's pad token, id 0
    ref = StableDiffusionXLPipeline(**parts, tokenizer=tokenizer, tokenizer_2=tokenizer_2,
                                    scheduler=getattr(diffusers, cfg["scheduler_class"])(**cfg["scheduler"]),
                                    add_watermarker=False)
    prompts, negatives = list(cfg["prompts"]), list(cfg["negative_prompts"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(folder or tmp)
        ref.save_pretrained(path, safe_serialization=True)
        ref = StableDiffusionXLPipeline.from_pretrained(path, local_files_only=True, add_watermarker=False)
        ours = load_diffusers_sdxl_folder(path)
    ref.set_progress_bar_config(disable=True)
    size = ours.image_size
    latents = torch.randn((len(prompts), *ours.latent_shape), generator=torch.Generator().manual_seed(seed))
    sizes = {k: tuple(cfg[k]) for k in ("original_size", "crop_top_left", "target_size")}
    diffs = []
    for our_kw in (dict(negative_prompts=negatives, **sizes), {}):  # {}: zeros as uncond; sizes (H, W), crop (0, 0)
        ref_kw = {_DIFFUSERS_NAMES.get(k, k): v for k, v in our_kw.items()}
        common = dict(num_inference_steps=cfg["steps"], guidance_scale=cfg["guidance"], height=size, width=size,
                      **ref_kw)
        with torch.no_grad():
            expected = ref(prompts, latents=latents.clone(), output_type="np", **common).images  # (B, H, W, 3), [0, 1]
            expected_z = ref(prompts, latents=latents.clone(), output_type="latent", **common).images  # (B, C, h, w)
        got_z = ours.sample_latents(prompts, steps=cfg["steps"], guidance=cfg["guidance"], latents=latents, **our_kw)
        with torch.no_grad():
            got = (ours.codec.decode(got_z) / 2 + 0.5).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3) in [0, 1]
        saturated = float(((expected <= 0) | (expected >= 1)).mean())
        if saturated > 0.5:
            raise RuntimeError(f"{saturated:.0%} of the reference pixels are clipped: the comparison proves little")
        diffs += [float(np.abs(got - expected).max()), float((got_z - expected_z).abs().max())]
    return max(diffs)


# ----------------------------------------------------------------------------- the real models' sizes

# The public unet/config.json values of stabilityai/stable-diffusion-xl-base-1.0 (UNet2DConditionModel arguments).
SDXL_BASE_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280), layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),  # the 1 is unused (no attention at level 0): Tab. 1's [0, 2, 10]
    attention_head_dim=(5, 10, 20), cross_attention_dim=2048,  # attention HEADS (the diffusers misnomer): head dim 64
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,  # 1280 pooled + 6 ids * 256
)
# ... and of runwayml/stable-diffusion-v1-5 (the defaults of UNet2DConditionModel otherwise).
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    attention_head_dim=8, cross_attention_dim=768,
)
# SDXL's text encoders are course.nn.clip_text's presets "clip-vit-l-14" and "openclip-vit-bigg-14".


def count_parameters_meta() -> dict[str, float]:
    """Parameter counts of SDXL base's U-Net and text encoders and of SD 1.5's U-Net, built on the meta device.

    Each model is built by diffusers/transformers and by the course on torch's "meta" device:
    shapes without storage, so 3.4 B parameters cost no memory and about a second.

    Returns:
        {"sdxl_unet", "sd15_unet", "sdxl_text_encoder" (CLIP ViT-L/14), "sdxl_text_encoder_2"
        (bigG with projection), "sdxl_text_encoders" (both): the reference counts; the same keys
        prefixed "course_" for the course's modules; "sdxl_over_sd15_unet": the ratio}.

    Ref: Podell et al. 2023, Sec. 2.1 and Tab. 1 (2.6 B U-Net parameters, 817 M in the text encoders).
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig as HFCLIPTextConfig
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from course.nn.clip_text import PRESETS as TEXT_PRESETS
    from course.nn.unet import config_from_diffusers

    def n(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    text = {"sdxl_text_encoder": TEXT_PRESETS["clip-vit-l-14"],  # CLIPTextModel
            "sdxl_text_encoder_2": TEXT_PRESETS["openclip-vit-bigg-14"]}  # CLIPTextModelWithProjection
    out: dict[str, float] = {}
    with torch.device("meta"):
        for name, unet in (("sdxl_unet", SDXL_BASE_UNET), ("sd15_unet", SD15_UNET)):
            out[name] = n(UNet2DConditionModel(**unet))
            out[f"course_{name}"] = n(UNet(config_from_diffusers(unet)))
        for name, c in text.items():
            hf = HFCLIPTextConfig(**{k: v for k, v in asdict(c).items() if v is not None})
            out[name] = n((CLIPTextModelWithProjection if c.projection_dim else CLIPTextModel)(hf))
            out[f"course_{name}"] = n(CLIPTextTransformer(c))
    for prefix in ("", "course_"):
        out[f"{prefix}sdxl_text_encoders"] = out[f"{prefix}sdxl_text_encoder"] + out[f"{prefix}sdxl_text_encoder_2"]
    out["sdxl_over_sd15_unet"] = out["sdxl_unet"] / out["sd15_unet"]
    return out
