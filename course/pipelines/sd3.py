"""Chapter 09: the Stable Diffusion 3 sampler on the course's parts, and a loader for SD3 / SD3.5 folders.

SD3 (Esser et al. 2024) is text -> MM-DiT -> flow Euler with guidance -> VAE decoder:

    prompt --CLIP-L-->  penultimate states (B, 77, D1), pooled (B, P1)
           --CLIP-G-->  penultimate states (B, 77, D2), pooled (B, P2)
           --T5-XXL-->  last states (B, L, E)
    context = [ pad_E(CLIP-L || CLIP-G on channels) ; T5 ] on the sequence axis   (B, 77 + L, E)
    pooled  = CLIP-L pooled || CLIP-G pooled                                     (B, P1 + P2 = 2048)
    noise (B, 16, h, w) --MM-DiT v(xt, t*1000, context, pooled), CFG, Euler on shifted sigmas--> z0
    image = VAE.decode(z0 / scaling_factor + shift_factor)

The paper joins 77 CLIP and 77 T5 tokens (154); diffusers' pipeline defaults to L = 256 T5 tokens
(`max_sequence_length`), as here. Each encoder can be left out (SD3 was trained with each
one dropped independently 46.3% of the time, so T5's 4.7 B parameters can stay on disk at
inference): its states and pooled vector become zeros of the same shape, as diffusers does for T5.

`load_diffusers_sd3_folder(path)` reads a StableDiffusion3Pipeline folder (SD3-medium, SD3.5) into
the course's modules (`course.nn.mmdit`, `course.nn.clip_text`, `course.nn.t5`, `course.nn.vae`);
`parity_sd3_pipeline` proves that it makes diffusers' images from a saved tiny random pipeline.

Shape letters: B batch, C latent channels, h, w latent size, S text tokens, L T5 tokens, D1, D2
CLIP widths, P1, P2 their pooled widths, E the context width.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course.diffusion import ddpm, flow
from course.nn.mmdit import MMDiT
from course.nn.t5 import T5Encoder
from course.pipelines.base import TextToImage, cfg_combine, check_finite
from course.pipelines.sd1 import PromptEncoder, _read_json, text_encoder_from_folder

ENCODERS = ("clip_l", "clip_g", "t5")  # the three text encoders, in SD3's order
T5_LENGTH = 256  # diffusers' max_sequence_length (the paper: 77)
STEPS, GUIDANCE = 28, 7.0  # diffusers' StableDiffusion3Pipeline defaults


# ----------------------------------------------------------------------------- text
class T5PromptEncoder(nn.Module):
    """Prompts -> T5's last states (B, L, E): a `tokenizers` Unigram tokenizer + the course's T5 encoder.

    Args:
        encoder: the T5 encoder.
        tokenizer: a `tokenizers.Tokenizer` (tokenizer.json of the folder; it appends </s>).
        pad_id: the padding id (T5's <pad> = 0).
    """

    def __init__(self, encoder: T5Encoder, tokenizer, pad_id: int = 0):
        super().__init__()
        self.encoder, self.tokenizer, self.pad_id = encoder, tokenizer, pad_id

    @property
    def width(self) -> int:
        return self.encoder.config.d_model

    def token_ids(self, prompts: list[str], length: int) -> torch.Tensor:
        """(B, L): each prompt's pieces and </s>, cut to L, padded with <pad> (as diffusers' max_length padding)."""
        rows = []
        for enc in self.tokenizer.encode_batch(list(prompts)):
            ids = enc.ids
            if len(ids) > length:  # keep the end-of-sequence token, as transformers' truncation does
                ids = ids[:length - 1] + ids[-1:]
            rows.append(ids + [self.pad_id] * (length - len(ids)))
        return torch.tensor(rows, dtype=torch.long, device=self.encoder.embed.weight.device)

    def check_prompts(self, prompts: list[str], length: int) -> list[str]:
        return [f"the prompt {p[:40]!r}... has {n - 1} T5 pieces, T5 reads {length - 1}: the rest is cut"
                for p in dict.fromkeys(prompts) if (n := len(self.tokenizer.encode(p).ids)) > length]

    @torch.no_grad()
    def forward(self, prompts: list[str], length: int = T5_LENGTH) -> torch.Tensor:
        return self.encoder(self.token_ids(prompts, length))  # (B, L, E), no mask: SD3 reads the pads too


class SD3PromptEncoder(nn.Module):
    """Prompts -> SD3's conditioning: context (B, S + L, E) and pooled (B, P1 + P2); any encoder may be None.

    A missing (dropped) encoder contributes zeros of its shape, as SD3 was trained with.

    Args:
        clip_l, clip_g: `sd1.PromptEncoder`s of two CLIP text models with projection, or None.
        t5: a `T5PromptEncoder`, or None.
        clip_widths: ((D1, P1), (D2, P2)): state and pooled widths of the two CLIPs (needed for zeros).
        context_dim: E, the MM-DiT's context width (T5's width; the CLIP states are zero-padded to it).
        clip_length: S, the CLIP tokens (77).
        t5_length: L, the T5 tokens (diffusers' max_sequence_length, 256).

    Ref: Esser et al. 2024 (the three text encoders); diffusers StableDiffusion3Pipeline.encode_prompt.
    """

    def __init__(self, clip_l: PromptEncoder | None, clip_g: PromptEncoder | None, t5: T5PromptEncoder | None, *,
                 clip_widths: tuple[tuple[int, int], tuple[int, int]], context_dim: int, clip_length: int = 77,
                 t5_length: int = T5_LENGTH):
        super().__init__()
        if sum(d for d, _ in clip_widths) > context_dim:
            raise ValueError(f"the CLIP states ({clip_widths[0][0]} + {clip_widths[1][0]} channels) are wider than the "
                             f"context width {context_dim} they are zero-padded to")
        for name, enc in (("clip_l", clip_l), ("clip_g", clip_g)):
            if enc is not None and enc.transformer.text_projection is None:
                raise ValueError(f"{name} needs a text projection: SD3's pooled vector is its text_embeds")
        if t5 is not None and t5.width != context_dim:
            raise ValueError(f"T5's width {t5.width} must equal the context width {context_dim}")
        self.clip_l, self.clip_g, self.t5 = clip_l, clip_g, t5
        self.clip_widths, self.context_dim = tuple(tuple(w) for w in clip_widths), context_dim
        self.clip_length, self.t5_length = clip_length, t5_length
        self.eval().requires_grad_(False)

    @property
    def present(self) -> tuple[str, ...]:
        """The encoders that are loaded (the others give zeros)."""
        return tuple(n for n in ENCODERS if getattr(self, n) is not None)

    @property
    def pooled_width(self) -> int:
        return sum(p for _, p in self.clip_widths)

    def check_prompts(self, prompts: list[str]) -> list[str]:
        problems = [p for e in (self.clip_l, self.clip_g) if e is not None for p in e.check_prompts(prompts)]
        problems += self.t5.check_prompts(prompts, self.t5_length) if self.t5 is not None else []
        return list(dict.fromkeys(problems))

    def _device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """B prompts -> (context (B, S + L, E), pooled (B, P1 + P2))."""
        B, device = len(prompts), self._device()
        states, pooled = [], []
        for enc, (D, P) in zip((self.clip_l, self.clip_g), self.clip_widths):
            if enc is None:
                states.append(torch.zeros(B, self.clip_length, D, device=device))
                pooled.append(torch.zeros(B, P, device=device))
                continue
            out = enc.transformer(enc.token_ids(prompts))
            states.append(out.penultimate)  # (B, S, D_i): second-to-last layer, no final LayerNorm
            pooled.append(out.text_embeds)  # (B, P_i): projected EOS state
        clip = torch.cat(states, dim=-1)  # (B, S, D1 + D2)
        clip = F.pad(clip, (0, self.context_dim - clip.shape[-1]))  # (B, S, E): zeros in the missing channels
        t5 = (torch.zeros(B, self.t5_length, self.context_dim, device=device) if self.t5 is None
              else self.t5(prompts, self.t5_length))  # (B, L, E)
        return torch.cat([clip, t5], dim=1), torch.cat(pooled, dim=-1)  # (B, S + L, E), (B, P1 + P2)


# ----------------------------------------------------------------------------- the sampler
def sd3_sigmas(steps: int, shift: float, dynamic: dict | None = None, image_tokens: int | None = None) -> torch.Tensor:
    """The sampler's sigma grid (steps + 1,): FlowMatchEulerDiscreteScheduler's, statically or dynamically shifted.

    Args:
        steps: Euler steps.
        shift: SD3's shift (3.0 for SD3 / SD3.5 at 1024 px; Eq. 23).
        dynamic: the scheduler's dynamic-shift settings (base_image_seq_len, max_image_seq_len,
            base_shift, max_shift), or None for the static shift.
        image_tokens: the MM-DiT's image tokens, which set mu for the dynamic shift.
    """
    if dynamic is None:
        return flow.flow_sigmas(steps, shift=shift)
    mu = flow.calculate_shift(image_tokens, dynamic["base_image_seq_len"], dynamic["max_image_seq_len"],
                              dynamic["base_shift"], dynamic["max_shift"])
    return flow.flow_sigmas(steps, mu=mu)


class SD3TextToImage(TextToImage):
    """SD3 text-to-image: three text encoders, the MM-DiT's guided velocity, flow Euler with shift, VAE decoder.

    `generate` and `sample_latents` take TextToImage's prompts, steps (28), guidance (7.0), seed,
    negative_prompts, latents and size, plus `shift` (default the folder's scheduler shift).
    img2img is not part of the course's SD3.

    Args:
        transformer: the MM-DiT.
        text_encoder: an `SD3PromptEncoder`.
        codec: a LatentCodec whose (shift, scale) are the VAE's (shift_factor, scaling_factor).
        image_size: H = W of the images by default.
        shift: the sigma shift of the scheduler.
        dynamic_shift: the scheduler's dynamic-shift settings, or None.
        num_train_timesteps: the MM-DiT reads t = sigma * num_train_timesteps.

    Ref: Esser et al. 2024, Eq. 23 (the shift) and Sec. 4 (MM-DiT); Ho & Salimans 2022 (CFG).
    """

    def __init__(self, transformer: MMDiT, text_encoder: SD3PromptEncoder, codec: nn.Module, image_size: int, *,
                 shift: float = 3.0, dynamic_shift: dict | None = None, num_train_timesteps: int = 1000):
        cfg = transformer.config
        if cfg.context_dim != text_encoder.context_dim or cfg.pooled_dim != text_encoder.pooled_width:
            raise ValueError(f"the MM-DiT reads context width {cfg.context_dim} and pooled {cfg.pooled_dim}; the text "
                             f"encoders give {text_encoder.context_dim} and {text_encoder.pooled_width}")
        if cfg.in_channels != codec.vae.config.latent_channels:
            raise ValueError(f"the MM-DiT takes {cfg.in_channels} channels, the VAE's latent has "
                             f"{codec.vae.config.latent_channels}")
        super().__init__(transformer, text_encoder, codec, None, image_size, sampler="euler")
        self.transformer = transformer
        self.shift, self.dynamic_shift, self.num_train_timesteps = float(shift), dynamic_shift, num_train_timesteps

    @property
    def size_multiple(self) -> int:
        """Sides are multiples of the VAE's factor x the patch size (16 px for SD3)."""
        return self.codec.vae.config.downsample_factor * self.transformer.config.patch_size

    @property
    def max_size(self) -> int:
        """The position grid's reach: pos_embed_max_size patches per side."""
        cfg = self.transformer.config
        return min(cfg.pos_embed_max_size * self.size_multiple, 4 * self.image_size)

    def estimate_bytes(self, batch: int, size: tuple[int, int], guidance: float) -> int:
        """Activations and attention scores of one MM-DiT call (float32): rough upper bound."""
        cfg, m = self.transformer.config, self.size_multiple
        n = batch * (2 if guidance != 1.0 else 1)
        tokens = (size[0] // m) * (size[1] // m) + self.text_encoder.clip_length + self.text_encoder.t5_length
        return int(4 * n * (16 * cfg.hidden_size * tokens + 2 * cfg.num_heads * tokens * tokens))

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], negative_prompts: list[str] | None, guidance: float):
        """((context, pooled), (context, pooled) of the negative or empty prompts, or None at guidance 1)."""
        cond = self.text_encoder(list(prompts))
        if guidance == 1.0:
            return cond, None
        return cond, self.text_encoder(list(negative_prompts) if negative_prompts is not None else [""] * len(prompts))

    def velocity_fn(self, cond, uncond, guidance: float):
        """v_fn(x (B, C, h, w), sigma (B,)) -> guided velocity, one MM-DiT pass over [uncond; cond]."""
        (context, pooled), T = cond, self.num_train_timesteps

        def v_fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            t = sigma.to(x.device) * T  # (B,): the MM-DiT's timestep
            if uncond is None:
                return self.transformer(x, t, context, pooled)
            v_uncond, v_cond = self.transformer(torch.cat([x, x]), torch.cat([t, t]), torch.cat([uncond[0], context]),
                                                torch.cat([uncond[1], pooled])).chunk(2)  # (B, C, h, w) each
            return cfg_combine(v_uncond, v_cond, guidance)  # guidance on the velocity, as on eps
        return v_fn

    @torch.no_grad()
    def sample_latents(self, prompts: list[str], *, steps: int = STEPS, guidance: float = GUIDANCE, seed: int = 0,
                       negative_prompts: list[str] | None = None, latents: torch.Tensor | None = None,
                       size: tuple[int, int] | None = None, shift: float | None = None, eta: float = 0.0,
                       init_images=None, strength: float = 1.0, sampler: str | None = None, init_latents=None
                       ) -> torch.Tensor:
        """The clean latents z0 (B, C, h, w): flow Euler from noise at sigma = 1 to sigma = 0."""
        if init_images is not None or init_latents is not None or strength != 1.0:
            raise NotImplementedError("img2img is not part of the course's SD3 sampler: generate from noise "
                                      "(or use an SD 1.x / SDXL pipeline's init_images)")
        if sampler not in (None, "euler"):
            raise ValueError(f"SD3 samples with the flow Euler sampler; got sampler={sampler!r}")
        shift = self.shift if shift is None else shift
        if not (isinstance(shift, (int, float)) and np.isfinite(shift) and shift > 0):
            raise ValueError(f"shift must be a positive number (SD3 uses 3.0; 1.0 = no shift), got {shift!r}")
        self._check(prompts, negative_prompts, steps, guidance, "euler", eta, seed)
        H, W = self._size(size)
        self._check_memory(len(prompts), (H, W), guidance)
        device, B, f = self._device(), len(prompts), self.codec.vae.config.downsample_factor
        cond, uncond = self.encode_prompts(prompts, negative_prompts, guidance)
        cond = tuple(c.to(device) for c in cond)
        uncond = None if uncond is None else tuple(c.to(device) for c in uncond)
        shape = (B, self.latent_shape[0], H // f, W // f)  # (B, C, h, w)
        if latents is not None and tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape} (B, C, h, w) for {B} prompts at {H}x{W}px, "
                             f"got {tuple(latents.shape)}")
        generator = torch.Generator().manual_seed(seed)
        noise = ddpm._randn(shape, generator, device) if latents is None else latents.to(device)  # x at sigma = 1
        p = self.transformer.config.patch_size
        sigmas = sd3_sigmas(steps, shift, self.dynamic_shift, (shape[2] // p) * (shape[3] // p))  # (steps + 1,)
        z0 = flow.sample(self.velocity_fn(cond, uncond, guidance), noise, sigmas, solver="euler")
        return check_finite(z0, "the latents")


# ----------------------------------------------------------------------------- diffusers-format folders
SD3_PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
_FOLDERS = {"clip_l": ("text_encoder", "tokenizer"), "clip_g": ("text_encoder_2", "tokenizer_2"),
            "t5": ("text_encoder_3", "tokenizer_3")}


def _safetensors(folder: Path, stem: str) -> dict[str, torch.Tensor]:
    """`stem`.safetensors, or its shards listed in `stem`.safetensors.index.json (real SD3 / T5-XXL are sharded)."""
    from safetensors.torch import load_file

    single, index = folder / f"{stem}.safetensors", folder / f"{stem}.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        out: dict[str, torch.Tensor] = {}
        for shard in shards:
            out.update(load_file(str(folder / shard)))
        return out
    raise FileNotFoundError(f"no {single.name} or {index.name} in {folder}: save the pipeline with safe_serialization=True")


def transformer_from_folder(folder: Path) -> MMDiT:
    """transformer/ (SD3Transformer2DModel config.json + safetensors) as the course's MM-DiT."""
    from course.nn.mmdit import config_from_diffusers, state_dict_from_diffusers

    model = MMDiT(config_from_diffusers(_read_json(folder / "config.json")))
    model.load_state_dict(state_dict_from_diffusers(_safetensors(folder, "diffusion_pytorch_model")), strict=True)
    return model.eval().requires_grad_(False)


def sd3_codec_from_folder(folder: Path) -> nn.Module:
    """vae/ as a LatentCodec: z = (z_vae - shift_factor) * scaling_factor (SD3: 0.0609, 1.5305; 16 channels)."""
    from course.nn.codec import LatentCodec
    from course.nn.vae import VAE, config_from_diffusers, diffusers_key_to_course

    cfg = _read_json(folder / "config.json")
    if cfg.get("latents_mean") is not None or cfg.get("latents_std") is not None:
        raise NotImplementedError("a VAE with latents_mean/latents_std: SD3's VAE uses shift_factor and scaling_factor")
    vae = VAE(config_from_diffusers(cfg))
    vae.load_state_dict({diffusers_key_to_course(k): v for k, v in _safetensors(folder, "diffusion_pytorch_model").items()},
                        strict=True)
    c, side = vae.config.latent_channels, int(cfg.get("sample_size") or 1024)
    return LatentCodec(vae, torch.full((c,), float(vae.config.shift_factor)),
                       torch.full((c,), float(vae.config.scaling_factor)), image_size=side).eval().requires_grad_(False)


def t5_from_folder(folder: Path, tokenizer_folder: Path) -> T5PromptEncoder:
    """text_encoder_3/ (T5EncoderModel) and tokenizer_3/ (its tokenizer.json, or spiece.model via transformers)."""
    from course.nn.t5 import T5Encoder, config_from_transformers, state_dict_from_transformers

    encoder = T5Encoder(config_from_transformers(_read_json(folder / "config.json")))
    encoder.load_state_dict(state_dict_from_transformers(_safetensors(folder, "model")), strict=True)
    if (tokenizer_folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_folder / "tokenizer.json"))
    else:  # only spiece.model: let transformers convert the SentencePiece model (reads the file, no download)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder), local_files_only=True)._tokenizer
    tokenizer.no_padding()
    tokenizer.no_truncation()
    pad = tokenizer.token_to_id("<pad>")
    return T5PromptEncoder(encoder.eval().requires_grad_(False), tokenizer, 0 if pad is None else pad)


def scheduler_from_folder(folder: Path) -> tuple[float, dict | None, int]:
    """scheduler/: (shift, dynamic-shift settings or None, num_train_timesteps) of a FlowMatchEulerDiscreteScheduler."""
    cfg = _read_json(folder / "scheduler_config.json")
    if cfg.get("_class_name") != "FlowMatchEulerDiscreteScheduler":
        raise NotImplementedError(f"scheduler {cfg.get('_class_name')!r}: SD3 folders ship FlowMatchEulerDiscreteScheduler")
    unsupported = dict(invert_sigmas=False, shift_terminal=None, use_karras_sigmas=False, use_exponential_sigmas=False,
                       use_beta_sigmas=False, stochastic_sampling=False, time_shift_type="exponential")
    for key, default in unsupported.items():
        if cfg.get(key, default) != default:
            raise NotImplementedError(f"FlowMatchEulerDiscreteScheduler with {key}={cfg[key]!r}: the course "
                                      f"implements {default!r}")
    dynamic = None
    if cfg.get("use_dynamic_shifting", False):
        dynamic = dict(base_image_seq_len=cfg.get("base_image_seq_len", 256),
                       max_image_seq_len=cfg.get("max_image_seq_len", 4096),
                       base_shift=cfg.get("base_shift", 0.5), max_shift=cfg.get("max_shift", 1.15))
    return float(cfg.get("shift", 1.0)), dynamic, int(cfg.get("num_train_timesteps", 1000))


def load_diffusers_sd3_folder(path: str | Path, image_size: int | None = None, drop: tuple[str, ...] = (),
                              t5_length: int = T5_LENGTH) -> SD3TextToImage:
    """An SD3 / SD3.5 folder in diffusers format, read into the course's modules and `SD3TextToImage`.

    Reads model_index.json, transformer/, vae/, text_encoder/ and text_encoder_2/ (CLIP with
    projection), text_encoder_3/ (T5; optional), the tokenizers' settings (the course's CLIP
    tokenizer is the real one; T5's tokenizer.json) and scheduler/. No diffusers or transformers
    model builds the course side. In float32, SD3-medium's parts take about 8 GB (MM-DiT), 3 GB
    (the CLIPs) and 19 GB (T5): drop=("t5",) leaves T5 on disk, as SD3's paper suggests.

    Args:
        path: the folder `StableDiffusion3Pipeline.save_pretrained` wrote (or a downloaded snapshot).
        image_size: H = W of the images; default transformer sample_size * VAE factor (1024 for SD3).
        drop: encoders not to load, of "clip_l", "clip_g", "t5": zeros take their place.
            A folder saved without T5 drops it by itself.
        t5_length: L, the T5 tokens (diffusers' max_sequence_length).

    Raises:
        ValueError: not an SD3 folder, or an unknown encoder name in `drop`.
        FileNotFoundError: a part's folder, config or weights are missing.
    """
    unknown = [d for d in drop if d not in ENCODERS]
    if unknown:
        raise ValueError(f"cannot drop {unknown}: the encoders are {ENCODERS}")
    root = Path(path)
    index = _read_json(root / "model_index.json")
    missing = ", ".join(repr(p) for p in SD3_PARTS if not isinstance(index.get(p), list) or index[p][0] is None)
    if missing:
        raise ValueError(f"{root}/model_index.json has no {missing}: not a StableDiffusion3Pipeline folder")
    has_t5 = isinstance(index.get("text_encoder_3"), list) and index["text_encoder_3"][0] is not None
    drop = tuple(drop) + (() if has_t5 else ("t5",))
    for part in SD3_PARTS + (("text_encoder_3", "tokenizer_3") if "t5" not in drop else ()):
        if not (root / part).is_dir():
            raise FileNotFoundError(f"{root / part} is missing, though model_index.json lists it")
    transformer = transformer_from_folder(root / "transformer")
    codec = sd3_codec_from_folder(root / "vae")
    clips, widths = {}, []
    for name in ("clip_l", "clip_g"):
        enc_dir, tok_dir = (root / p for p in _FOLDERS[name])
        cfg = _read_json(enc_dir / "config.json")
        widths.append((cfg["hidden_size"], cfg["projection_dim"]))
        clips[name] = None if name in drop else text_encoder_from_folder(enc_dir, tok_dir)
    t5 = None if "t5" in drop else t5_from_folder(root / "text_encoder_3", root / "tokenizer_3")
    clip_length = next((c.context_length for c in clips.values() if c is not None), 77)
    text = SD3PromptEncoder(clips["clip_l"], clips["clip_g"], t5, clip_widths=tuple(widths),
                            context_dim=transformer.config.context_dim, clip_length=clip_length, t5_length=t5_length)
    shift, dynamic, T = scheduler_from_folder(root / "scheduler")
    size = transformer.config.sample_size * codec.vae.config.downsample_factor if image_size is None else image_size
    return SD3TextToImage(transformer, text, codec, size, shift=shift, dynamic_shift=dynamic, num_train_timesteps=T)


# ----------------------------------------------------------------------------- parity with diffusers
PARITY_DEFAULT_CONFIG = dict(  # SD3's shape in miniature: 16-channel VAE, three encoders, a 2-block MM-DiT
    transformer=dict(sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
                     num_attention_heads=2, joint_attention_dim=48, caption_projection_dim=16,
                     pooled_projection_dim=40, pos_embed_max_size=8, qk_norm="rms_norm", dual_attention_layers=(0,)),
    vae=dict(in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1, latent_channels=16,
             norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
             sample_size=16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
             use_post_quant_conv=False),
    text_encoder=dict(vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, max_position_embeddings=77, projection_dim=16, eos_token_id=49407,
                      bos_token_id=49406, pad_token_id=49407),
    text_encoder_2=dict(vocab_size=49408, hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=77, projection_dim=24, eos_token_id=49407,
                        bos_token_id=49406, pad_token_id=49407),
    text_encoder_3=dict(vocab_size=96, d_model=48, d_kv=8, d_ff=64, num_layers=2, num_heads=6,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16,
                        feed_forward_proj="gated-gelu", decoder_start_token_id=0),
    scheduler=dict(num_train_timesteps=1000, shift=3.0),
    t5_length=16, steps=6, guidance=4.0, shifts=(3.0, 1.0),
    prompts=("a red circle in the top left", "a large blue square and a small green triangle"),
    negative_prompts=("a yellow square", "a purple circle"),
)


def build_tiny_sd3_folder(path: str | Path, config: dict | None = None, seed: int = 0) -> dict:
    """Save a tiny random StableDiffusion3Pipeline (real CLIP BPE, a hand-written T5 vocabulary) to `path`.

    Weights are perturbed from their init so that no zero or identity hides a wrong wiring.
    Returns the merged config.
    """
    import copy

    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig as HFCLIPTextConfig
    from transformers import CLIPTextModelWithProjection, T5EncoderModel
    from transformers import T5Config as HFT5Config

    from course.nn.clip_text import clip_tokenizer
    from course.nn.t5 import tiny_t5_tokenizer

    cfg = {**PARITY_DEFAULT_CONFIG, **(config or {})}
    torch.manual_seed(seed)
    parts = dict(transformer=SD3Transformer2DModel(**cfg["transformer"]), vae=AutoencoderKL(**cfg["vae"]),
                 text_encoder=CLIPTextModelWithProjection(HFCLIPTextConfig(**cfg["text_encoder"])),
                 text_encoder_2=CLIPTextModelWithProjection(HFCLIPTextConfig(**cfg["text_encoder_2"])),
                 text_encoder_3=T5EncoderModel(HFT5Config(**cfg["text_encoder_3"])))
    with torch.no_grad():
        for module in parts.values():
            for p in module.parameters():
                p.add_(0.05 * torch.randn_like(p))
    tokenizer, tokenizer_2 = copy.deepcopy(clip_tokenizer()), copy.deepcopy(clip_tokenizer())  # not the cached one
    tokenizer.model_max_length = tokenizer_2.model_max_length = cfg["text_encoder"]["max_position_embeddings"]
    tokenizer_2.pad_token = "!"  # OpenCLIP bigG's pad token, id 0, as SD3's tokenizer_2
    pipe = StableDiffusion3Pipeline(**parts, tokenizer=tokenizer, tokenizer_2=tokenizer_2,
                                    tokenizer_3=tiny_t5_tokenizer(max_length=cfg["t5_length"]),
                                    scheduler=FlowMatchEulerDiscreteScheduler(**cfg["scheduler"]))
    pipe.save_pretrained(path, safe_serialization=True)
    return cfg


def parity_sd3_pipeline(config: dict | None = None, seed: int = 0, *, folder: str | Path | None = None) -> float:
    """Max |course - diffusers| of a whole SD3 pipeline loaded from one diffusers-format folder.

    A tiny random StableDiffusion3Pipeline is saved (`build_tiny_sd3_folder`), loaded with
    diffusers (local files only) and with `load_diffusers_sd3_folder`, and both run from the same
    starting latents: with CFG and negative prompts at the folder's shift (3), without CFG, with
    CFG at shift 1 (no shift), and with T5 dropped (diffusers: text_encoder_3=None).

    Returns:
        The largest max |image difference| (images in [0, 1]) or max |final latent difference|.
    """
    import tempfile

    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(folder or tmp)
        cfg = build_tiny_sd3_folder(path, config, seed)
        ref = StableDiffusion3Pipeline.from_pretrained(path, local_files_only=True)
        ref_no_t5 = StableDiffusion3Pipeline.from_pretrained(path, local_files_only=True, text_encoder_3=None,
                                                             tokenizer_3=None)
        ours = load_diffusers_sd3_folder(path, t5_length=cfg["t5_length"])
        ours_no_t5 = load_diffusers_sd3_folder(path, t5_length=cfg["t5_length"], drop=("t5",))
    prompts, negatives = list(cfg["prompts"]), list(cfg["negative_prompts"])
    latents = torch.randn((len(prompts), *ours.latent_shape), generator=torch.Generator().manual_seed(seed))
    size, w = ours.image_size, cfg["guidance"]
    first, second = cfg["shifts"]
    cases = [(ref, ours, dict(guidance=w, negative_prompts=negatives, shift=first)),
             (ref, ours, dict(guidance=1.0, shift=first)),
             (ref, ours, dict(guidance=w, shift=second)),
             (ref_no_t5, ours_no_t5, dict(guidance=w, shift=first))]
    diffs = []
    for pipe, course_pipe, kw in cases:
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=kw["shift"])
        common = dict(num_inference_steps=cfg["steps"], guidance_scale=kw["guidance"], height=size, width=size,
                      max_sequence_length=cfg["t5_length"], negative_prompt=kw.get("negative_prompts"))
        with torch.no_grad():
            expected = pipe(prompts, latents=latents.clone(), output_type="np", **common).images  # (B, H, W, 3)
            expected_z = pipe(prompts, latents=latents.clone(), output_type="latent", **common).images
        got_z = course_pipe.sample_latents(prompts, steps=cfg["steps"], latents=latents, **kw)
        with torch.no_grad():
            got = (course_pipe.codec.decode(got_z) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        saturated = float(((expected <= 0) | (expected >= 1)).mean())
        if saturated > 0.5:
            raise RuntimeError(f"{saturated:.0%} of the reference pixels are clipped: the comparison proves little")
        diffs += [float(np.abs(got - expected).max()), float((got_z - expected_z).abs().max())]
    return max(diffs)
