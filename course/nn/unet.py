"""The U-Net denoiser of Stable Diffusion 1.x / SDXL, from scratch (diffusers' UNet2DConditionModel).

Reading order follows the figure: the blocks of `course.nn.unet_blocks` (ResnetBlock2D, Downsample2D /
Upsample2D, the down, mid and up blocks, with the `Transformer2D` attention blocks of
`course.nn.attention`) -> `UNetConfig` -> `UNet` -> presets ->
the bridge to diffusers (`config_from_diffusers`, `UNet.from_diffusers`, `parity_unet`).

    x (B, C_in, H, W) --conv_in--> down blocks --(skips)--> mid block --> up blocks --> conv_out
    t (B,) --sinusoid--> time MLP --> emb (B, 4*C0), added inside every ResnetBlock2D
    cond (B, T, D) text tokens --> cross-attention inside every Transformer2D

Module names are diffusers' own, so a diffusers state dict loads with no renaming: the key
mapping of `from_diffusers` is the identity, and strict loading proves that every tensor found
its place.

Shape letters: B batch, C channels, H height, W width, T text tokens, D token width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from course.nn.attention import TimestepEmbedding, timestep_embedding
from course.nn.unet_blocks import DownBlock, MidBlock, UpBlock

CROSS_DOWN, PLAIN_DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
CROSS_UP, PLAIN_UP = "CrossAttnUpBlock2D", "UpBlock2D"
CROSS_MID, PLAIN_MID = "UNetMidBlock2DCrossAttn", "UNetMidBlock2D"


# --------------------------------------------------------------------------- config
def _per_level(value: int | tuple[int, ...], levels: int, name: str) -> tuple[int, ...]:
    """An int means the same value at every level; a tuple must give one value per level."""
    if isinstance(value, int):
        return (value,) * levels
    value = tuple(value)
    if len(value) != levels or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{name} must be an int or a tuple of {levels} ints (one per level), got {value!r}")
    return value


@dataclass(frozen=True)
class UNetConfig:
    """Everything that fixes the U-Net's architecture (names follow diffusers where they are honest)."""

    in_channels: int = 4  # channels of xt (1 for Fashion-MNIST pixels, 4 for SD latents)
    out_channels: int = 4  # channels of the prediction (eps or v), normally = in_channels
    sample_size: int | None = 8  # H = W the model is trained at (informative; any multiple of 2^(levels-1) runs)
    block_out_channels: tuple[int, ...] = (64, 128, 128)  # channels per level, one level per down block
    down_block_types: tuple[str, ...] = (CROSS_DOWN, CROSS_DOWN, PLAIN_DOWN)  # per level, high to low res
    mid_block_type: str | None = CROSS_MID  # "UNetMidBlock2DCrossAttn", "UNetMidBlock2D" (one resnet) or None
    up_block_types: tuple[str, ...] = (PLAIN_UP, CROSS_UP, CROSS_UP)  # per level, low to high res
    layers_per_block: int | tuple[int, ...] = 2  # resnets per down level (up levels get one more)
    transformer_layers_per_block: int | tuple[int, ...] = 1  # transformer blocks per Transformer2D, per level (SDXL: 1, 2, 10)
    # Number of attention HEADS per level. diffusers calls this `attention_head_dim` in
    # UNet2DConditionModel for historical reasons (issue #2011) but uses it as the head count;
    # the head dimension is channels // num_heads.
    num_heads: int | tuple[int, ...] = 4
    cross_attention_dim: int | None = 64  # width D of the text tokens; None for an unconditional model
    use_linear_projection: bool = False  # Transformer2D proj_in/out as Linear (SD 2, SDXL) or 1x1 conv (SD 1)
    norm_num_groups: int = 32  # GroupNorm groups everywhere; every width must be divisible by it
    norm_eps: float = 1e-5  # GroupNorm epsilon of the resnets and the output norm
    flip_sin_to_cos: bool = True  # time embedding as [cos, sin] (SD) rather than [sin, cos]
    freq_shift: float = 0.0  # downscale_freq_shift of the time embedding (0 in SD, 1 in DDPM's code)
    downsample_padding: int = 1  # padding of the stride-2 downsampling convs
    dropout: float = 0.0  # dropout inside the resnets
    mid_block_self_attention: bool = False  # with "UNetMidBlock2D": resnet -> self-attention -> resnet, as DDPM (not in UNet2DConditionModel)
    addition_embed_type: str | None = None  # "text_time": SDXL's pooled text + size/crop ids added to the time embedding
    addition_time_embed_dim: int | None = None  # text_time: sinusoid width per time id (256 in SDXL)
    projection_class_embeddings_input_dim: int | None = None  # text_time: pooled width + n_ids * addition_time_embed_dim

    def __post_init__(self):
        n = len(self.block_out_channels)
        if not (len(self.down_block_types) == len(self.up_block_types) == n):
            raise ValueError(f"block_out_channels, down_block_types and up_block_types need one entry per level; "
                             f"got {n}, {len(self.down_block_types)}, {len(self.up_block_types)}")
        for kind, allowed in ((self.down_block_types, (CROSS_DOWN, PLAIN_DOWN)), (self.up_block_types, (CROSS_UP, PLAIN_UP))):
            for b in kind:
                if b not in allowed:
                    raise ValueError(f"unknown block type {b!r}; supported: {allowed}")
        if self.mid_block_type not in (CROSS_MID, PLAIN_MID, None):
            raise ValueError(f"unknown mid_block_type {self.mid_block_type!r}; use {CROSS_MID!r}, {PLAIN_MID!r} or None")
        if self.mid_block_self_attention and self.mid_block_type != PLAIN_MID:
            raise ValueError("mid_block_self_attention only applies to mid_block_type 'UNetMidBlock2D'")
        for name in ("layers_per_block", "transformer_layers_per_block", "num_heads"):
            _per_level(getattr(self, name), n, name)
        if self.has_cross_attention and self.cross_attention_dim is None:
            raise ValueError("cross-attention blocks need cross_attention_dim (the width of the text tokens)")
        for c, h in zip(self.block_out_channels, self.heads):
            if c % self.norm_num_groups or c % h:
                raise ValueError(f"width {c} must be divisible by norm_num_groups={self.norm_num_groups} and by its {h} heads")
        if self.addition_embed_type not in (None, "text_time"):
            raise ValueError(f"addition_embed_type {self.addition_embed_type!r} unsupported; use None or 'text_time'")
        if self.addition_embed_type and not (self.addition_time_embed_dim and self.projection_class_embeddings_input_dim):
            raise ValueError("addition_embed_type='text_time' needs addition_time_embed_dim and projection_class_embeddings_input_dim")

    @property
    def levels(self) -> int:
        return len(self.block_out_channels)

    @property
    def heads(self) -> tuple[int, ...]:
        return _per_level(self.num_heads, self.levels, "num_heads")

    @property
    def has_cross_attention(self) -> bool:
        return CROSS_DOWN in self.down_block_types or CROSS_UP in self.up_block_types or self.mid_block_type == CROSS_MID


