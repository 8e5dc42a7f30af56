"""Attention and the other small parts every denoiser shares: one implementation for the package.

What lives here, in reading order:
- `timestep_embedding`: the sinusoidal embedding of t (a pure function) and `TimestepEmbedding`,
  the MLP (linear -> SiLU -> linear) that turns it into the vector every block is conditioned on.
- `attention`: split heads -> scaled dot-product attention -> merge heads (a pure function), and
  `Attention`, multi-head self- or cross-attention with separate q/k/v/out projections.
- `SpatialSelfAttention`: GroupNorm + self-attention over the pixels of a feature map, with a
  residual (the attention of DDPM's U-Net mid block and of the VAE).
- `GEGLU`, `GELU` and `FeedForward`: the transformer MLP.
- `BasicTransformerBlock` and `Transformer2D`: LayerNorm + self-attention, LayerNorm +
  cross-attention to the text tokens, LayerNorm + feed-forward, wrapped so that it reads and
  writes a (B, C, H, W) feature map: the attention block of Stable Diffusion's U-Net.

Module and parameter names follow diffusers (`to_q`, `to_k`, `to_v`, `to_out.0`, `ff.net.0.proj`,
`proj_in`, `transformer_blocks`, ...), so a diffusers state dict loads with no renaming.

Shape letters: B batch, C channels, H height, W width, T query tokens, S key/value tokens
(T = S for self-attention), D token width, nh heads, hd head dimension (D = nh * hd).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# --------------------------------------------------------------------------- time embedding
def timestep_embedding(
    t: torch.Tensor,
    dim: int,
    flip_sin_to_cos: bool = False,
    downscale_freq_shift: float = 1.0,
    max_period: float = 10000.0,
    scale: float = 1.0,
) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps.

    Frequency k of dim/2 is f_k = max_period ** (-k / (dim/2 - downscale_freq_shift)); the
    embedding is [sin(t f), cos(t f)], or [cos(t f), sin(t f)] with `flip_sin_to_cos`.
    The defaults are those of diffusers' `get_timestep_embedding`; Stable Diffusion's U-Net
    uses flip_sin_to_cos=True, downscale_freq_shift=0.

    Args:
        t: (B,) timesteps, integer or float.
        dim: embedding width; an odd width gets a zero column at the end.
        flip_sin_to_cos: put the cosines first.
        downscale_freq_shift: shifts the denominator of the exponent (1 in DDPM's code, 0 in SD).
        max_period: the longest wavelength.
        scale: multiplies t f before sin/cos.

    Returns:
        (B, dim) float32 embedding.

    Ref: Vaswani et al. 2017, Sec. 3.5; Ho et al. 2020, Appendix B.
    """
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding expects t of shape (B,), got {tuple(t.shape)}")
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(exponent / (half - downscale_freq_shift))  # (dim/2,)
    args = scale * t[:, None].float() * freqs[None, :]  # (B, dim/2)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)  # (B, dim)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)  # (B, dim) cos first
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))  # (B, dim)
    return emb


class TimestepEmbedding(nn.Module):
    """MLP on the sinusoidal embedding: linear -> SiLU -> linear (diffusers' `TimestepEmbedding`).

    Args:
        in_dim: width of the input (the sinusoidal embedding, or any vector to embed).
        dim: hidden and output width (4x the first U-Net width in SD).
        out_dim: output width if it differs from `dim`.
    """

    def __init__(self, in_dim: int, dim: int, out_dim: int | None = None):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(dim, out_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim)."""
        return self.linear_2(self.act(self.linear_1(x)))


# --------------------------------------------------------------------------- attention
def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Multi-head scaled dot-product attention, softmax(q k^T / sqrt(hd)) v, per head.

    Args:
        q: (B, T, D) queries, already projected.
        k: (B, S, D) keys.
        v: (B, S, D) values.
        heads: nh; D must be divisible by it.
        mask: optional boolean (B, S) (True = attend) or additive mask broadcastable to
            (B, nh, T, S).

    Returns:
        (B, T, D) attended values, heads merged back.

    Ref: Vaswani et al. 2017, Eq. 1.
    """
    B, T, D = q.shape
    hd = D // heads
    q = q.view(B, T, heads, hd).transpose(1, 2)  # (B, nh, T, hd)
    k = k.view(B, k.shape[1], heads, hd).transpose(1, 2)  # (B, nh, S, hd)
    v = v.view(B, v.shape[1], heads, hd).transpose(1, 2)  # (B, nh, S, hd)
    if mask is not None and mask.ndim == 2:
        mask = mask[:, None, None, :]  # (B, 1, 1, S)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hd)
    return out.transpose(1, 2).reshape(B, T, D)  # (B, T, D)


