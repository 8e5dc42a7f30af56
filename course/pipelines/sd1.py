"""Stable Diffusion 1.x / 2.x: the prompt encoder, and the loader of real diffusers folders.

Stable Diffusion 1.x is three frozen-or-trained parts and a sampler (Rombach et al. 2022, Sec. 3.3):

    prompt --CLIP tokenizer--> ids (B, T) --CLIP text encoder--> cond (B, T, D)   (last hidden state)
    noise (B, 4, h, w) --U-Net(xt, t, cond), guided DDIM--> z0 --VAE decoder--> image (B, 3, 8h, 8w)

`PromptEncoder` is the first line (tokenizer + text transformer, the unconditional prompt for
guidance); `course.pipelines.base.TextToImage` is the second. `load_diffusers_folder(path)` reads
a StableDiffusionPipeline folder (model_index.json, each part's config and safetensors weights)
into the course's own modules and pipeline, eps or v prediction (SD 2.x's 768-v models);
`parity_sd1_pipeline` proves that it makes the same images as diffusers. The course's own
`sd1-shapes` is trained in `course.recipes.sd1_shapes`.

Shape letters: B batch, C latent channels, h, w latent size, T tokens, D text width.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from course.diffusion import ddpm
from course.nn.clip_text import EOS_ID, CLIPTextConfig, CLIPTextTransformer, tokenize
from course.nn.unet import UNet
from course.pipelines.base import TextToImage

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

    def check_prompts(self, prompts: list[str]) -> list[str]:
        """What this encoder will not read as written, one sentence per problem (empty when all is well).

        Two things are silent in the encoder itself: a word outside a cut vocabulary (clip-shapes knows
        only the Shapes words) becomes the one "unknown" row, and a prompt longer than the context
        is cut after T - 2 word pieces (BOS and EOS take the other two).
        """
        from course.nn.clip_text import clip_tokenizer

        tokenizer = clip_tokenizer()
        problems = []
        for prompt in dict.fromkeys(prompts):  # each distinct prompt once
            ids = tokenizer(prompt, truncation=False)["input_ids"]  # BOS, word pieces, EOS
            if len(ids) > self.context_length:
                kept = tokenizer.decode(ids[1:self.context_length - 1])
                problems.append(f"the prompt {prompt[:40]!r}... has {len(ids) - 2} word pieces, the text encoder reads "
                                f"{self.context_length - 2}: it is cut after {kept!r}")
            if self.id_to_row is not None:
                rows = self.id_to_row[torch.tensor(ids[:self.context_length])].tolist()
                unknown = [tokenizer.convert_ids_to_tokens(t).replace("</w>", "") for t, r in
                           zip(ids[:self.context_length], rows) if r == 0]
                if unknown:
                    words = ", ".join(dict.fromkeys(unknown))
                    problems.append(f"the prompt {prompt!r} has words this text encoder was not trained on: {words}; "
                                    "each reads as the one 'unknown' token. Its vocabulary is the Shapes world's "
                                    "(course.world.shapes.VOCABULARY)")
        return problems

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> torch.Tensor:
        """B prompts -> (B, T, D) final-LayerNorm states of every token (padding included, as SD)."""
        return self.transformer(self.token_ids(prompts)).last_hidden_state  # (B, T, D)


def prompt_encoder_from_clip(clip) -> PromptEncoder:
    """The text tower of a `course.nn.mini_clip.MiniClip` (clip-shapes), frozen."""
    encoder = PromptEncoder(clip.text_encoder, clip.config.context_length, clip.id_to_row)
    return encoder.eval().requires_grad_(False)


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
    from course.nn.unet import config_from_diffusers

    unet = UNet(config_from_diffusers(_read_json(folder / "config.json")))
    unet.load_state_dict(_weights(folder, ("diffusion_pytorch_model.safetensors",)), strict=True)
    return unet.eval()


def codec_from_folder(folder: Path) -> nn.Module:
    """vae/ of a diffusers pipeline folder as a LatentCodec that decodes z / scaling_factor, as SD's pipelines do."""
    from course.nn.codec import LatentCodec
    from course.nn.vae import VAE, config_from_diffusers, diffusers_key_to_course

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
    from course.nn.clip_text import _renamed, clip_tokenizer

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
    DDIM; SDXL ships an EulerDiscreteScheduler, sampled with `course.diffusion.euler`. Where an Euler config
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
            raise NotImplementedError(f"EulerDiscreteScheduler with {key}={cfg[key]!r}: course.diffusion.euler implements {default!r}")
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
    side = 64 if unet.config.sample_size is None else unet.config.sample_size  # latents per side
    size = side * codec.vae.config.downsample_factor if image_size is None else image_size
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
    from transformers import CLIPTextConfig as HFCLIPTextConfig
    from transformers import CLIPTextModel

    from course.nn.clip_text import clip_tokenizer

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
