"""Chapter 02: an autoencoder and a VAE with the structure of diffusers' `AutoencoderKL`.

The encoder maps an image x0 of shape (B, 3, H, W) to a latent of shape (B, 4, H/f, W/f) with
f = 2 ** (number of blocks - 1); the decoder maps it back. The VAE's encoder outputs a diagonal
Gaussian (a mean and a log-variance per latent value) and is trained with a KL term that keeps
the latents near N(0, I); the plain autoencoder outputs the latent itself and has no KL term.

    encoder: conv_in -> [ResnetBlock x layers_per_block (+ Downsample)] per block
             -> mid (ResnetBlock, SelfAttention, ResnetBlock) -> GroupNorm, SiLU, conv_out
    quant_conv (1x1) -> DiagonalGaussian -> z -> post_quant_conv (1x1)
    decoder: conv_in -> mid -> [ResnetBlock x (layers_per_block + 1) (+ Upsample)] per block
             -> GroupNorm, SiLU, conv_out

`VAE.from_diffusers` copies the weights of a `diffusers.AutoencoderKL` through a key-renaming
function, and `parity_vae` checks that both give the same numbers.

Shape letters: B batch, C channels, H height, W width, T tokens (H * W positions).
Ref: Kingma & Welling 2014 (VAE); Rombach et al. 2022, Sec. 3 and App. G (the LDM autoencoder).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

GROUPNORM_EPS = 1e-6  # diffusers' VAE uses eps=1e-6 in every GroupNorm


# ----------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class VAEConfig:
    """The constructor arguments of diffusers' `AutoencoderKL` that change the model, plus one.

    Ref: diffusers `AutoencoderKL.__init__` (all blocks "DownEncoderBlock2D"/"UpDecoderBlock2D").
    """

    in_channels: int = 3  # image channels (RGB)
    out_channels: int = 3  # channels the decoder outputs
    block_out_channels: tuple[int, ...] = (8, 16, 32, 64)  # width per level; f = 2**(len - 1)
    layers_per_block: int = 1  # ResnetBlocks per encoder level (the decoder has one more)
    latent_channels: int = 4  # channels of the latent z
    norm_num_groups: int = 4  # GroupNorm groups; must divide every width
    mid_block_add_attention: bool = True  # self-attention between the two mid ResnetBlocks
    use_quant_conv: bool = True  # 1x1 conv after the encoder
    use_post_quant_conv: bool = True  # 1x1 conv before the decoder
    scaling_factor: float = 1.0  # z_diffusion = (z - shift_factor) * scaling_factor (SD 1.x: 0.18215)
    shift_factor: float = 0.0  # see scaling_factor (SD3: 0.0609; SD 1.x: none)
    variational: bool = True  # False: plain autoencoder, the encoder outputs z itself, no KL

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        if len(self.block_out_channels) == 0:
            raise ValueError("block_out_channels must list at least one width, e.g. (32, 64, 128, 128)")
        if self.layers_per_block < 1:
            raise ValueError(f"layers_per_block must be >= 1, got {self.layers_per_block}")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups != 0]
        if bad:
            raise ValueError(
                f"norm_num_groups={self.norm_num_groups} must divide every width in "
                f"block_out_channels={self.block_out_channels}; {bad} are not divisible. "
                "Pick a number of groups that divides all of them."
            )

    @property
    def downsample_factor(self) -> int:
        """f: how many pixels per latent value along each side."""
        return 2 ** (len(self.block_out_channels) - 1)


def config_from_diffusers(diffusers_config) -> VAEConfig:
    """A `VAEConfig` from an `AutoencoderKL.config` (or a dict of its constructor arguments).

    Raises:
        ValueError: for block types or activations this course's VAE does not build.
    """
    cfg = dict(diffusers_config)
    n = len(cfg.get("block_out_channels", (64,)))
    down = tuple(cfg.get("down_block_types", ("DownEncoderBlock2D",) * n))
    up = tuple(cfg.get("up_block_types", ("UpDecoderBlock2D",) * n))
    if set(down) != {"DownEncoderBlock2D"} or set(up) != {"UpDecoderBlock2D"} or len(down) != n:
        raise ValueError(
            f"only DownEncoderBlock2D/UpDecoderBlock2D, one per width, are supported; got {down} and {up}"
        )
    if cfg.get("act_fn", "silu") not in ("silu", "swish"):
        raise ValueError(f"only the SiLU activation is supported, got act_fn={cfg['act_fn']!r}")
    return VAEConfig(
        in_channels=cfg.get("in_channels", 3),
        out_channels=cfg.get("out_channels", 3),
        block_out_channels=tuple(cfg.get("block_out_channels", (64,))),
        layers_per_block=cfg.get("layers_per_block", 1),
        latent_channels=cfg.get("latent_channels", 4),
        norm_num_groups=cfg.get("norm_num_groups", 32),
        mid_block_add_attention=cfg.get("mid_block_add_attention", True),
        use_quant_conv=cfg.get("use_quant_conv", True),
        use_post_quant_conv=cfg.get("use_post_quant_conv", True),
        scaling_factor=cfg.get("scaling_factor", 0.18215),
        shift_factor=cfg.get("shift_factor") or 0.0,
        variational=True,
    )


def diffusers_config(config: VAEConfig) -> dict:
    """The `AutoencoderKL` constructor arguments for a (variational) `VAEConfig`."""
    if not config.variational:
        raise ValueError("diffusers' AutoencoderKL is always variational; this config has variational=False")
    cfg = asdict(config)
    del cfg["variational"]
    n = len(config.block_out_channels)
    return dict(cfg, down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n)


def sd_vae_config() -> dict:
    """Stable Diffusion 1.x's VAE as `AutoencoderKL` constructor arguments (f = 8, 4 channels)."""
    config = VAEConfig(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32)
    return dict(diffusers_config(config), scaling_factor=0.18215, shift_factor=None, sample_size=512)