class Attention(nn.Module):
    """Multi-head attention: self-attention, or cross-attention to a second token sequence.

    Args:
        query_dim: D, width of the query tokens (and of the output unless `out_dim`).
        heads: nh.
        head_dim: hd; the inner width is nh * hd.
        cross_attention_dim: width of the key/value tokens for cross-attention; None means
            self-attention (keys and values come from the queries' own tokens).
        bias: bias on to_q/to_k/to_v (False in SD's transformer blocks).
        out_bias: bias on to_out.0.
        out_dim: output width; defaults to `query_dim`.
        qk_norm: RMS-normalise q and k per head (`norm_q`, `norm_k`, eps 1e-6), as SD3 does.
        dropout: dropout after the output projection.
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        head_dim: int,
        cross_attention_dim: int | None = None,
        bias: bool = False,
        out_bias: bool = True,
        out_dim: int | None = None,
        qk_norm: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        inner = heads * head_dim
        kv_dim = cross_attention_dim or query_dim
        self.heads, self.head_dim = heads, head_dim
        self.is_cross_attention = cross_attention_dim is not None
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(kv_dim, inner, bias=bias)
        self.to_v = nn.Linear(kv_dim, inner, bias=bias)
        self.norm_q = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else None
        self.norm_k = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else None
        # a list so that the output projection is `to_out.0`, as in diffusers
        self.to_out = nn.ModuleList([nn.Linear(inner, out_dim or query_dim, bias=out_bias), nn.Dropout(dropout)])

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend from the tokens of `x` to those of `cond` (or of `x` itself).

        Args:
            x: (B, T, D) query tokens.
            cond: (B, S, cross_attention_dim) key/value tokens; None for self-attention.
            mask: optional key mask, see `attention`.

        Returns:
            (B, T, out_dim).
        """
        if self.is_cross_attention and cond is None:
            raise ValueError("this is a cross-attention layer: pass the key/value tokens `cond` (B, S, D_cond)")
        kv = x if cond is None else cond
        q, k, v = self.to_q(x), self.to_k(kv), self.to_v(kv)  # (B, T, nh*hd), (B, S, nh*hd) x2
        if self.norm_q is not None:
            B, T, S, nh, hd = x.shape[0], x.shape[1], kv.shape[1], self.heads, self.head_dim
            q = self.norm_q(q.view(B, T, nh, hd)).view(B, T, nh * hd)  # (B, T, nh*hd), per-head norm
            k = self.norm_k(k.view(B, S, nh, hd)).view(B, S, nh * hd)  # (B, S, nh*hd), per-head norm
        out = attention(q, k, v, self.heads, mask)  # (B, T, nh*hd)
        return self.to_out[1](self.to_out[0](out))  # (B, T, out_dim)


