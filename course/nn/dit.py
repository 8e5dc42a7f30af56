"""DiT, the diffusion transformer of Peebles & Xie 2023, from scratch (diffusers' DiTTransformer2DModel).

Reading order follows the paper's Fig. 3, bottom-up:

    x (B, C, H, W) --patchify: p x p conv, stride p--> tokens (B, T, D), T = (H/p)(W/p)
                   + fixed 2-D sin-cos position embeddings (T, D)
    t (B,)  --sinusoid (256) -> MLP-->  t_emb (B, D)
    y (B,)  --table of num_classes + 1 rows (the last is the null class)-->  y_emb (B, D)
    c = t_emb + y_emb (B, D): the one vector that conditions every block
    N DiT blocks, conditioned one of four ways (`CONDITIONINGS`, Sec. 3.2):
        in-context       t_emb and y_emb appended as two extra tokens, a plain ViT block
        cross-attention  a cross-attention layer over the two tokens [t_emb, y_emb] after self-attention
        adaln            LayerNorm's scale and shift regressed from c (no learned affine)
        adaln-zero       adaln plus a gate alpha on each residual branch, all zero at init: every
                         block starts as the identity
    final layer: LayerNorm (modulated by c for the adaLN variants), linear D -> p*p*C_out, unpatchify
    output (B, C_out, H, W); C_out = 2C with learned sigma: eps and the variance interpolation v

DiT predicts the noise eps and a diagonal covariance (Nichol & Dhariwal 2021), on a DDPM schedule;
it does not predict the clean image (that is a common mix-up with DALL-E 2's prior, which predicts
a clean CLIP embedding; SD3's MM-DiT predicts a flow velocity).

Two numbers in which diffusers' port differs from DiT's own code (`facebookresearch/DiT`, models.py),
kept as config fields so that both load exactly: the timestep sinusoid's frequency shift (DiT 0,
diffusers' CombinedTimestepLabelEmbeddings 1) and the MLP branch's LayerNorm eps (DiT 1e-6,
diffusers' `norm_eps` default 1e-5). diffusers also gives every block its own copy of the
timestep and label embedders (converted checkpoints hold 28 identical copies); DiT has one.

Shape letters: B batch, C channels, H height, W width, T tokens, D width, p patch size, nh heads.
Ref: Peebles & Xie 2023, "Scalable Diffusion Models with Transformers", Sec. 3 and Fig. 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from course.nn.attention import Attention, FeedForward, TimestepEmbedding, timestep_embedding

CONDITIONINGS = ("in-context", "cross-attention", "adaln", "adaln-zero")


# --------------------------------------------------------------------------- tokens in, tokens out
def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Cut an image into non-overlapping p x p patches, one flat vector per patch, row-major.

    The inverse of `unpatchify`; a p x p, stride-p convolution equals this followed by a linear map.

    Args:
        x: (B, C, H, W), H and W divisible by p.
        p: patch size.

    Returns:
        (B, T, p*p*C) with T = (H/p)(W/p), each vector ordered (row in patch, column in patch, channel).
    """
    B, C, H, W = x.shape
    if H % p or W % p:
        raise ValueError(f"image {H}x{W} is not divisible into {p}x{p} patches")
    x = x.reshape(B, C, H // p, p, W // p, p)  # (B, C, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)  # (B, h, w, p, p, C)
    return x.reshape(B, (H // p) * (W // p), p * p * C)  # (B, T, p*p*C)


def unpatchify(x: torch.Tensor, p: int, channels: int, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Put patch vectors back into an image: (B, T, p*p*C) -> (B, C, h*p, w*p), as DiT's `unpatchify`.

    Args:
        x: (B, T, p*p*C) token outputs, row-major over an h x w grid of patches.
        p: patch size.
        channels: C.
        grid: (h, w); default square, h = w = sqrt(T).
    """
    B, T, _ = x.shape
    h, w = grid if grid is not None else (math.isqrt(T), math.isqrt(T))
    if h * w != T or x.shape[-1] != p * p * channels:
        raise ValueError(f"cannot unpatchify {tuple(x.shape)} into a {h}x{w} grid of {p}x{p}x{channels} patches")
    x = x.reshape(B, h, w, p, p, channels)  # (B, h, w, p, p, C)
    x = torch.einsum("nhwpqc->nchpwq", x)  # (B, C, h, p, w, p)
    return x.reshape(B, channels, h * p, w * p)  # (B, C, H, W)


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """(N,) positions -> (N, dim): [sin(pos w_k), cos(pos w_k)] with w_k = 10000^(-k / (dim/2))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))  # (dim/2,)
    out = pos.double()[:, None] * omega[None]  # (N, dim/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (N, dim)


def sincos_pos_embed_2d(dim: int, h: int, w: int) -> torch.Tensor:
    """Fixed 2-D position embeddings for an h x w grid of tokens, row-major: (h*w, dim) float32.

    The first dim/2 channels encode the column (x), the last dim/2 the row (y), each with the
    1-D sin-cos code of the Transformer; DiT (after MAE) never learns them.

    Ref: Vaswani et al. 2017, Sec. 3.5; He et al. 2022 (MAE), `get_2d_sincos_pos_embed`.
    """
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")  # (h, w) each
    emb_x = sincos_1d(dim // 2, cols.flatten())  # (h*w, dim/2)
    emb_y = sincos_1d(dim // 2, rows.flatten())  # (h*w, dim/2)
    return torch.cat([emb_x, emb_y], dim=1).float()  # (h*w, dim)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift, with one (shift, scale) per image broadcast over its tokens.

    Args:
        x: (B, T, D) normalised tokens.
        shift, scale: (B, D), regressed from the conditioning vector c.
    """
    return x * (1 + scale[:, None]) + shift[:, None]  # (B, T, D)


# --------------------------------------------------------------------------- embedders
class PatchEmbed(nn.Module):
    """Patchify as a p x p convolution with stride p: (B, C, H, W) -> (B, T, D)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, T, D)


class TimestepEmbedder(nn.Module):
    """t (B,) -> sinusoid of width `frequency_dim` (cosines first) -> MLP -> (B, D)."""

    def __init__(self, dim: int, frequency_dim: int = 256, freq_shift: float = 0.0):
        super().__init__()
        self.frequency_dim, self.freq_shift = frequency_dim, freq_shift
        self.mlp = TimestepEmbedding(frequency_dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freqs = timestep_embedding(t, self.frequency_dim, flip_sin_to_cos=True, downscale_freq_shift=self.freq_shift)
        return self.mlp(freqs.to(self.mlp.linear_1.weight.dtype))  # (B, D)


class LabelEmbedder(nn.Module):
    """Class labels (B,) -> (B, D); row `num_classes` is the null class that guidance contrasts with.

    DiT drops labels to the null class inside this module with torch's global random state; the
    course's recipes draw the drop mask from their own seeded generator (`drop_labels`) instead.
    """

    def __init__(self, num_classes: int, dim: int, dropout_prob: float):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.device.type != "meta" and (y.min() < 0 or y.max() >= self.embedding_table.num_embeddings):
            raise ValueError(f"class labels must be in 0 ... {self.embedding_table.num_embeddings - 1} "
                             f"({self.num_classes} = the null class); got {y.min().item()} ... {y.max().item()}")
        return self.embedding_table(y)  # (B, D)


def drop_labels(y: torch.Tensor, p: float, num_classes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Label dropout for classifier-free guidance: each label becomes the null class with probability p."""
    drop = torch.rand(y.shape, generator=generator, device=y.device) < p  # (B,)
    return torch.where(drop, torch.full_like(y, num_classes), y)


# --------------------------------------------------------------------------- blocks
class DiTBlock(nn.Module):
    """One DiT block: self-attention and MLP, each a residual branch, conditioned as `conditioning` says."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, conditioning: str, mlp_norm_eps: float = 1e-6):
        super().__init__()
        self.conditioning = conditioning
        affine = conditioning in ("in-context", "cross-attention")  # the adaLN variants regress theirs from c
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)
        self.attn = Attention(dim, heads, dim // heads, bias=True)
        if conditioning == "cross-attention":
            self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
            self.cross_attn = Attention(dim, heads, dim // heads, cross_attention_dim=dim, bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=affine, eps=mlp_norm_eps)
        self.mlp = FeedForward(dim, inner_dim=int(dim * mlp_ratio), activation="gelu-approximate")
        n_mod = {"adaln": 4, "adaln-zero": 6}.get(conditioning, 0)  # (shift, scale[, gate]) per branch
        self.modulation = nn.Linear(dim, n_mod * dim) if n_mod else None

    def forward(self, x: torch.Tensor, c: torch.Tensor, cond_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), c (B, D), cond_tokens (B, 2, D) for cross-attention -> (B, T, D)."""
        if self.conditioning == "adaln-zero":
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(F.silu(c)).chunk(6, dim=-1)
            x = x + gate_msa[:, None] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # (B, T, D)
            return x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (B, T, D)
        if self.conditioning == "adaln":
            shift_msa, scale_msa, shift_mlp, scale_mlp = self.modulation(F.silu(c)).chunk(4, dim=-1)  # (B, D) x4
            x = x + self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # (B, T, D)
            return x + self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (B, T, D)
        x = x + self.attn(self.norm1(x))  # (B, T, D)
        if self.conditioning == "cross-attention":
            x = x + self.cross_attn(self.norm_cross(x), cond_tokens)  # (B, T, D) attending to (B, 2, D)
        return x + self.mlp(self.norm2(x))  # (B, T, D)

    def gates(self, c: torch.Tensor) -> torch.Tensor:
        """adaLN-Zero's gates (B, 2, D): alpha of the attention branch and of the MLP branch."""
        if self.conditioning != "adaln-zero":
            raise ValueError(f"only adaLN-Zero blocks have gates; this block is {self.conditioning!r}")
        chunks = self.modulation(F.silu(c)).chunk(6, dim=-1)  # (B, D) x6
        return torch.stack([chunks[2], chunks[5]], dim=1)  # (B, 2, D)


class FinalLayer(nn.Module):
    """LayerNorm (modulated by c when `adaptive`), then linear D -> p*p*C_out per token."""

    def __init__(self, dim: int, patch_size: int, out_channels: int, adaptive: bool):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=not adaptive, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.modulation = nn.Linear(dim, 2 * dim) if adaptive else None

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), c (B, D) -> (B, T, p*p*C_out)."""
        x = self.norm_final(x)
        if self.modulation is not None:
            shift, scale = self.modulation(F.silu(c)).chunk(2, dim=-1)  # (B, D) x2
            x = modulate(x, shift, scale)
        return self.linear(x)  # (B, T, p*p*C_out)


# --------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class DiTConfig:
    """A DiT; the defaults are DiT-XL/2 at 256x256 (32x32x4 latents, 1000 classes)."""

    input_size: int = 32  # H = W of the input latent
    patch_size: int = 2  # p: tokens are p x p latent pixels, T = (input_size / p)^2
    in_channels: int = 4  # C of the latent
    hidden_size: int = 1152  # D, the token width
    depth: int = 28  # number of DiT blocks
    num_heads: int = 16  # nh; the head width is D / nh
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * D
    num_classes: int = 1000  # class labels 0 ... num_classes - 1; num_classes is the null class
    class_dropout_prob: float = 0.1  # label dropout for CFG during training (> 0 adds the null row)
    learn_sigma: bool = True  # output 2C channels: eps and the variance interpolation v
    conditioning: str = "adaln-zero"  # one of CONDITIONINGS
    frequency_embedding_size: int = 256  # width of the timestep sinusoid
    freq_shift: float = 0.0  # the sinusoid's downscale_freq_shift: DiT's code 0, diffusers' port 1
    mlp_norm_eps: float = 1e-6  # eps of the MLP branch's LayerNorm: DiT 1e-6, diffusers' norm_eps 1e-5

    def __post_init__(self) -> None:
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning={self.conditioning!r} is not one of {CONDITIONINGS}")
        if self.input_size % self.patch_size:
            raise ValueError(f"input_size {self.input_size} is not divisible by patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads or self.hidden_size % 4:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads ({self.num_heads}) and 4")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def grid(self) -> int:
        """Tokens per side, input_size / p."""
        return self.input_size // self.patch_size

    @property
    def null_class(self) -> int:
        return self.num_classes


class DiT(nn.Module):
    """The diffusion transformer: (xt, t, y) -> eps (and v with learned sigma), (B, C_out, H, W).

    Ref: Peebles & Xie 2023, Sec. 3.2 and Fig. 3; `initialize_weights` as DiT's code.
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = cfg = config
        D = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.in_channels, D, cfg.patch_size)
        # fixed, not learned, and not saved: rebuilt from the config
        self.register_buffer("pos_embed", sincos_pos_embed_2d(D, cfg.grid, cfg.grid)[None], persistent=False)
        self.t_embedder = TimestepEmbedder(D, cfg.frequency_embedding_size, cfg.freq_shift)
        self.y_embedder = LabelEmbedder(cfg.num_classes, D, cfg.class_dropout_prob)
        self.blocks = nn.ModuleList(
            DiTBlock(D, cfg.num_heads, cfg.mlp_ratio, cfg.conditioning, cfg.mlp_norm_eps) for _ in range(cfg.depth))
        adaptive = cfg.conditioning in ("adaln", "adaln-zero")
        self.final_layer = FinalLayer(D, cfg.patch_size, cfg.out_channels, adaptive)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's init: Xavier-uniform linears (biases 0), N(0, 0.02) embedders, zeroed modulation and output.

        With adaLN-Zero every gate alpha starts at 0, so each block is the identity and the fresh
        model outputs exactly zero (the final linear is zero too).
        """
        def basic(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(basic)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # the patch conv, initialised as the linear it is
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp.linear_1.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp.linear_2.weight, std=0.02)
        if self.config.conditioning == "adaln-zero":
            for block in self.blocks:
                nn.init.zeros_(block.modulation.weight)
                nn.init.zeros_(block.modulation.bias)
        if self.final_layer.modulation is not None:
            nn.init.zeros_(self.final_layer.modulation.weight)
            nn.init.zeros_(self.final_layer.modulation.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def condition(self, t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(t_emb, y_emb, c = t_emb + y_emb), each (B, D)."""
        t_emb, y_emb = self.t_embedder(t), self.y_embedder(y)  # (B, D) x2
        return t_emb, y_emb, t_emb + y_emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Predict from the noisy latent.

        Args:
            x: (B, C, H, W) xt, H = W = input_size.
            t: (B,) timesteps (integer DDPM steps).
            y: (B,) class labels; `num_classes` is the null class.

        Returns:
            (B, C_out, H, W): eps, then (with learned sigma) v in [-1, 1]-ish, concatenated on channels.
        """
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels or x.shape[-2:] != (cfg.input_size, cfg.input_size):
            raise ValueError(f"DiT expects x of shape (B, {cfg.in_channels}, {cfg.input_size}, {cfg.input_size}), "
                             f"got {tuple(x.shape)}")
        h = self.x_embedder(x) + self.pos_embed  # (B, T, D)
        t_emb, y_emb, c = self.condition(t, y)  # (B, D) x3
        T = h.shape[1]
        cond_tokens = None
        if cfg.conditioning == "in-context":
            h = torch.cat([h, t_emb[:, None], y_emb[:, None]], dim=1)  # (B, T + 2, D)
        elif cfg.conditioning == "cross-attention":
            cond_tokens = torch.stack([t_emb, y_emb], dim=1)  # (B, 2, D)
        for block in self.blocks:
            h = block(h, c, cond_tokens)  # (B, T or T + 2, D)
        h = self.final_layer(h[:, :T], c)  # (B, T, p*p*C_out): in-context drops its two extra tokens
        return unpatchify(h, cfg.patch_size, cfg.out_channels)  # (B, C_out, H, W)

    @classmethod
    def from_diffusers(cls, ref: nn.Module) -> DiT:
        """Copy a diffusers `DiTTransformer2DModel` (any config it supports) into the course's DiT."""
        model = cls(config_from_diffusers(dict(ref.config)))
        model.load_state_dict(state_dict_from_diffusers(ref.state_dict(), len(ref.transformer_blocks)))
        return model


# --------------------------------------------------------------------------- presets
def _preset(D: int, depth: int, heads: int, p: int, **kw: Any) -> DiTConfig:
    return DiTConfig(hidden_size=D, depth=depth, num_heads=heads, patch_size=p, **kw)


# The paper's models (Table 1) at 256x256: 32x32x4 latents, 1000 ImageNet classes, learned sigma.
PRESETS: dict[str, DiTConfig] = {
    f"DiT-{size}/{p}": _preset(D, depth, heads, p)
    for size, (D, depth, heads) in {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16),
                                    "XL": (1152, 28, 16)}.items()
    for p in (2, 4, 8)
}
# The course's: 8x8x4 vae-shapes latents, 18 (colour, shape) classes.
PRESETS["dit-shapes"] = DiTConfig(input_size=8, patch_size=2, hidden_size=192, depth=6, num_heads=3, num_classes=18)
PRESETS["dit-shapes-ablation"] = DiTConfig(input_size=8, patch_size=2, hidden_size=128, depth=4, num_heads=2,
                                           num_classes=18)


def get_preset(name: str, **overrides: Any) -> DiTConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown DiT preset {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


# --------------------------------------------------------------------------- diffusers bridge
def config_from_diffusers(cfg: dict[str, Any]) -> DiTConfig:
    """The DiTConfig of a diffusers DiTTransformer2DModel config (its constructor arguments)."""
    defaults = dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=None, num_layers=28,
                    dropout=0.0, attention_bias=True, sample_size=32, patch_size=2,
                    activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_zero",
                    norm_elementwise_affine=False, norm_eps=1e-5)
    c = defaults | {k: v for k, v in cfg.items() if not k.startswith("_")}
    fixed = dict(dropout=0.0, attention_bias=True, activation_fn="gelu-approximate", norm_type="ada_norm_zero",
                 norm_elementwise_affine=False)
    bad = {k: c[k] for k, v in fixed.items() if c[k] != v}
    if bad:
        raise ValueError(f"the course's DiT supports {fixed}; this config has {bad}")
    out = c["out_channels"] or c["in_channels"]
    if out not in (c["in_channels"], 2 * c["in_channels"]):
        raise ValueError(f"out_channels must be in_channels or 2 * in_channels (learned sigma), got {out}")
    return DiTConfig(input_size=c["sample_size"], patch_size=c["patch_size"], in_channels=c["in_channels"],
                     hidden_size=c["num_attention_heads"] * c["attention_head_dim"], depth=c["num_layers"],
                     num_heads=c["num_attention_heads"], mlp_ratio=4.0, num_classes=c["num_embeds_ada_norm"],
                     class_dropout_prob=0.1, learn_sigma=out == 2 * c["in_channels"], freq_shift=1.0,
                     mlp_norm_eps=c["norm_eps"])


_BLOCK_KEYS = {"norm1.linear": "modulation", "attn1.to_q": "attn.to_q", "attn1.to_k": "attn.to_k",
               "attn1.to_v": "attn.to_v", "attn1.to_out.0": "attn.to_out.0", "ff.net.0.proj": "mlp.net.0.proj",
               "ff.net.2": "mlp.net.2"}
_TOP_KEYS = {"pos_embed.proj": "x_embedder.proj", "proj_out_1": "final_layer.modulation",
             "proj_out_2": "final_layer.linear"}
_EMB_KEYS = {"timestep_embedder.linear_1": "t_embedder.mlp.linear_1",
             "timestep_embedder.linear_2": "t_embedder.mlp.linear_2",
             "class_embedder.embedding_table": "y_embedder.embedding_table"}


def state_dict_from_diffusers(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Rename a DiTTransformer2DModel state dict to the course's keys.

    diffusers holds a timestep/label embedder in every block (`transformer_blocks.i.norm1.emb`);
    DiT has one. They must be identical copies (as in converted checkpoints): block 0's is kept.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == "pos_embed.pos_embed":
            continue  # fixed sin-cos table, rebuilt from the config (compared in `parity_dit`)
        name, _, leaf = key.rpartition(".")
        if name in _TOP_KEYS:
            out[f"{_TOP_KEYS[name]}.{leaf}"] = value
            continue
        parts = name.split(".")
        if parts[0] != "transformer_blocks":
            raise KeyError(f"unexpected diffusers DiT key {key!r}")
        i, sub = int(parts[1]), ".".join(parts[2:])
        if sub.startswith("norm1.emb."):
            emb = sub[len("norm1.emb."):]
            ours = _EMB_KEYS[emb] + "." + leaf
            if i == 0:
                out[ours] = value
            elif not torch.equal(value, sd[f"transformer_blocks.0.norm1.emb.{emb}.{leaf}"]):
                raise ValueError(f"block {i}'s timestep/label embedder differs from block 0's: DiT has one embedder; "
                                 "tie them (copy block 0's) before converting")
            continue
        if sub not in _BLOCK_KEYS:
            raise KeyError(f"unexpected diffusers DiT key {key!r}")
        out[f"blocks.{i}.{_BLOCK_KEYS[sub]}.{leaf}"] = value
    return out


def diffusers_config(config: DiTConfig) -> dict[str, Any]:
    """The DiTTransformer2DModel constructor arguments of an adaLN-Zero `config`."""
    if config.conditioning != "adaln-zero" or config.mlp_ratio != 4.0 or config.class_dropout_prob <= 0:
        raise ValueError("diffusers' DiTTransformer2DModel is adaLN-Zero with mlp_ratio 4 and a null class")
    return dict(num_attention_heads=config.num_heads, attention_head_dim=config.hidden_size // config.num_heads,
                in_channels=config.in_channels, out_channels=config.out_channels, num_layers=config.depth,
                sample_size=config.input_size, patch_size=config.patch_size, num_embeds_ada_norm=config.num_classes,
                norm_eps=config.mlp_norm_eps)


PARITY_DEFAULT_CONFIG = dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8,
                             num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10)


@torch.no_grad()
def parity_dit(config: dict[str, Any] | None = None, seed: int = 0) -> float:
    """Largest |course - diffusers.DiTTransformer2DModel| on the same random weights and inputs.

    diffusers' blocks get independent random embedders; they are tied to block 0's first (as in
    every converted DiT checkpoint), since DiT has a single embedder. The fixed position table is
    compared too.
    """
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    ref = DiTTransformer2DModel(**(PARITY_DEFAULT_CONFIG if config is None else config)).eval()
    first = ref.transformer_blocks[0].norm1.emb
    for block in ref.transformer_blocks[1:]:
        block.norm1.emb.load_state_dict(first.state_dict())
    for p in ref.parameters():  # diffusers zero-inits nothing, but make sure every weight is non-trivial
        if p.abs().max() == 0:
            p.normal_(std=0.02)
    ours = DiT.from_diffusers(ref).eval()
    cfg = ours.config
    g = torch.Generator().manual_seed(seed)
    B = 3
    x = torch.randn(B, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    t = torch.randint(0, 1000, (B,), generator=g)
    y = torch.randint(0, cfg.num_classes + 1, (B,), generator=g)  # the null class included
    diffs = [(ours(x, t, y) - ref(x, t, y).sample).abs().max(),
             (ours.pos_embed - ref.pos_embed.pos_embed).abs().max()]
    return float(max(diffs))


def count_parameters_meta(config: DiTConfig) -> int:
    """Parameters of the course's DiT with `config`, built on the meta device (no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in DiT(config).parameters())


def gflops(config: DiTConfig, batch: int = 1) -> float:
    """Forward Gflops per image, counted by torch's FLOP counter on the meta device.

    torch counts a multiply-add as 2 FLOPs; DiT's paper (Table 4, "Gflops") counts it as one, as
    fvcore does, so this returns torch's count / 2, per image.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = DiT(config)
        x = torch.zeros(batch, config.in_channels, config.input_size, config.input_size)
        t, y = torch.zeros(batch, dtype=torch.long), torch.zeros(batch, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            model(x, t, y)
    return counter.get_total_flops() / 2 / batch / 1e9