def text_time_vector(text_embeds: torch.Tensor, time_ids: torch.Tensor, dim: int, flip_sin_to_cos: bool = True,
                     freq_shift: float = 0.0) -> torch.Tensor:
    """SDXL's added conditioning before its MLP: [pooled text, Fourier features of each size/crop id].

    Each of the N ids (a number of pixels) gets the timestep's sinusoidal embedding of width
    `dim`, as if it were a timestep; the N embeddings are flattened per image and appended to
    the pooled text vector.

    Args:
        text_embeds: (B, P) pooled text.
        time_ids: (B, N) ids (SDXL: orig h, orig w, crop top, crop left, target h, target w).
        dim: sinusoid width per id (SDXL: 256).

    Returns:
        (B, P + N * dim).

    Ref: Podell et al. 2023, Sec. 2.2; diffusers UNet2DConditionModel (addition_embed_type="text_time").
    """
    B = text_embeds.shape[0]
    ids_emb = timestep_embedding(time_ids.flatten(), dim, flip_sin_to_cos, freq_shift)  # (B * N, dim)
    ids_emb = ids_emb.reshape(B, -1)  # (B, N * dim)
    return torch.cat([text_embeds, ids_emb.to(text_embeds.dtype)], dim=-1)  # (B, P + N * dim)