class SpatialSelfAttention(Attention):
    """GroupNorm + single- or multi-head self-attention over the H*W pixels, plus the input.

    The attention block of DDPM's U-Net mid block and of the VAE (diffusers' `Attention` with
    `residual_connection=True` and `norm_num_groups`): out = x + attn(GroupNorm(x)).

    Args:
        channels: C.
        head_dim: hd; nh = C // hd heads.
        groups: GroupNorm groups.
        eps: GroupNorm epsilon.
    """

    def __init__(self, channels: int, head_dim: int, groups: int = 32, eps: float = 1e-6):
        if channels % head_dim:
            raise ValueError(f"channels {channels} must be divisible by head_dim {head_dim}")
        super().__init__(channels, heads=channels // head_dim, head_dim=head_dim, bias=True)
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """(B, C, H, W) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        h = self.group_norm(x).view(B, C, H * W).transpose(1, 2)  # (B, H*W, C)
        h = super().forward(h)  # (B, H*W, C)
        return x + h.transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)


# --------------------------------------------------------------------------- feed-forward
class GEGLU(nn.Module):
    """Gated GELU: project to 2*dim_out, split into (h, gate), return h * GELU(gate).

    Ref: Shazeer 2020, "GLU Variants Improve Transformer", Eq. 5.
    """

    def __init__(self, dim_in: int, dim_out: int, bias: bool = True):
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, dim_in) -> (B, T, dim_out)."""
        h, gate = self.proj(x).chunk(2, dim=-1)  # (B, T, dim_out) x2
        return h * F.gelu(gate)


class GELU(nn.Module):
    """Linear then GELU (exact, or the tanh approximation DiT and SD3 use)."""

    def __init__(self, dim_in: int, dim_out: int, approximate: str = "none", bias: bool = True):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out, bias=bias)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, dim_in) -> (B, T, dim_out)."""
        return F.gelu(self.proj(x), approximate=self.approximate)


class FeedForward(nn.Module):
    """The transformer MLP: activation projection (`net.0`), dropout, output linear (`net.2`).

    Args:
        dim: input width D.
        dim_out: output width; defaults to D.
        mult: hidden width is mult * D unless `inner_dim` is given.
        activation: "geglu" (SD's U-Net), "gelu" or "gelu-approximate" (DiT, SD3).
        inner_dim: hidden width.
        bias: biases on both linears.
        dropout: dropout on the hidden activations.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int | None = None,
        mult: int = 4,
        activation: str = "geglu",
        inner_dim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        inner = inner_dim or mult * dim
        if activation == "geglu":
            act: nn.Module = GEGLU(dim, inner, bias=bias)
        elif activation in ("gelu", "gelu-approximate"):
            act = GELU(dim, inner, approximate="tanh" if activation == "gelu-approximate" else "none", bias=bias)
        else:
            raise ValueError(f"unknown activation {activation!r}; use 'geglu', 'gelu' or 'gelu-approximate'")
        self.net = nn.ModuleList([act, nn.Dropout(dropout), nn.Linear(inner, dim_out or dim, bias=bias)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, dim_out)."""
        for layer in self.net:
            x = layer(x)
        return x


# --------------------------------------------------------------------------- transformer blocks
class BasicTransformerBlock(nn.Module):
    """Pre-LayerNorm transformer block: self-attention, cross-attention, feed-forward, each residual.

    Args:
        dim: token width D.
        heads: nh.
        head_dim: hd (SD sets hd = D / nh).
        cross_attention_dim: width of the text tokens; None drops the cross-attention (norm2,
            attn2), leaving a plain self-attention block.
        activation: feed-forward activation, see `FeedForward`.
        norm_eps: LayerNorm epsilon.

    Ref: Rombach et al. 2022 (LDM), Sec. 3.3 and Appendix; Vaswani et al. 2017.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        cross_attention_dim: int | None = None,
        activation: str = "geglu",
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn1 = Attention(dim, heads, head_dim)
        if cross_attention_dim is not None:
            self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
            self.attn2 = Attention(dim, heads, head_dim, cross_attention_dim=cross_attention_dim)
        else:
            self.norm2 = self.attn2 = None
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.ff = FeedForward(dim, activation=activation)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D), text tokens (B, S, D_cond) -> (B, T, D)."""
        x = x + self.attn1(self.norm1(x))  # (B, T, D)
        if self.attn2 is not None:
            x = x + self.attn2(self.norm2(x), cond)  # (B, T, D) attends to (B, S, D_cond)
        return x + self.ff(self.norm3(x))  # (B, T, D)


class Transformer2D(nn.Module):
    """A stack of transformer blocks that reads and writes a feature map, with a residual.

    GroupNorm -> proj_in -> pixels as tokens -> `num_layers` x BasicTransformerBlock -> proj_out
    -> back to a map -> + input (diffusers' `Transformer2DModel` on continuous inputs).

    Args:
        channels: C, also the token width D (SD keeps D = C).
        heads: nh; hd = C // nh.
        cross_attention_dim: width of the text tokens, or None for self-attention only.
        num_layers: number of transformer blocks (SDXL: 1, 2 or 10 per level).
        groups: GroupNorm groups (eps is fixed at 1e-6, as diffusers).
        use_linear_projection: proj_in/proj_out as Linear on tokens (SD 2.x, SDXL) instead of
            1x1 convolutions on the map (SD 1.x); the same maths, different weight shapes.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        cross_attention_dim: int | None,
        num_layers: int = 1,
        groups: int = 32,
        use_linear_projection: bool = False,
    ):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} must be divisible by the number of heads {heads}")
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        proj = nn.Linear if use_linear_projection else (lambda i, o: nn.Conv2d(i, o, kernel_size=1))
        self.proj_in = proj(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, heads, channels // heads, cross_attention_dim) for _ in range(num_layers)]
        )
        self.proj_out = proj(channels, channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W), text tokens (B, S, D_cond) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        h = self.norm(x)
        if self.use_linear_projection:
            h = self.proj_in(h.permute(0, 2, 3, 1).reshape(B, H * W, C))  # (B, H*W, C)
        else:
            h = self.proj_in(h).permute(0, 2, 3, 1).reshape(B, H * W, C)  # (B, H*W, C)
        for block in self.transformer_blocks:
            h = block(h, cond)  # (B, H*W, C)
        if self.use_linear_projection:
            h = self.proj_out(h).reshape(B, H, W, C).permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)
        else:
            h = self.proj_out(h.reshape(B, H, W, C).permute(0, 3, 1, 2).contiguous())  # (B, C, H, W)
        return x + h