def count_parameters_meta(config: dict) -> int:
    """Parameters of diffusers' `AutoencoderKL(**config)`, built on the meta device (no memory, no download)."""
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        model = AutoencoderKL(**config)
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# The posterior


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mean + exp(logvar / 2) * eps: a sample of N(mean, exp(logvar)) that gradients flow through.

    Args:
        mean, logvar, eps: (B, C, H, W); eps ~ N(0, I) drawn by the caller.

    Returns:
        z, (B, C, H, W).

    Ref: Kingma & Welling 2014, Sec. 2.4 (the reparameterisation trick).
    """
    return mean + (0.5 * logvar).exp() * eps


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) = 0.5 * sum(mean^2 + exp(logvar) - 1 - logvar), per sample.

    Args:
        mean, logvar: (B, ...) the diagonal Gaussian's moments.

    Returns:
        (B,) the KL summed over every dimension but the batch.

    Ref: Kingma & Welling 2014, App. B.
    """
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(dim=1)


class DiagonalGaussian:
    """q(z | x0) = N(mean, diag(exp(logvar))), one Gaussian per latent value.

    Args:
        mean: (B, C, H, W).
        logvar: (B, C, H, W); clamped to [-30, 20] as diffusers does, so exp() stays finite.

    Ref: Kingma & Welling 2014, Sec. 2.4 (reparameterisation) and App. B (the KL).
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> DiagonalGaussian:
        """Split the encoder's (B, 2C, H, W) output into mean and logvar along channels."""
        mean, logvar = moments.chunk(2, dim=1)  # (B, C, H, W) each
        return cls(mean, logvar)

    @property
    def var(self) -> torch.Tensor:
        return self.logvar.exp()

    @property
    def std(self) -> torch.Tensor:
        return (0.5 * self.logvar).exp()

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + std * eps, eps ~ N(0, I): differentiable in mean and logvar."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return reparameterize(self.mean, self.logvar, eps)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) = 0.5 * sum(mean^2 + var - 1 - logvar) per sample, shape (B,)."""
        return gaussian_kl(self.mean, self.logvar)


# ----------------------------------------------------------------------------------------------
# Blocks


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=GROUPNORM_EPS)


class ResnetBlock(nn.Module):
    """GroupNorm, SiLU, conv, GroupNorm, SiLU, conv, plus a skip (1x1 conv when widths differ).

    Ref: He et al. 2016 (pre-activation residual blocks); no time embedding in a VAE.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the H*W positions, GroupNorm first, residual around it.

    Ref: Vaswani et al. 2017, Eq. 1 (scaled dot-product attention).
    """

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, T, C), T = H * W
        q, k, v = self.to_q(h), self.to_k(h), self.to_v(h)  # (B, T, C) each; one head, hd = C
        h = F.scaled_dot_product_attention(q, k, v)  # (B, T, C), softmax(q k^T / sqrt(C)) v
        h = self.to_out(h).transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)
        return x + h


