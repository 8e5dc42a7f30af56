"""Text (or nothing) in, images out: the course's sampling pipelines behind one interface.

`load(NAME)` gives the pipeline of a named generator (`python -m course list` shows them), its
weights verified against the manifest; `pipe.generate(prompts, steps=..., guidance=..., seed=...)`
returns uint8 images (N, H, W, 3), one per prompt. `python -m course generate` is the same
call, writing PNG files. Chapter 04 adds the text-to-image pipeline `TextToImage` (DDIM,
classifier-free guidance, negative prompts, img2img) below; `course.pipelines.sd1.load_diffusers_folder`
builds one from a Stable Diffusion 1.x folder in diffusers format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn

from course import checkpoints, zoo
from course.diffusion import ddpm, euler


class Pipeline(Protocol):
    default_steps: int  # what `generate` uses when a call gives no steps: the model's recommended number
    default_guidance: float  # the same for the guidance scale (1.0 for unconditional models)

    def generate(self, prompts: list[str], *, steps: int | None = None, guidance: float | None = None,
                 seed: int = 0) -> np.ndarray:
        """One uint8 image (H, W, 3) per prompt, stacked (N, H, W, 3); deterministic for a seed.

        steps / guidance None: the model's recommended settings (`default_steps`, `default_guidance`).
        """
        ...


MAX_GUIDANCE = 100.0  # a guidance scale past this only saturates the image (SD's default is 7.5)
MAX_SEED = 2**63 - 1  # seeds are 0 ... 2^63 - 1: torch would fold -1 onto 2^64 - 1 and overflow at 2^64
MAX_SIZE_FACTOR = 4  # text-to-image sizes go up to this many times the trained size, per side


class PromptWarning(UserWarning):
    """A prompt the model will not read as written (unknown words, cut at the context length)."""


def check_guidance(guidance) -> float:
    """The guidance scale as a float, refused unless a finite number in [1, MAX_GUIDANCE]."""
    import math

    if isinstance(guidance, bool) or not isinstance(guidance, (int, float, np.integer, np.floating)):
        raise ValueError(f"guidance must be a number, got {guidance!r}")
    if not math.isfinite(guidance):
        raise ValueError(f"guidance must be a finite number (1 = no guidance; SD uses 7.5), got {guidance}")
    if not 1.0 <= guidance <= MAX_GUIDANCE:
        raise ValueError(f"guidance must be in 1 ... {MAX_GUIDANCE:g} (1 = no guidance, the conditional model alone; "
                         f"SD uses 7.5), got {guidance:g}. w < 1 would mix in the unconditional model, and far above "
                         "10 the image only saturates")
    return float(guidance)


def check_seed(seed) -> int:
    """The seed as an int, refused unless 0 <= seed <= MAX_SEED (2^63 - 1)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer in 0 ... 2^63 - 1, got {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in 0 ... 2^63 - 1 = {MAX_SEED}, got {seed}")
    return int(seed)


def check_finite(x: torch.Tensor, what: str, model: str = "the model") -> torch.Tensor:
    """`x` itself, or a FloatingPointError if it holds NaN or inf (which would decode to black images)."""
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise FloatingPointError(
            f"{what} of {model} hold {bad} non-finite values (NaN or inf) out of {x.numel()}: the images would be "
            "black. The weights are broken (check the checkpoint: python -m course doctor) or the settings overflow "
            "(lower the guidance)")
    return x


def generators() -> list[str]:
    """Names of the zoo models that generate images."""
    return [c.name for c in zoo.MODELS.values() if c.pipeline is not None]


def load_model(name: str, checkpoint: str | Path | None = None) -> tuple[nn.Module, dict]:
    """Zoo model `name` rebuilt from its shipped weights, or from `checkpoint`: (module, manifest entry).

    Raises:
        CheckpointError: the checkpoint holds another model (the message names the model that the file
            holds, from its metadata or its keys, and the one expected), or non-finite weights.
    """
    card = zoo.card(name)
    tensors, entry = checkpoints.load_checkpoint(None if checkpoint else name, checkpoint)
    source = str(checkpoint) if checkpoint else f"the shipped {name}"
    held, how = checkpoints.identify(tensors, entry) if checkpoint else ([name], "")
    if held and name not in held:
        raise checkpoints.CheckpointError(
            f"{checkpoint} holds {' or '.join(held)} weights ({how}), but this command expects {name}: pass a "
            f"{name} checkpoint (python -m course train {name} writes one), or use the model it holds "
            f"(e.g. eval {held[0]})")
    bad = sorted(k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise checkpoints.CheckpointError(
            f"{source} has non-finite weights (NaN or inf) in {len(bad)} tensors, e.g. {', '.join(bad[:3])}: it would "
            f"generate black images. Retrain it (python -m course train {name}) from a lower learning rate")
    try:
        model = zoo.resolve(card.load)(tensors, entry["config"])
    except checkpoints.CheckpointError:
        raise
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        if checkpoint is None:
            raise
        raise checkpoints.CheckpointError(
            f"{checkpoint} does not load as {name} ({type(err).__name__}: {err}): it holds another model's weights, "
            f"or {name}'s from another version. Pass a {name} checkpoint (python -m course train {name} writes one)"
        ) from err
    return model, entry


def load(name: str, checkpoint: str | Path | None = None, device: str | torch.device | None = None) -> Pipeline:
    """The pipeline of generator `name`, with the shipped weights or those in `checkpoint`, on `device`.

    Args:
        name: a generator of the zoo (`python -m course list`).
        checkpoint: a .safetensors file instead of the shipped weights.
        device: where every part of the pipeline runs; default `course.runtime.pick_device()`
            (CUDA, then MPS, then the CPU; COURSE_DEVICE forces one). The noise is drawn on the
            CPU, so a seed gives the same images on any device, up to float rounding.

    Raises:
        KeyError: unknown name (the message lists the models), or a model that does not
            generate images (the message lists those that do).
    """
    from course.runtime import pick_device

    card = zoo.card(name)
    if card.pipeline is None:
        raise KeyError(
            f"{name!r} does not generate images (it is a {card.summary}); "
            f"generators: {', '.join(generators()) or 'none yet'}"
        )
    model, entry = load_model(name, checkpoint)
    model = model.to(device if isinstance(device, torch.device) else pick_device(device))
    return zoo.resolve(card.pipeline)(model, entry["config"])


def save_images(images: np.ndarray, out_dir: str | Path, prefix: str = "image", names: list[str] | None = None,
                overwrite: bool = False) -> list[Path]:
    """Write uint8 images (N, H, W, C) as PNG files `out_dir/prefix-0000.png`, ... (or `out_dir/names[i]`).

    Raises:
        FileExistsError: a file of that name exists and `overwrite` is False (nothing is written).
    """
    from PIL import Image

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"save_images expects uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    out_dir = Path(out_dir)
    names = names if names is not None else [f"{prefix}-{i:04d}.png" for i in range(len(images))]
    if len(names) != len(images):
        raise ValueError(f"{len(names)} names for {len(images)} images")
    paths = [out_dir / n for n in names]
    taken = [str(p) for p in paths if p.exists()]
    if taken and not overwrite:
        raise FileExistsError(f"{len(taken)} of the images exist already ({', '.join(taken[:3])}"
                              f"{', ...' if len(taken) > 3 else ''}): choose another folder, or overwrite them "
                              "(--overwrite on the command line, overwrite=True in Python)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for image, path in zip(images, paths):
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(path)
    return paths


# ============================================================================ text-to-image (chapter 04)
# Shape letters: B images, C latent channels, h, w latent size, T tokens, D text width.
# The sampler is pure functions (`cfg_combine`, `guided_eps`, `ddim_timesteps`, `img2img_timesteps`,
# `ddim_sample`) and one class, `TextToImage`, that holds the three frozen parts of a Stable
# Diffusion model (U-Net, text encoder, VAE) and turns prompts into images with them.


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: eps = eps_uncond + w (eps_cond - eps_uncond).

    w = 1 gives the conditional prediction, w = 0 the unconditional one, w > 1 pushes the sample
    further in the direction the prompt adds (Stable Diffusion's default is 7.5).

    Args:
        eps_uncond: (B, C, h, w) the prediction for the empty (or negative) prompt.
        eps_cond: (B, C, h, w) the prediction for the prompt.
        guidance: the guidance scale w.

    Returns:
        (B, C, h, w) the guided prediction.

    Ref: Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", Eq. 6 (their w is ours minus 1).
    """
    return eps_uncond + guidance * (eps_cond - eps_uncond)


def guided_eps(unet: Callable, xt: torch.Tensor, t: int, cond: torch.Tensor, uncond: torch.Tensor | None,
               guidance: float, added: dict[str, torch.Tensor] | None = None,
               added_uncond: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The model's guided eps at (xt, t): one forward pass over the batch [uncond; cond].

    Args:
        unet: (x (2B, C, h, w), t, cond (2B, T, D)[, added]) -> eps (2B, C, h, w).
        xt: (B, C, h, w) the current latents.
        t: the timestep.
        cond: (B, T, D) the prompts' text states.
        uncond: (B, T, D) the empty or negative prompts' states; unused (may be None) when guidance == 1.
        guidance: w >= 1.
        added: optional extra conditioning of the prompts, a dict of (B, ...) tensors given to the
            U-Net as its 4th argument (SDXL: {"text_embeds": (B, P), "time_ids": (B, 6)}); None for SD 1.x.
        added_uncond: the same for the unconditional branch (needed with `added` when guidance > 1).

    Returns:
        (B, C, h, w) guided eps.
    """
    extra = () if added is None else (added,)
    if guidance == 1.0:  # as diffusers: no unconditional pass when it cannot change the result
        return unet(xt, t, cond, *extra)
    x_in = torch.cat([xt, xt])  # (2B, C, h, w)
    c_in = torch.cat([uncond, cond])  # (2B, T, D): unconditional half first, as diffusers
    if added is not None:
        extra = ({k: torch.cat([added_uncond[k], added[k]]) for k in added},)  # (2B, ...) each, unconditional first
    eps_uncond, eps_cond = unet(x_in, t, c_in, *extra).chunk(2)  # (B, C, h, w) each
    return cfg_combine(eps_uncond, eps_cond, guidance)


def ddim_timesteps(schedule: ddpm.Schedule, steps: int) -> list[int]:
    """The timesteps a `steps`-step DDIM visits, largest first, with the schedule's spacing.

    Stable Diffusion's DDIMScheduler uses "leading" spacing with steps_offset 1: 50 steps visit
    981, 961, ..., 1.
    """
    T = schedule.num_train_timesteps
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in 1 ... {T} (the schedule's training timesteps), got {steps}")
    return ddpm.respace(T, steps, schedule.timestep_spacing, schedule.steps_offset).tolist()


def img2img_timesteps(schedule: ddpm.Schedule, steps: int, strength: float) -> list[int]:
    """SDEdit's timesteps: the last int(steps * strength) of `ddim_timesteps(schedule, steps)`.

    strength 1 starts at the noisiest timestep (the init image is almost forgotten); strength 0.3
    noises the image to about 0.3 T and keeps its layout. The rule is diffusers'
    StableDiffusionImg2ImgPipeline.get_timesteps.

    Ref: Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with SDEs", Sec. 3.
    """
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1] (1 = start from noise, small = stay close to the image), got {strength}")
    timesteps = ddim_timesteps(schedule, steps)
    n = min(int(steps * strength), steps)
    if n < 1:
        raise ValueError(f"steps * strength = {steps} * {strength} < 1 leaves no denoising step; raise steps or strength")
    return timesteps[steps - n:]


@torch.no_grad()
def ddim_sample(eps_fn: Callable, xt: torch.Tensor, schedule: ddpm.Schedule, steps: int, timesteps: list[int],
                eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Run DDIM from xt at timesteps[0] down to clean latents.

    Each step goes from t to t - T // steps, as diffusers' DDIMScheduler does (for "leading" and
    "trailing" spacing that is the next listed timestep; below 0 it is the clean end).

    Args:
        eps_fn: (xt (B, C, h, w), t int) -> model output (B, C, h, w), guidance already applied.
        xt: (B, C, h, w) the starting latents at timesteps[0].
        schedule: the noise schedule the model was trained with.
        steps: the number of steps of the full chain (fixes the step size T // steps).
        timesteps: the timesteps to visit (all of `ddim_timesteps`, or SDEdit's tail of them).
        eta: DDIM noise, 0 (deterministic) ... 1.
        generator: draws the step noise when eta > 0.

    Returns:
        (B, C, h, w) x0, the clean latents.

    Ref: Song et al. 2021, "Denoising Diffusion Implicit Models", Eq. 12.
    """
    step = schedule.num_train_timesteps // steps
    x = xt
    for t in timesteps:
        noise = ddpm._randn(x.shape, generator, x.device, x.dtype) if eta > 0 else None
        x = ddpm.ddim_step(eps_fn(x, t), t, x, schedule, t - step, eta, noise).x_prev
    return x


def _free_bytes(device: torch.device) -> int | None:
    """Free memory of `device` in bytes (CUDA: the driver's count; CPU: MemAvailable), or None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def _to(value, device: torch.device):
    """A tensor, a dict of tensors, or None, moved to `device`."""
    if isinstance(value, dict):
        return {k: v.to(device) for k, v in value.items()}
    return value.to(device) if value is not None else None


SAMPLERS = ("ddim", "euler")  # deterministic DDIM (SD 1.x's DDIMScheduler) and Euler (EulerDiscreteScheduler, SDXL's default)


class TextToImage:
    """A Stable Diffusion 1.x pipeline: prompts -> text states -> guided DDIM or Euler in latent space -> VAE decoder.

    The same class runs the course's `sd1-shapes` and any SD 1.x model in diffusers format loaded
    with `course.pipelines.sd1.load_diffusers_folder` (then its images equal diffusers'
    StableDiffusionPipeline's from the same starting latents, `course.pipelines.sd1.parity_sd1_pipeline`).

    Args:
        unet: the denoiser, (xt (B, C, h, w), t, cond (B, T, D)) -> eps (B, C, h, w).
        text_encoder: prompts (list of B str) -> (B, T, D) per-token states (CLIP's last hidden state).
        codec: latents <-> images: `decode(z)` -> (B, 3, H, W) in [-1, 1], `encode(x0)` -> z, and
            `vae.config.downsample_factor`; a `course.nn.codec.LatentCodec` (its normalisation is SD's
            scaling factor for diffusers models, the per-channel one for vae-shapes).
        schedule: the noise schedule the U-Net was trained with (its prediction_type says how
            the output is read: eps, or v).
        image_size: H = W of the images generated (a multiple of the codec's downsample factor).
        sampler: the default sampler, one of SAMPLERS ("euler" for folders that ship an
            EulerDiscreteScheduler); `generate(sampler=...)` overrides it per call.

    `default_steps` and `default_guidance` are what `generate` uses when a call gives no `steps` or
    `guidance` (DEFAULT_STEPS and 1.0, diffusers' no-guidance default, unless `set_defaults` gives a
    model's recommended ones, as the zoo's pipelines do); a value a call passes is always used as is.
    """

    DEFAULT_STEPS = 50  # a real SD folder's pipeline: diffusers' num_inference_steps default
    DEFAULT_GUIDANCE = 1.0  # no guidance unless the model recommends some

    def __init__(self, unet: nn.Module, text_encoder: Callable, codec: nn.Module, schedule: ddpm.Schedule, image_size: int,
                 sampler: str = "ddim"):
        f = codec.vae.config.downsample_factor
        if image_size % f:
            raise ValueError(f"image_size {image_size} must be a multiple of the VAE's downsample factor {f}")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
        self.unet, self.text_encoder, self.codec, self.schedule = unet, text_encoder, codec, schedule
        self.image_size, self.sampler = image_size, sampler
        self.latent_shape = (codec.vae.config.latent_channels, image_size // f, image_size // f)  # (C, h, w)
        self.default_steps, self.default_guidance = self.DEFAULT_STEPS, self.DEFAULT_GUIDANCE

    def set_defaults(self, steps: int | None = None, guidance: float | None = None) -> "TextToImage":
        """Make `steps` / `guidance` what `generate` uses when a call leaves them out (None keeps the current one).

        Returns:
            the pipeline itself.
        """
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
                raise ValueError(f"default steps must be an integer >= 1, got {steps!r}")
            self.default_steps = int(steps)
        if guidance is not None:
            self.default_guidance = check_guidance(guidance)
        return self

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this many pixels: the VAE's factor x the U-Net's 2^(levels - 1)."""
        levels = getattr(getattr(self.unet, "config", None), "levels", 1)
        return self.codec.vae.config.downsample_factor * 2 ** (levels - 1)

    @property
    def max_size(self) -> int:
        """The largest side accepted, in pixels: MAX_SIZE_FACTOR x the trained size."""
        return MAX_SIZE_FACTOR * self.image_size

    def _size(self, size: tuple[int, int] | None) -> tuple[int, int]:
        """(H, W) of the images: `size`, or (image_size, image_size); multiples of `size_multiple`, at most `max_size`."""
        m, top = self.size_multiple, self.max_size
        H, W = (self.image_size, self.image_size) if size is None else tuple(size)
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 < v <= top and v % m == 0
                   for v in (H, W)):
            raise ValueError(f"size must be (H, W) in pixels, each a multiple of {m} (the VAE's factor "
                             f"{self.codec.vae.config.downsample_factor} x the U-Net's downsampling by "
                             f"{m // self.codec.vae.config.downsample_factor}) from {m} to {top} ({MAX_SIZE_FACTOR} x the {self.image_size} px the model "
                             f"was trained at), got {size!r}; pick sides that are multiples of {m}")
        return int(H), int(W)

    def to(self, device: str | torch.device) -> "TextToImage":
        """Move every part (U-Net, text encoder, codec) to `device`; returns the pipeline."""
        for part in (self.unet, self.text_encoder, self.codec):
            part.to(device)
        return self

    def estimate_bytes(self, batch: int, size: tuple[int, int], guidance: float) -> int:
        """A rough upper bound of the memory one U-Net call takes: activations and attention scores (float32).

        The U-Net runs on 2B images with guidance > 1. Per level of h x w latents, a resnet keeps a few
        maps of its width, and self-attention one (h w)^2 score matrix per head.
        """
        cfg = getattr(self.unet, "config", None)
        f = self.codec.vae.config.downsample_factor
        n = batch * (2 if guidance != 1.0 else 1)
        h, w = size[0] // f, size[1] // f
        if cfg is None:
            return 16 * n * 4 * h * w * 256
        heads = cfg.num_heads if isinstance(cfg.num_heads, tuple) else (cfg.num_heads,) * cfg.levels
        total = 0
        for level, (width, kind) in enumerate(zip(cfg.block_out_channels, cfg.down_block_types)):
            tokens = (h // 2**level) * (w // 2**level)
            total += 12 * n * width * tokens * 4  # resnet maps, skips and norms
            if kind.startswith("CrossAttn"):
                total += 2 * n * heads[level] * tokens * tokens * 4  # scores and their softmax
        return int(total)

    def _check_memory(self, batch: int, size: tuple[int, int], guidance: float) -> None:
        need, free = self.estimate_bytes(batch, size, guidance), _free_bytes(self._device())
        if free is not None and need > free:
            raise MemoryError(f"{batch} images at {size[0]}x{size[1]} px need about {need / 2**30:.1f} GiB, "
                              f"{free / 2**30:.1f} GiB are free on {self._device()}: generate fewer images per call "
                              "or a smaller size")

    def _device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def _codec_device(self) -> torch.device:
        return next(self.codec.parameters()).device

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], negative_prompts: list[str] | None, guidance: float):
        """(cond (B, T, D), uncond (B, T, D) or None): the negative prompts replace the empty prompt."""
        cond = self.text_encoder(list(prompts))  # (B, T, D)
        if guidance == 1.0:
            return cond, None
        uncond = self.text_encoder(list(negative_prompts) if negative_prompts is not None else [""] * len(prompts))  # (B, T, D)
        return cond, uncond

    @torch.no_grad()
    def conditioning(self, prompts: list[str], negative_prompts: list[str] | None, guidance: float, *,
                     size: tuple[int, int]):
        """(cond, uncond, added, added_uncond): everything the U-Net is conditioned on, for both branches.

        SD 1.x reads only the text states (added = added_uncond = None) and ignores the image
        `size` (H, W). A subclass whose U-Net takes more (`course.pipelines.sdxl.SDXLTextToImage`: pooled
        text and size/crop ids) overrides this; the extra keywords of its `sample_latents` /
        `generate` arrive here.
        """
        cond, uncond = self.encode_prompts(prompts, negative_prompts, guidance)
        return cond, uncond, None, None

    def _check(self, prompts, negative_prompts, steps: int, guidance: float, sampler: str = "ddim", eta: float = 0.0,
               seed: int = 0) -> None:
        import warnings

        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a list of strings, one per image, e.g. ['a red circle'] * 4")
        if len(prompts) == 0:
            raise ValueError("no prompts: give at least one, one per image (the empty prompt '' is the unconditional image)")
        if negative_prompts is not None:
            if isinstance(negative_prompts, str):
                raise ValueError("negative_prompts must be a list of strings, one per prompt (not a single string)")
            if len(negative_prompts) != len(prompts):
                raise ValueError(f"{len(negative_prompts)} negative prompts for {len(prompts)} prompts: give one per prompt")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        check_guidance(guidance)
        check_seed(seed)
        if negative_prompts is not None and guidance == 1.0:
            warnings.warn("negative prompts are ignored at guidance 1 (no unconditional branch): raise the guidance "
                          "(e.g. 3 or 7.5) for them to steer the image", PromptWarning, stacklevel=4)
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
        if sampler == "euler" and eta != 0.0:
            raise ValueError("eta > 0 is DDIM's stochastic variant; the Euler sampler is deterministic: use sampler='ddim'")
        check_prompts = getattr(self.text_encoder, "check_prompts", None)
        for problem in (check_prompts(list(prompts)) if check_prompts is not None else []):
            warnings.warn(problem, PromptWarning, stacklevel=4)

    @torch.no_grad()
    def sample(self, prompts: list[str], **kwargs) -> torch.Tensor:
        """Generate images as float (B, 3, H, W) in [-1, 1]; the arguments are `generate`'s."""
        z0 = self.sample_latents(prompts, **kwargs)  # (B, C, h, w)
        return check_finite(self.codec.decode(z0.to(self._codec_device())), "the decoded images")  # (B, 3, H, W)

    @torch.no_grad()
    def sample_latents(self, prompts: list[str], *, steps: int | None = None, guidance: float | None = None, seed: int = 0,
                       negative_prompts: list[str] | None = None, eta: float = 0.0, latents: torch.Tensor | None = None,
                       init_images: torch.Tensor | None = None, strength: float = 1.0, sampler: str | None = None,
                       size: tuple[int, int] | None = None, init_latents: torch.Tensor | None = None,
                       **conditioning) -> torch.Tensor:
        """The clean latents z0 (B, C, h, w) before the VAE decoder; the arguments are `generate`'s."""
        sampler = self.sampler if sampler is None else sampler
        steps = self.default_steps if steps is None else steps  # None: the model's recommended setting
        guidance = self.default_guidance if guidance is None else guidance
        self._check(prompts, negative_prompts, steps, guidance, sampler, eta, seed)
        H, W = self._size(size)
        self._check_memory(len(prompts), (H, W), guidance)
        device, B = self._device(), len(prompts)
        generator = torch.Generator().manual_seed(seed)  # one per call: the same seed, the same images
        cond, uncond, added, added_uncond = (_to(v, device) for v in self.conditioning(
            prompts, negative_prompts, guidance, size=(H, W), **conditioning))
        f = self.codec.vae.config.downsample_factor
        shape = (B, self.latent_shape[0], H // f, W // f)  # (B, C, h, w)
        if latents is not None and tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape} (B, C, h, w) for {B} prompts at {H}x{W}px, "
                             f"got {tuple(latents.shape)}")
        noise = ddpm._randn(shape, generator, device) if latents is None else latents.to(device)  # (B, C, h, w)
        if init_images is not None and init_latents is not None:
            raise ValueError("give init_images (pixels) or init_latents (z0), not both")
        z0 = None
        if init_images is not None:
            if init_images.shape != (B, 3, H, W):
                raise ValueError(f"init_images must be (B={B}, 3, {H}, {W}) in [-1, 1], got {tuple(init_images.shape)}")
            z0 = self.codec.encode(init_images.to(self._codec_device())).to(device)  # (B, C, h, w), the posterior mean
        elif init_latents is not None:  # SDEdit on latents, e.g. SDXL's refiner on the base model's output
            if tuple(init_latents.shape) != shape:
                raise ValueError(f"init_latents must be z0 of shape {shape} (B, C, h, w), got {tuple(init_latents.shape)}")
            z0 = init_latents.to(device)
        model_fn = lambda x, t: guided_eps(self.unet, x, t, cond, uncond, guidance, added, added_uncond)  # noqa: E731
        if sampler == "euler":
            timesteps, sigmas = euler.euler_timesteps(self.schedule, steps)  # (N,), (N + 1,)
            if z0 is None:
                x = noise * euler.init_noise_sigma(self.schedule, sigmas)
            else:  # SDEdit in sigma coordinates: x = z0 + sigma_start eps, then the last steps only
                start = steps - len(img2img_timesteps(self.schedule, steps, strength))
                timesteps, sigmas = timesteps[start:], sigmas[start:]
                x = z0 + float(sigmas[0]) * noise
            return check_finite(euler.euler_sample(model_fn, x, self.schedule, timesteps, sigmas), "the latents")
        if z0 is None:
            timesteps, xt = ddim_timesteps(self.schedule, steps), noise  # DDIM starts from N(0, I)
        else:
            timesteps = img2img_timesteps(self.schedule, steps, strength)
            xt = ddpm.q_sample(z0, timesteps[0], noise, self.schedule.alpha_bar)  # SDEdit: noise to t_start
        return check_finite(ddim_sample(model_fn, xt, self.schedule, steps, timesteps, eta, generator),
                            "the latents")  # (B, C, h, w)

    def generate(self, prompts: list[str], *, steps: int | None = None, guidance: float | None = None, seed: int = 0,
                 negative_prompts: list[str] | None = None, eta: float = 0.0, latents: torch.Tensor | None = None,
                 init_images: np.ndarray | torch.Tensor | None = None, strength: float = 1.0, sampler: str | None = None,
                 size: tuple[int, int] | None = None, init_latents: torch.Tensor | None = None,
                 **conditioning) -> np.ndarray:
        """Images for prompts: text-to-image, or image-to-image (SDEdit) when `init_images` is given.

        Args:
            prompts: B strings, one image each. The empty prompt "" is the unconditional image (what the
                model makes when told nothing, as for CFG's other branch). A word the text encoder was
                not trained on, or a prompt longer than its context, gives a `PromptWarning` naming it.
            steps: sampler steps of the full chain (img2img runs the last int(steps * strength) of them);
                None: `default_steps`, the model's recommended number.
            guidance: classifier-free guidance scale, a finite w in 1 ... MAX_GUIDANCE (1: no guidance, one forward
                per step); None: `default_guidance`, the model's recommended scale.
            seed: 0 ... 2^63 - 1; seeds a fresh CPU torch.Generator for this call: the same seed gives the same images.
            negative_prompts: B strings that replace the empty prompt as the unconditional branch.
            eta: DDIM noise, 0 (deterministic) ... 1; DDIM only.
            latents: (B, C, h, w) starting noise instead of drawing it from the seed.
            init_images: img2img: uint8 (B, H, W, 3) or float (B, 3, H, W) in [-1, 1].
            strength: img2img: how far to noise the init images, in (0, 1].
            sampler: "ddim" or "euler" (`course.diffusion.euler`); default the pipeline's own.
            size: (H, W) of the images, multiples of `size_multiple` up to `max_size` (an aspect-ratio
                bucket); default (image_size, image_size). The U-Net is convolutional: any size runs, and
                how well it works depends on the sizes it was trained at.
            init_latents: img2img from latents z0 (B, C, h, w) instead of images (a refiner's input).
            **conditioning: extra keywords of a subclass's `conditioning` (SDXL's sizes and crop).

        Returns:
            uint8 (B, H, W, 3).

        Raises:
            ValueError: a setting out of range (the message says which and what is allowed).
            MemoryError: the estimated memory of the batch exceeds what the device has free.
            FloatingPointError: the latents or images came out NaN or inf (broken weights).

        Ref: Rombach et al. 2022 (LDM), Sec. 3.3; Ho & Salimans 2022 (CFG); Song et al. 2021 (DDIM);
        Karras et al. 2022 (Euler); Meng et al. 2022 (SDEdit).
        """
        from course.world import shapes

        if isinstance(init_images, np.ndarray):
            init_images = shapes.to_tensor(init_images)  # (B, 3, H, W) in [-1, 1]
        x0 = self.sample(prompts, steps=steps, guidance=guidance, seed=seed, negative_prompts=negative_prompts,
                         eta=eta, latents=latents, init_images=init_images, strength=strength, sampler=sampler,
                         size=size, init_latents=init_latents, **conditioning)
        return shapes.to_images(x0)  # (B, H, W, 3) uint8