# --------------------------------------------------------------------------- the model
class UNet(nn.Module):
    """The conditional U-Net: predicts eps (or v) from xt, t and optional text tokens `cond`.

    Ref: Ronneberger et al. 2015; Ho et al. 2020, Appendix B; Rombach et al. 2022 (LDM), Sec. 3.3;
    Podell et al. 2023 (SDXL), Sec. 2.1-2.2.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        ch, n = cfg.block_out_channels, cfg.levels
        temb = 4 * ch[0]
        layers = _per_level(cfg.layers_per_block, n, "layers_per_block")
        tlayers = _per_level(cfg.transformer_layers_per_block, n, "transformer_layers_per_block")
        norm = dict(groups=cfg.norm_num_groups, eps=cfg.norm_eps, dropout=cfg.dropout)
        attn = dict(cross_attention_dim=cfg.cross_attention_dim, use_linear_projection=cfg.use_linear_projection)

        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        if cfg.addition_embed_type == "text_time":
            self.add_embedding = TimestepEmbedding(cfg.projection_class_embeddings_input_dim, temb)

        self.down_blocks = nn.ModuleList()
        for i, kind in enumerate(cfg.down_block_types):
            self.down_blocks.append(DownBlock(
                ch[max(i - 1, 0)], ch[i], temb, layers[i], i < n - 1, downsample_padding=cfg.downsample_padding,
                heads=cfg.heads[i], transformer_layers=tlayers[i] if kind == CROSS_DOWN else None, **norm, **attn))

        if cfg.mid_block_type is None:
            self.mid_block = None
        else:
            kind = "cross_attn" if cfg.mid_block_type == CROSS_MID else "self_attn" if cfg.mid_block_self_attention else "resnet"
            self.mid_block = MidBlock(ch[-1], temb, kind=kind, heads=cfg.heads[-1], transformer_layers=tlayers[-1], **norm, **attn)

        self.up_blocks = nn.ModuleList()
        rch, rlayers, rt, rheads = ch[::-1], layers[::-1], tlayers[::-1], cfg.heads[::-1]
        for i, kind in enumerate(cfg.up_block_types):
            self.up_blocks.append(UpBlock(
                rch[min(i + 1, n - 1)], rch[max(i - 1, 0)], rch[i], temb, rlayers[i] + 1, i < n - 1,
                heads=rheads[i], transformer_layers=rt[i] if kind == CROSS_UP else None, **norm, **attn))

        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, 3, padding=1)

    def time_embed(self, t: torch.Tensor | float | int, batch: int, device: torch.device) -> torch.Tensor:
        """Timesteps (scalar or (B,)) -> emb (B, 4*C0): sinusoid, then the time MLP."""
        t = torch.as_tensor(t, device=device)
        if t.ndim == 0:
            t = t.expand(batch)  # (B,)
        if t.shape != (batch,):
            raise ValueError(f"t must be a scalar or have shape (B,) = ({batch},), got {tuple(t.shape)}")
        cfg = self.config
        t_sin = timestep_embedding(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)  # (B, C0)
        return self.time_embedding(t_sin.to(self.conv_in.weight.dtype))  # (B, 4*C0)

    def added_embed(self, added_cond: dict[str, torch.Tensor] | None, batch: int) -> torch.Tensor:
        """SDXL's text_time: pooled text (B, P) and time ids (B, N) -> (B, 4*C0), added to emb."""
        cfg = self.config
        if not added_cond or "text_embeds" not in added_cond or "time_ids" not in added_cond:
            raise ValueError("this model uses addition_embed_type='text_time': pass added_cond="
                             "{'text_embeds': (B, P) pooled text, 'time_ids': (B, N) size/crop ids}")
        vec = text_time_vector(added_cond["text_embeds"], added_cond["time_ids"], cfg.addition_time_embed_dim,
                               cfg.flip_sin_to_cos, cfg.freq_shift)  # (B, P + N * addition_time_embed_dim)
        if vec.shape[-1] != cfg.projection_class_embeddings_input_dim:
            raise ValueError(f"text_embeds + time_ids give width {vec.shape[-1]}, the model expects "
                             f"projection_class_embeddings_input_dim={cfg.projection_class_embeddings_input_dim}")
        return self.add_embedding(vec)

    def _check_inputs(self, x: torch.Tensor, cond: torch.Tensor | None) -> None:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must be (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        f = 2 ** (cfg.levels - 1)
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"H and W must be divisible by 2^(levels-1) = {f} for this {cfg.levels}-level U-Net, "
                             f"got {x.shape[2]}x{x.shape[3]}; pad or resize the input")
        if cfg.has_cross_attention:
            if cond is None:
                raise ValueError(f"this U-Net has cross-attention: pass cond, text tokens (B, T, {cfg.cross_attention_dim})")
            if cond.ndim != 3 or cond.shape[0] != x.shape[0] or cond.shape[2] != cfg.cross_attention_dim:
                raise ValueError(f"cond must be (B={x.shape[0]}, T, D={cfg.cross_attention_dim}), got {tuple(cond.shape)}")
        elif cond is not None:
            raise ValueError("this U-Net has no cross-attention blocks (unconditional); call it without cond")

    def forward(self, x: torch.Tensor, t: torch.Tensor | float | int, cond: torch.Tensor | None = None,
                added_cond: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Predict the noise (or v) in xt.

        Args:
            x: (B, C_in, H, W) noisy input xt; H and W divisible by 2^(levels-1).
            t: (B,) or scalar timesteps, int or float.
            cond: (B, T, cross_attention_dim) text tokens; required iff the model has cross-attention.
            added_cond: for addition_embed_type='text_time', {'text_embeds': (B, P), 'time_ids': (B, N)}.

        Returns:
            (B, C_out, H, W) prediction.
        """
        self._check_inputs(x, cond)
        B = x.shape[0]
        emb = self.time_embed(t, B, x.device)  # (B, 4*C0)
        if self.config.addition_embed_type == "text_time":
            emb = emb + self.added_embed(added_cond, B)  # (B, 4*C0)
        elif added_cond is not None:
            raise ValueError("added_cond given, but this model has no addition_embed_type")

        h = self.conv_in(x)  # (B, C0, H, W)
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = block(h, emb, cond)  # (B, C_i, H/2^i, W/2^i) after downsampling
            skips.extend(block_skips)
        if self.mid_block is not None:
            h = self.mid_block(h, emb, cond)  # (B, C_last, H/2^(n-1), W/2^(n-1))
        for block in self.up_blocks:
            h = block(h, skips, emb, cond)  # eats len(block.resnets) skips, then upsamples
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))  # (B, C_out, H, W)

    @classmethod
    def from_diffusers(cls, model) -> "UNet":
        """Build a course U-Net with the weights of a diffusers `UNet2DConditionModel`.

        The course keeps diffusers' module names, so every key maps to itself; `strict=True`
        makes any missing or extra tensor an error.
        """
        unet = cls(config_from_diffusers(dict(model.config)))
        unet.load_state_dict(model.state_dict(), strict=True)
        return unet.to(next(model.parameters()).dtype)


# --------------------------------------------------------------------------- presets
PRESETS: dict[str, UNetConfig] = {
    # Chapter 01: unconditional DDPM on Fashion-MNIST, 32x32x1 pixels. A pure conv U-Net (as
    # UNet2DConditionModel builds an unconditional one), four levels 32 -> 16 -> 8 -> 4. A conv
    # costs ~ H*W*C^2, so every level costs about the same FLOPs while the parameters sit at low
    # resolution: 2.1 M parameters, 44 GFLOP per training step at batch 64.
    "fashion-32": UNetConfig(
        in_channels=1, out_channels=1, sample_size=32,
        block_out_channels=(16, 32, 64, 128),
        down_block_types=(PLAIN_DOWN,) * 4, mid_block_type=PLAIN_MID, up_block_types=(PLAIN_UP,) * 4,
        layers_per_block=1, num_heads=1, cross_attention_dim=None, norm_num_groups=8,
    ),
    # Chapter 04: text-conditioned latent diffusion on 8x8x4 Shapes latents, cross-attention to
    # the tokens of a mini text encoder of width 64; attention at 8x8 and 4x4 and in the 2x2 mid
    # block, head dim 16-32. 3.2 M parameters, 12 GFLOP per training step at batch 64.
    "shapes-latent": UNetConfig(
        in_channels=4, out_channels=4, sample_size=8,
        block_out_channels=(32, 64, 128),
        down_block_types=(CROSS_DOWN, CROSS_DOWN, PLAIN_DOWN), mid_block_type=CROSS_MID,
        up_block_types=(PLAIN_UP, CROSS_UP, CROSS_UP),
        layers_per_block=1, num_heads=(2, 4, 4), cross_attention_dim=64, norm_num_groups=32,
    ),
}


def get_preset(name: str) -> UNetConfig:
    """The named config, or a clear error listing the known names."""
    if name not in PRESETS:
        raise KeyError(f"unknown U-Net preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]


# --------------------------------------------------------------------------- diffusers bridge
# UNet2DConditionModel options the course U-Net does not implement, with the only value it accepts.
_UNSUPPORTED = dict(
    center_input_sample=False, only_cross_attention=False, mid_block_scale_factor=1, act_fn="silu",
    encoder_hid_dim=None, encoder_hid_dim_type=None, num_attention_heads=None, dual_cross_attention=False,
    class_embed_type=None, num_class_embeds=None, resnet_time_scale_shift="default", resnet_skip_time_act=False,
    resnet_out_scale_factor=1.0, time_embedding_type="positional", time_embedding_dim=None,
    time_embedding_act_fn=None, timestep_post_act=None, time_cond_proj_dim=None, conv_in_kernel=3,
    conv_out_kernel=3, attention_type="default", class_embeddings_concat=False, cross_attention_norm=None,
    reverse_transformer_layers_per_block=None,
)
_RENAMED = {"attention_head_dim": "num_heads"}  # diffusers name -> course name (see UNetConfig.num_heads)
_IGNORED = {"upcast_attention", "mid_block_only_cross_attention", "addition_embed_type_num_heads"}  # no effect here in float32


def config_from_diffusers(cfg: dict[str, Any]) -> UNetConfig:
    """UNetConfig from a diffusers UNet2DConditionModel config (its constructor arguments).

    Raises:
        NotImplementedError: for options the course U-Net does not implement.
    """
    cfg = {k: v for k, v in dict(cfg).items() if not k.startswith("_")}
    def same(v, ok):  # per-level lists of the accepted value count too, e.g. only_cross_attention=[False] * n
        return all(same(x, ok) for x in v) if isinstance(v, (list, tuple)) else v == ok

    bad = {k: cfg[k] for k, ok in _UNSUPPORTED.items() if k in cfg and not same(cfg[k], ok)}
    if bad:
        raise NotImplementedError(f"the course U-Net does not implement these UNet2DConditionModel options: {bad}")
    fields = set(UNetConfig.__dataclass_fields__)
    out = {}
    for k, v in cfg.items():
        if k in _UNSUPPORTED or k in _IGNORED:
            continue
        k = _RENAMED.get(k, k)
        if k not in fields:
            raise NotImplementedError(f"unknown UNet2DConditionModel option {k!r}")
        out[k] = tuple(v) if isinstance(v, list) else v
    cad = out.get("cross_attention_dim", 1280)
    if isinstance(cad, tuple):
        if len(set(cad)) != 1:
            raise NotImplementedError(f"per-level cross_attention_dim {cad} is not supported")
        cad = cad[0]
    out["cross_attention_dim"] = cad
    probe = UNetConfig(**{**out, "cross_attention_dim": cad})
    if not probe.has_cross_attention:
        out["cross_attention_dim"] = None  # unused by an unconditional model
    if isinstance(out.get("sample_size"), tuple):
        out["sample_size"] = out["sample_size"][0]
    return UNetConfig(**out)


def diffusers_config(config: UNetConfig) -> dict[str, Any]:
    """The UNet2DConditionModel constructor arguments that build the same network as `config`."""
    if config.mid_block_self_attention:
        raise NotImplementedError("UNet2DConditionModel has no mid block with self-attention only")
    d = asdict(config)
    d.pop("mid_block_self_attention")
    d["attention_head_dim"] = d.pop("num_heads")  # the diffusers misnomer: it is the head count
    if d["cross_attention_dim"] is None:
        d.pop("cross_attention_dim")  # diffusers needs an int; an unconditional model never uses it
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def parity_unet(config: dict[str, Any] | None = None, seed: int = 0) -> float:
    """Max |course - diffusers| of the U-Net output, same random weights and inputs, float32.

    Every parameter of the reference gets extra Gaussian noise (std 0.05) so that zero or
    identity initialisations (GroupNorm, biases) cannot hide a wrong wiring.

    Args:
        config: UNet2DConditionModel constructor arguments; None takes a small SD-like default.
        seed: seeds weights and inputs.

    Returns:
        The largest absolute difference of the outputs.
    """
    from diffusers import UNet2DConditionModel

    config = config or dict(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=(CROSS_DOWN, PLAIN_DOWN), up_block_types=(PLAIN_UP, CROSS_UP),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8,
    )
    torch.manual_seed(seed)
    ref = UNet2DConditionModel(**config).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = UNet.from_diffusers(ref).eval()
    cfg = ours.config
    side = cfg.sample_size or 4 * 2 ** (cfg.levels - 1)
    x = torch.randn(2, cfg.in_channels, side, side)
    t = torch.tensor([3, 731])
    cond = torch.randn(2, 7, cfg.cross_attention_dim) if cfg.has_cross_attention else None
    added = None
    if cfg.addition_embed_type == "text_time":
        n_ids = 6  # SDXL: original size, crop top-left, target size
        pooled = cfg.projection_class_embeddings_input_dim - n_ids * cfg.addition_time_embed_dim
        added = {"text_embeds": torch.randn(2, pooled), "time_ids": torch.randint(0, 1024, (2, n_ids)).float()}
    with torch.no_grad():
        expected = ref(x, t, encoder_hidden_states=cond, added_cond_kwargs=added).sample
        got = ours(x, t, cond, added)
    return (got - expected).abs().max().item()