class Downsample(nn.Module):
    """Halve H and W: pad one pixel right and bottom, then a stride-2 3x3 conv (as diffusers)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)


class Level(nn.Module):
    """One resolution level: ResnetBlocks, then an optional Downsample or Upsample."""

    def __init__(self, in_channels: int, out_channels: int, n_resnets: int, groups: int, resample: nn.Module | None):
        super().__init__()
        widths = [in_channels] + [out_channels] * n_resnets
        self.resnets = nn.ModuleList(ResnetBlock(a, b, groups) for a, b in zip(widths[:-1], widths[1:]))
        self.resample = resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.resample is None else self.resample(x)


class MidBlock(nn.Module):
    """ResnetBlock, self-attention (optional), ResnetBlock, at the lowest resolution."""

    def __init__(self, channels: int, groups: int, attention: bool):
        super().__init__()
        self.res1 = ResnetBlock(channels, channels, groups)
        self.attn = SelfAttention(channels, groups) if attention else None
        self.res2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res1(x)
        if self.attn is not None:
            x = self.attn(x)
        return self.res2(x)


class Encoder(nn.Module):
    """(B, in_channels, H, W) -> (B, out_channels, H/f, W/f)."""

    def __init__(self, config: VAEConfig, out_channels: int):
        super().__init__()
        widths, groups = config.block_out_channels, config.norm_num_groups
        self.conv_in = nn.Conv2d(config.in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        for i, width in enumerate(widths):  # every level but the last halves H and W
            resample = Downsample(width) if i < len(widths) - 1 else None
            self.down.append(Level(widths[max(i - 1, 0)], width, config.layers_per_block, groups, resample))
        self.mid = MidBlock(widths[-1], groups, config.mid_block_add_attention)
        self.norm_out = group_norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # (B, widths[0], H, W)
        for level in self.down:
            h = level(h)  # (B, width, H/2, W/2) after each level but the last
        h = self.mid(h)  # (B, widths[-1], H/f, W/f)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, out_channels, H/f, W/f)


class Decoder(nn.Module):
    """(B, latent_channels, h, w) -> (B, out_channels, h*f, w*f)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths, groups = config.block_out_channels[::-1], config.norm_num_groups
        self.conv_in = nn.Conv2d(config.latent_channels, widths[0], 3, padding=1)
        self.mid = MidBlock(widths[0], groups, config.mid_block_add_attention)
        self.up = nn.ModuleList()
        for i, width in enumerate(widths):  # every level but the last doubles H and W
            resample = Upsample(width) if i < len(widths) - 1 else None
            self.up.append(Level(widths[max(i - 1, 0)], width, config.layers_per_block + 1, groups, resample))
        self.norm_out = group_norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))  # (B, widths[-1], h, w)
        for level in self.up:
            h = level(h)  # (B, width, 2h, 2w) after each level but the last
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, out_channels, h*f, w*f)


# ----------------------------------------------------------------------------------------------
# The model


@dataclass
class AutoencoderOutput:
    """What `VAE.forward` returns."""

    sample: torch.Tensor  # (B, C, H, W) the reconstruction x_hat
    z: torch.Tensor  # (B, latent_channels, H/f, W/f) the latent that was decoded
    posterior: DiagonalGaussian | None  # q(z | x0); None for the plain autoencoder


