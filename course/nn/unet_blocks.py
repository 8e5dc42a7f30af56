"""The U-Net's building blocks, in figure order (diffusers' names, so state dicts load unchanged).

ResnetBlock2D (GroupNorm, SiLU, conv; the time embedding added between the two convs) ->
Downsample2D / Upsample2D -> DownBlock, MidBlock, UpBlock: resnets, optionally interleaved with
the `Transformer2D` attention blocks of `course.nn.attention`. `course.nn.unet` assembles them.

Shape letters: B batch, C channels, H height, W width, T text tokens, D token width.
Ref: Ronneberger et al. 2015; Ho et al. 2020, Appendix B; Rombach et al. 2022, Sec. 3.3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course.nn.attention import SpatialSelfAttention, Transformer2D


# --------------------------------------------------------------------------- small blocks
class ResnetBlock2D(nn.Module):
    """GroupNorm -> SiLU -> conv -> + time embedding -> GroupNorm -> SiLU -> conv, plus a shortcut.

    The time embedding is added per channel after the first conv (SD's "default" injection,
    no scale-shift). A 1x1 `conv_shortcut` matches channels when they change.

    Ref: Ho et al. 2020, Appendix B; He et al. 2016.
    """

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, groups: int, eps: float, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W), emb (B, temb_dim) -> (B, C_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]  # (B, C_out, H, W) + (B, C_out, 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Downsample2D(nn.Module):
    """Halve H and W with a stride-2 3x3 convolution."""

    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H/2, W/2)."""
        return self.conv(x)


class Upsample2D(nn.Module):
    """Double H and W: nearest-neighbour interpolation, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, 2H, 2W)."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# --------------------------------------------------------------------------- U-Net blocks
class DownBlock(nn.Module):
    """One level of the encoder: `num_layers` resnets (each followed by a Transformer2D when
    `transformer_layers` is set: diffusers' CrossAttnDownBlock2D; else DownBlock2D), then an
    optional Downsample2D. Returns the output and every intermediate map as skips.

    Args:
        in_ch, out_ch: channels in and out (the first resnet changes them).
        temb_dim: width of the time embedding.
        num_layers: resnets in the level.
        add_downsample: halve H, W at the end (all levels but the last).
        groups, eps, dropout: GroupNorm groups and epsilon, resnet dropout.
        downsample_padding: padding of the stride-2 conv.
        heads: attention heads of the Transformer2D blocks.
        cross_attention_dim: width of the text tokens.
        transformer_layers: transformer blocks per Transformer2D; None or 0 for no attention.
        use_linear_projection: see `Transformer2D`.
    """

    def __init__(self, in_ch, out_ch, temb_dim, num_layers, add_downsample, groups, eps, dropout,
                 downsample_padding=1, heads=1, cross_attention_dim=None, transformer_layers=None,
                 use_linear_projection=False):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, temb_dim, groups, eps, dropout) for i in range(num_layers)]
        )
        if transformer_layers:
            self.attentions = nn.ModuleList(
                [Transformer2D(out_ch, heads, cross_attention_dim, transformer_layers, groups, use_linear_projection)
                 for _ in range(num_layers)]
            )
        else:
            self.attentions = None
        self.downsamplers = nn.ModuleList([Downsample2D(out_ch, downsample_padding)]) if add_downsample else None

    def forward(self, x, temb, cond=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, C_in, H, W) -> (B, C_out, H/2, W/2) and the skips [(B, C_out, H, W), ...]."""
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, cond)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    """The bottleneck: resnet, then (attention -> resnet) unless `kind` is "resnet".

    kind: "cross_attn" (diffusers' UNetMidBlock2DCrossAttn: a Transformer2D between two resnets),
    "resnet" (UNet2DConditionModel's UNetMidBlock2D: a single resnet, NO attention) or
    "self_attn" (UNetMidBlock2D as DDPM's UNet2DModel builds it: GroupNorm self-attention
    between two resnets).

    Args:
        ch: channels C of the bottleneck.
        temb_dim, groups, eps, dropout: as in `DownBlock`.
        kind: "cross_attn", "resnet" or "self_attn".
        heads: attention heads (the self-attention head dim is ch // heads).
        cross_attention_dim, transformer_layers, use_linear_projection: for "cross_attn".
    """

    def __init__(self, ch, temb_dim, groups, eps, dropout, kind, heads=1, cross_attention_dim=None,
                 transformer_layers=1, use_linear_projection=False):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, temb_dim, groups, eps, dropout)])
        if kind == "cross_attn":
            attn: nn.Module = Transformer2D(ch, heads, cross_attention_dim, transformer_layers, groups, use_linear_projection)
        elif kind == "self_attn":
            attn = SpatialSelfAttention(ch, ch // heads, groups, eps)
        elif kind == "resnet":
            self.attentions = nn.ModuleList()
            return
        else:
            raise ValueError(f"unknown mid block kind {kind!r}")
        self.attentions = nn.ModuleList([attn])
        self.resnets.append(ResnetBlock2D(ch, ch, temb_dim, groups, eps, dropout))

    def forward(self, x, temb, cond=None) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        x = self.resnets[0](x, temb)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            x = attn(x, cond) if isinstance(attn, Transformer2D) else attn(x)
            x = resnet(x, temb)
        return x


class UpBlock(nn.Module):
    """One level of the decoder: `num_layers` resnets, each eating one skip (concatenated on
    channels) and followed by a Transformer2D if `transformer_layers` is set (diffusers'
    CrossAttnUpBlock2D; else UpBlock2D), then an optional nearest Upsample2D.

    Args:
        in_ch: channels of the skip eaten by the last resnet (the level below's width).
        prev_ch: channels arriving from the level below (or the mid block).
        out_ch: this level's width; the other skips have it too.
        num_layers: resnets, one more than the down level's (it also eats the downsampler's skip).
        add_upsample: double H, W at the end (all levels but the last).
        other arguments: as in `DownBlock`.
    """

    def __init__(self, in_ch, prev_ch, out_ch, temb_dim, num_layers, add_upsample, groups, eps, dropout,
                 heads=1, cross_attention_dim=None, transformer_layers=None, use_linear_projection=False):
        super().__init__()
        self.resnets = nn.ModuleList()
        for i in range(num_layers):
            skip_ch = in_ch if i == num_layers - 1 else out_ch
            res_in = prev_ch if i == 0 else out_ch
            self.resnets.append(ResnetBlock2D(res_in + skip_ch, out_ch, temb_dim, groups, eps, dropout))
        if transformer_layers:
            self.attentions = nn.ModuleList(
                [Transformer2D(out_ch, heads, cross_attention_dim, transformer_layers, groups, use_linear_projection)
                 for _ in range(num_layers)]
            )
        else:
            self.attentions = None
        self.upsamplers = nn.ModuleList([Upsample2D(out_ch)]) if add_upsample else None

    def forward(self, x, skips: list[torch.Tensor], temb, cond=None) -> torch.Tensor:
        """(B, C_prev, H, W), skips popped from the end -> (B, C_out, 2H, 2W)."""
        for i, resnet in enumerate(self.resnets):
            x = torch.cat([x, skips.pop()], dim=1)  # (B, C_x + C_skip, H, W)
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, cond)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x