class VAE(nn.Module):
    """An autoencoder (variational or plain) with the layout of diffusers' `AutoencoderKL`.

    Ref: Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", Sec. 3.
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        c = config.latent_channels
        moments = 2 * c if config.variational else c  # mean and logvar, or z itself
        self.encoder = Encoder(config, moments)
        self.quant_conv = nn.Conv2d(moments, moments, 1) if config.use_quant_conv else nn.Identity()
        self.post_quant_conv = nn.Conv2d(c, c, 1) if config.use_post_quant_conv else nn.Identity()
        self.decoder = Decoder(config)

    def _check(self, x: torch.Tensor, channels: int, name: str, multiple: int) -> None:
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"{name} must have shape (B, {channels}, H, W); got {tuple(x.shape)}")
        if x.shape[2] % multiple or x.shape[3] % multiple:
            raise ValueError(
                f"{name}'s height and width must be multiples of {multiple} (f = {multiple}); got "
                f"{tuple(x.shape[2:])}. Resize or pad the image to a multiple of {multiple}."
            )

    def encode(self, x: torch.Tensor) -> DiagonalGaussian | torch.Tensor:
        """x0 (B, C, H, W) in [-1, 1] -> q(z | x0), or z (B, c, H/f, W/f) for the plain autoencoder."""
        self._check(x, self.config.in_channels, "the image", self.config.downsample_factor)
        moments = self.quant_conv(self.encoder(x))  # (B, 2c or c, H/f, W/f)
        return DiagonalGaussian.from_moments(moments) if self.config.variational else moments

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic latent: the posterior mean (VAE) or z itself (autoencoder)."""
        q = self.encode(x)
        return q.mode() if isinstance(q, DiagonalGaussian) else q

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, c, h, w) -> x_hat (B, C, h*f, w*f)."""
        self._check(z, self.config.latent_channels, "the latent z", 1)
        return self.decoder(self.post_quant_conv(z))

    def forward(
        self, x: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None
    ) -> AutoencoderOutput:
        """Encode, take z (a reparameterised sample, or the mean), decode."""
        q = self.encode(x)
        if isinstance(q, DiagonalGaussian):
            z = q.sample(generator) if sample_posterior else q.mode()
            return AutoencoderOutput(self.decode(z), z, q)
        return AutoencoderOutput(self.decode(q), q, None)

    @classmethod
    def from_diffusers(cls, model) -> VAE:
        """Build a course VAE with the weights of a `diffusers.AutoencoderKL`."""
        vae = cls(config_from_diffusers(model.config))
        state = {diffusers_key_to_course(k): v for k, v in model.state_dict().items()}
        vae.load_state_dict(state, strict=True)
        return vae.to(next(model.parameters()).dtype)


# diffusers' parameter names -> ours, applied in order
_KEY_RULES: list[tuple[str, str]] = [
    (r"\.down_blocks\.(\d+)\.downsamplers\.0\.", r".down.\1.resample."),
    (r"\.up_blocks\.(\d+)\.upsamplers\.0\.", r".up.\1.resample."),
    (r"\.down_blocks\.", ".down."),
    (r"\.up_blocks\.", ".up."),
    (r"\.mid_block\.resnets\.0\.", ".mid.res1."),
    (r"\.mid_block\.resnets\.1\.", ".mid.res2."),
    (r"\.mid_block\.attentions\.0\.", ".mid.attn."),
    (r"\.group_norm\.", ".norm."),
    (r"\.to_out\.0\.", ".to_out."),
    (r"\.conv_shortcut\.", ".skip."),
    (r"\.conv_norm_out\.", ".norm_out."),
]


def diffusers_key_to_course(key: str) -> str:
    """Rename one `AutoencoderKL` state-dict key, e.g. encoder.mid_block.attentions.0.to_out.0.weight
    -> encoder.mid.attn.to_out.weight."""
    for pattern, replacement in _KEY_RULES:
        key = re.sub(pattern, replacement, key)
    return key


# ----------------------------------------------------------------------------------------------
# Losses and latent scaling (pure functions)


def kl_loss(posterior: DiagonalGaussian) -> torch.Tensor:
    """Batch mean of KL(q(z | x0) || N(0, I)), summed over latent values. Ref: Kingma & Welling 2014, App. B."""
    return posterior.kl().mean()


# ----------------------------------------------------------------------------------------------
# Parity with diffusers and presets


def parity_vae(config: dict | None = None, seed: int = 0) -> float:
    """Largest difference between this VAE and diffusers' `AutoencoderKL` with the same random weights.

    Args:
        config: `AutoencoderKL` constructor arguments; None takes the "tiny" preset.
        seed: seeds the weights (norm and bias parameters are perturbed too) and the image batch.

    Returns:
        max |course - diffusers| over the posterior mean, its logvar and decode(z) of one latent z.
    """
    from diffusers import AutoencoderKL

    config = config or diffusers_config(PRESETS["tiny"])
    torch.manual_seed(seed)
    ref = AutoencoderKL(**config).eval()
    with torch.no_grad():  # perturb norms and biases so a swapped one cannot go unnoticed
        for p in ref.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    ours = VAE.from_diffusers(ref).eval()
    n = len(ref.config.block_out_channels)
    x = torch.randn(2, ref.config.in_channels, 8 * 2 ** (n - 1), 8 * 2 ** (n - 1))
    with torch.no_grad():
        q_ref, q = ref.encode(x).latent_dist, ours.encode(x)
        z = q_ref.mean
        diffs = [q_ref.mean - q.mean, q_ref.logvar - q.logvar, ref.decode(z).sample - ours.decode(z)]
    return max(d.abs().max().item() for d in diffs)


PRESETS: dict[str, VAEConfig] = {
    # 64x64x3 -> 8x8x4 for the Shapes world (f = 8, 48x fewer values); 0.69 M parameters. Narrow
    # at full resolution, where the convolutions cost the most; wide at 8x8, where they are cheap.
    "shapes": VAEConfig(block_out_channels=(8, 16, 32, 64), layers_per_block=1, norm_num_groups=4),
    # the same network without the KL: chapter 02's autoencoder-vs-VAE comparison
    "shapes_ae": VAEConfig(
        block_out_channels=(8, 16, 32, 64), layers_per_block=1, norm_num_groups=4, variational=False
    ),
    # 44 k parameters, f = 2: for tests and parity
    "tiny": VAEConfig(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4),
}


def build(name: str) -> VAE:
    """A freshly initialised VAE from a named preset."""
    if name not in PRESETS:
        raise KeyError(f"unknown VAE preset {name!r}; known presets: {', '.join(PRESETS)}")
    return VAE(PRESETS[name])
