"""MM-DiT, Stable Diffusion 3's multimodal diffusion transformer, from scratch (diffusers' SD3Transformer2DModel).

Reading order follows SD3's Fig. 2, bottom-up:

    x (B, C, H, W) --patchify: p x p conv, stride p--> tokens (B, T, D), T = (H/p)(W/p)
                   + 2-D sin-cos positions cropped from the centre of an M x M grid (M = pos_embed_max_size)
    t (B,)         --sinusoid (256) -> MLP-->                    t_emb (B, D)
    pooled (B, P)  --MLP (the pooled CLIP-G + CLIP-L vector)-->  y_emb (B, D)
    y = t_emb + y_emb (B, D): the vector that drives every adaLN (scales, shifts and gates)
    context (B, S, E) --linear E -> D-->  text tokens c (B, S, D)
    N joint blocks: each modality keeps its own weights (adaLN modulation, q/k/v and output
        projections, MLP); ONE attention runs over the concatenated [x; c] tokens, so image and
        text tokens read each other in both directions ("two sets of weights, one attention").
        Options: RMSNorm on q and k per head (QK-norm, Sec. 5.3.2); the last block is
        `context_pre_only` (the text stream stops after the attention: no output projection,
        MLP or gates, its adaLN gives only shift and scale); SD3.5's MMDiT-X adds an image-only
        self-attention in the listed `dual_attention_layers`.
    final layer: LayerNorm modulated by y, linear D -> p*p*C_out, unpatchify -> v (B, C_out, H, W)

MM-DiT predicts the flow velocity v = eps - x0 of rectified flow (t = 1 noise, t = 0 data, the
course's convention); diffusers feeds it t * 1000 as the timestep.

Size (Sec. 5.3): the depth d sets everything, width D = 64 d, d heads of 64, MLP 4 D. With
SD3's text (E = 4096 T5-XXL, P = 2048 pooled) `count_parameters_meta` gives the table of
`sizes_by_depth`; d = 24 is SD3-medium, d = 38 is the 8 B model.

Three numbers in which diffusers' layout differs from the course's, handled in the bridge
(`state_dict_from_diffusers`): the position table is a saved buffer there (the course rebuilds it
and loads the saved one); diffusers' AdaLayerNormContinuous (the final layer and the last text
adaLN) chunks its linear as (scale, shift), the course everywhere as (shift, scale), so those
rows are swapped; the text stream's projections are the `add_*_proj` / `to_add_out` of one
diffusers `Attention`, the course's `c.attn`.

Shape letters: B batch, C channels, H height, W width, T image tokens, S text tokens, D width,
E context width, P pooled width, p patch size, M position grid side, nh heads, hd head dim.
Ref: Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"
(SD3), Sec. 4 and Fig. 2, Sec. 5.3 (scaling, QK-norm); Stability AI's SD3.5 (MMDiT-X).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from course.nn.attention import Attention, FeedForward, TimestepEmbedding, attention
from course.nn.dit import FinalLayer, PatchEmbed, TimestepEmbedder, modulate, sincos_1d, unpatchify


# --------------------------------------------------------------------------- positions
def cropped_pos_embed_table(dim: int, max_size: int, base_size: int) -> torch.Tensor:
    """SD3's position table: 2-D sin-cos codes of an M x M grid, (M*M, dim) float32, row-major.

    The grid's coordinates are scaled so that M positions span `base_size` units (the patch grid
    of the training resolution): position i is i * base_size / M. The first dim/2 channels encode
    the column, the last dim/2 the row, as DiT's `sincos_pos_embed_2d`.

    Args:
        dim: D, divisible by 4.
        max_size: M = pos_embed_max_size.
        base_size: sample_size // patch_size.

    Ref: Esser et al. 2024 (the position grid cropped for varying sizes and aspect ratios); diffusers' PatchEmbed.
    """
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    pos = torch.arange(max_size, dtype=torch.float32) / (max_size / base_size)  # (M,), in float32 as diffusers
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")  # (M, M) each
    emb_x = sincos_1d(dim // 2, cols.flatten())  # (M*M, dim/2)
    emb_y = sincos_1d(dim // 2, rows.flatten())  # (M*M, dim/2)
    return torch.cat([emb_x, emb_y], dim=1).float()  # (M*M, dim)


def crop_pos_embed(table: torch.Tensor, max_size: int, h: int, w: int) -> torch.Tensor:
    """The centre h x w window of an M x M position table: (M*M, D) -> (h*w, D), row-major.

    A smaller image reads the middle of the grid, so its tokens keep the codes they had in a
    larger one.
    """
    if h > max_size or w > max_size:
        raise ValueError(f"a {h}x{w} patch grid does not fit the {max_size}x{max_size} position grid "
                         f"(pos_embed_max_size): use a smaller image, at most {max_size} patches per side")
    top, left = (max_size - h) // 2, (max_size - w) // 2
    grid = table.view(max_size, max_size, -1)  # (M, M, D)
    return grid[top:top + h, left:left + w].reshape(h * w, -1)  # (h*w, D)


# --------------------------------------------------------------------------- one modality's attention weights
class StreamAttention(nn.Module):
    """One modality's share of a joint attention: its q, k, v projections and its output projection.

    Args:
        dim: D.
        heads: nh; hd = D / nh.
        qk_norm: RMSNorm (with a learned scale, eps 1e-6) on each head's q and k.
        has_out: False for the text stream of the last block (`context_pre_only`).
    """

    def __init__(self, dim: int, heads: int, qk_norm: bool, has_out: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible into {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim) for _ in range(3))
        self.norm_q = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else None
        self.norm_k = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else None
        self.to_out = nn.Linear(dim, dim) if has_out else None

    def qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, D) modulated tokens -> q, k, v, each (B, T, D), q and k normalised per head if asked."""
        B, T, D = h.shape
        q, k, v = self.to_q(h), self.to_k(h), self.to_v(h)  # (B, T, D) x3
        if self.norm_q is not None:
            q = self.norm_q(q.view(B, T, self.heads, self.head_dim)).view(B, T, D)  # (B, T, D), per head
            k = self.norm_k(k.view(B, T, self.heads, self.head_dim)).view(B, T, D)  # (B, T, D), per head
        return q, k, v


def joint_attention(qkv_x: tuple[torch.Tensor, ...], qkv_c: tuple[torch.Tensor, ...], heads: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """One softmax attention over the image tokens and the text tokens together.

    Args:
        qkv_x: (q, k, v) of the image stream, each (B, T, D).
        qkv_c: (q, k, v) of the text stream, each (B, S, D).
        heads: nh.

    Returns:
        (out_x (B, T, D), out_c (B, S, D)): every token attended to all T + S tokens.

    Ref: Esser et al. 2024, Sec. 4 ("we concatenate the sequences of both modalities for the attention operation").
    """
    T = qkv_x[0].shape[1]
    q, k, v = (torch.cat([a, b], dim=1) for a, b in zip(qkv_x, qkv_c))  # (B, T + S, D) x3
    out = attention(q, k, v, heads)  # (B, T + S, D)
    return out[:, :T], out[:, T:]  # (B, T, D), (B, S, D)


def max_attention_logit(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """max over batch, heads and token pairs of q . k / sqrt(hd): the logit QK-norm keeps in check.

    Args:
        q: (B, T, D); k: (B, S, D).

    Returns:
        a 0-d tensor.

    Ref: Esser et al. 2024, Sec. 5.3.2; Dehghani et al. 2023 (ViT-22B).
    """
    B, T, D = q.shape
    hd = D // heads
    q = q.view(B, T, heads, hd).transpose(1, 2)  # (B, nh, T, hd)
    k = k.view(B, k.shape[1], heads, hd).transpose(1, 2)  # (B, nh, S, hd)
    return (q @ k.transpose(-1, -2)).amax() / hd**0.5  # max of (B, nh, T, S)


class Stream(nn.Module):
    """The weights one modality owns in a joint block: adaLN modulation, attention projections, MLP.

    Args:
        dim: D.
        heads: nh.
        qk_norm: see `StreamAttention`.
        n_mod: chunks of the modulation: 6 (shift, scale, gate for attention and MLP), 9 with the
            dual attention's three, 2 (shift, scale) for the text stream of the last block.
        mlp_ratio: hidden width of the MLP / D.
    """

    def __init__(self, dim: int, heads: int, qk_norm: bool, n_mod: int, mlp_ratio: float = 4.0):
        super().__init__()
        pre_only = n_mod == 2
        self.modulation = nn.Linear(dim, n_mod * dim)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = StreamAttention(dim, heads, qk_norm, has_out=not pre_only)
        if not pre_only:
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.mlp = FeedForward(dim, inner_dim=int(dim * mlp_ratio), activation="gelu-approximate")


# --------------------------------------------------------------------------- the joint block
class JointBlock(nn.Module):
    """One MM-DiT block: image stream `x` and text stream `c`, each with its own weights, one joint attention.

    Args:
        dim: D.
        heads: nh.
        mlp_ratio: MLP hidden width / D (4 in SD3).
        qk_norm: RMSNorm on q and k of every attention in the block.
        context_pre_only: the last block: the text stream only feeds the attention (no text output).
        dual_attention: SD3.5's MMDiT-X: a second, image-only self-attention (`attn2`) with its own
            shift, scale and gate, added after the joint attention.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False,
                 context_pre_only: bool = False, dual_attention: bool = False):
        super().__init__()
        self.heads, self.context_pre_only, self.dual_attention = heads, context_pre_only, dual_attention
        self.x = Stream(dim, heads, qk_norm, 9 if dual_attention else 6, mlp_ratio)
        self.c = Stream(dim, heads, qk_norm, 2 if context_pre_only else 6, mlp_ratio)
        self.attn2 = Attention(dim, heads, dim // heads, bias=True, qk_norm=qk_norm) if dual_attention else None

    def forward(self, x: torch.Tensor, c: torch.Tensor, y: torch.Tensor, logits: list | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Image tokens x (B, T, D), text tokens c (B, S, D), adaLN vector y (B, D) -> (x, c or None).

        `logits`: a list to which the block appends its joint attention's `max_attention_logit`.
        """
        mx = self.x.modulation(F.silu(y)).chunk(9 if self.dual_attention else 6, dim=-1)  # (B, D) each
        mc = self.c.modulation(F.silu(y)).chunk(2 if self.context_pre_only else 6, dim=-1)  # (B, D) each
        hx = self.x.norm1(x)  # (B, T, D)
        qkv_x = self.x.attn.qkv(modulate(hx, mx[0], mx[1]))  # (B, T, D) x3
        qkv_c = self.c.attn.qkv(modulate(self.c.norm1(c), mc[0], mc[1]))  # (B, S, D) x3
        if logits is not None:
            with torch.no_grad():
                logits.append(max_attention_logit(torch.cat([qkv_x[0], qkv_c[0]], dim=1),
                                                  torch.cat([qkv_x[1], qkv_c[1]], dim=1), self.heads))
        out_x, out_c = joint_attention(qkv_x, qkv_c, self.heads)  # (B, T, D), (B, S, D)

        x = x + mx[2][:, None] * self.x.attn.to_out(out_x)  # (B, T, D), gated
        if self.dual_attention:  # MMDiT-X: image-only self-attention on the same normalised tokens
            x = x + mx[8][:, None] * self.attn2(modulate(hx, mx[6], mx[7]))  # (B, T, D)
        x = x + mx[5][:, None] * self.x.mlp(modulate(self.x.norm2(x), mx[3], mx[4]))  # (B, T, D)
        if self.context_pre_only:
            return x, None
        c = c + mc[2][:, None] * self.c.attn.to_out(out_c)  # (B, S, D)
        c = c + mc[5][:, None] * self.c.mlp(modulate(self.c.norm2(c), mc[3], mc[4]))  # (B, S, D)
        return x, c


# --------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class MMDiTConfig:
    """An MM-DiT; the defaults are SD3-medium (d = 24) with SD3's text encoders and VAE."""

    sample_size: int = 128  # latent side at the training resolution (1024 px / 8); sets the position scale
    patch_size: int = 2  # p
    in_channels: int = 16  # C of the latent (SD3's VAE has 16)
    out_channels: int = 16  # C_out: the velocity has the latent's channels
    depth: int = 24  # d: number of joint blocks
    num_heads: int = 24  # nh (SD3: = d)
    head_dim: int = 64  # hd (SD3: 64, so D = 64 d)
    context_dim: int = 4096  # E: width of the text tokens (T5-XXL; the CLIP states are zero-padded to it)
    pooled_dim: int = 2048  # P: CLIP-L's 768 + CLIP-G's 1280 pooled outputs
    pos_embed_max_size: int = 192  # M: side of the position grid the image's tokens are cropped from
    mlp_ratio: float = 4.0  # MLP hidden width / D
    qk_norm: bool = False  # RMSNorm on q and k per head (SD3.5; Sec. 5.3.2)
    dual_attention_layers: tuple[int, ...] = field(default=())  # blocks with MMDiT-X's extra image attention

    def __post_init__(self) -> None:
        object.__setattr__(self, "dual_attention_layers", tuple(int(i) for i in self.dual_attention_layers))
        bad = [i for i in self.dual_attention_layers if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"dual_attention_layers {bad} are not blocks of a depth-{self.depth} model (0 ... {self.depth - 1})")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if (self.num_heads * self.head_dim) % 4:
            raise ValueError(f"width {self.hidden_size} must be divisible by 4 (the 2-D position code)")

    @property
    def hidden_size(self) -> int:
        """D = nh * hd."""
        return self.num_heads * self.head_dim


class MMDiT(nn.Module):
    """SD3's denoiser: (xt, t, context, pooled) -> velocity v (B, C_out, H, W).

    Ref: Esser et al. 2024, Sec. 4 and Fig. 2.
    """

    def __init__(self, config: MMDiTConfig):
        super().__init__()
        self.config = cfg = config
        D = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.in_channels, D, cfg.patch_size)
        base = cfg.sample_size // cfg.patch_size
        # saved with the weights, as diffusers saves it; rebuilt from the config for a fresh model
        self.register_buffer("pos_embed", cropped_pos_embed_table(D, cfg.pos_embed_max_size, base))
        self.t_embedder = TimestepEmbedder(D, 256, freq_shift=0.0)
        self.y_embedder = TimestepEmbedding(cfg.pooled_dim, D)  # linear -> SiLU -> linear on the pooled text
        self.context_embedder = nn.Linear(cfg.context_dim, D)
        self.blocks = nn.ModuleList(
            JointBlock(D, cfg.num_heads, cfg.mlp_ratio, cfg.qk_norm, context_pre_only=i == cfg.depth - 1,
                       dual_attention=i in cfg.dual_attention_layers) for i in range(cfg.depth))
        self.final_layer = FinalLayer(D, cfg.patch_size, cfg.out_channels, adaptive=True)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's init (SD3 builds on it): Xavier linears, zero biases, zeroed adaLN modulation and output.

        Every gate starts at 0, so every block is the identity on the image tokens and a fresh
        model predicts v = 0.
        """
        def basic(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(basic)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        for lin in (self.t_embedder.mlp.linear_1, self.t_embedder.mlp.linear_2,
                    self.y_embedder.linear_1, self.y_embedder.linear_2):
            nn.init.normal_(lin.weight, std=0.02)
        for block in self.blocks:
            for m in (block.x.modulation, block.c.modulation):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
        for m in (self.final_layer.modulation, self.final_layer.linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor, *,
                logits: list | None = None) -> torch.Tensor:
        """Predict the velocity.

        Args:
            x: (B, C, H, W) xt; H/p and W/p at most pos_embed_max_size.
            t: (B,) timesteps, t * 1000 for flow time t in [0, 1] (diffusers' convention).
            context: (B, S, E) text tokens (any S).
            pooled: (B, P) pooled text vector.
            logits: a list that gets each block's max attention logit (0-d tensors), for QK-norm studies.

        Returns:
            (B, C_out, H, W) the velocity v ~ eps - x0.
        """
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"MM-DiT expects x of shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        p = cfg.patch_size
        H, W = x.shape[-2:]
        if H % p or W % p:
            raise ValueError(f"the latent {H}x{W} is not divisible into {p}x{p} patches: use sides that are multiples of {p}")
        if context.ndim != 3 or context.shape[-1] != cfg.context_dim or pooled.shape != (x.shape[0], cfg.pooled_dim):
            raise ValueError(f"context must be (B, S, {cfg.context_dim}) and pooled (B, {cfg.pooled_dim}); got "
                             f"{tuple(context.shape)} and {tuple(pooled.shape)}")
        h, w = H // p, W // p
        tokens = self.x_embedder(x) + crop_pos_embed(self.pos_embed, cfg.pos_embed_max_size, h, w)  # (B, T, D)
        y = self.t_embedder(t) + self.y_embedder(pooled)  # (B, D): timestep + pooled text, drives every adaLN
        c = self.context_embedder(context)  # (B, S, D)
        for block in self.blocks:
            tokens, c = block(tokens, c, y, logits)  # (B, T, D), (B, S, D) or None after the last block
        out = self.final_layer(tokens, y)  # (B, T, p*p*C_out)
        return unpatchify(out, p, cfg.out_channels, (h, w))  # (B, C_out, H, W)

    @classmethod
    def from_diffusers(cls, ref: nn.Module) -> MMDiT:
        """Copy a diffusers `SD3Transformer2DModel` into the course's MM-DiT."""
        model = cls(config_from_diffusers(dict(ref.config)))
        model.load_state_dict(state_dict_from_diffusers(ref.state_dict()))
        return model


# --------------------------------------------------------------------------- presets and sizes
def sd3_config(d: int, **overrides: Any) -> MMDiTConfig:
    """SD3's MM-DiT of depth d: width 64 d, d heads, d blocks, SD3's text widths and 16-channel latents (Sec. 5.3)."""
    return replace(MMDiTConfig(depth=d, num_heads=d, head_dim=64), **overrides)


PRESETS: dict[str, MMDiTConfig] = {
    "sd3-medium": sd3_config(24),  # stabilityai/stable-diffusion-3-medium-diffusers, transformer/config.json
    "sd3-8b": sd3_config(38),  # the paper's largest model (Sec. 5.3, 8 B)
}


def get_preset(name: str, **overrides: Any) -> MMDiTConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown MM-DiT preset {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def count_parameters_meta(config: MMDiTConfig) -> int:
    """Parameters of the course's MM-DiT with `config`, built on the meta device (no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in MMDiT(config).parameters())


def count_diffusers_meta(config: MMDiTConfig) -> int:
    """Parameters of diffusers' SD3Transformer2DModel built from the same config, on the meta device."""
    from diffusers import SD3Transformer2DModel

    with torch.device("meta"):
        return sum(p.numel() for p in SD3Transformer2DModel(**diffusers_config(config)).parameters())


def sizes_by_depth(depths: tuple[int, ...] = (15, 18, 24, 30, 38), reference: bool = True) -> list[dict[str, Any]]:
    """SD3's scaling family (Sec. 5.3): one row per depth d, with D = 64 d, nh = d, the course's and diffusers' counts.

    Returns:
        [{"depth", "width", "heads", "params" (course), "diffusers" (or None)}].
    """
    rows = []
    for d in depths:
        cfg = sd3_config(d)
        n = count_parameters_meta(cfg)
        rows.append(dict(depth=d, width=cfg.hidden_size, heads=d, params=n,
                         diffusers=count_diffusers_meta(cfg) if reference else None))
    return rows


# --------------------------------------------------------------------------- diffusers bridge
_DIFFUSERS_DEFAULTS = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=18, attention_head_dim=64,
                           num_attention_heads=18, joint_attention_dim=4096, caption_projection_dim=1152,
                           pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=96,
                           dual_attention_layers=(), qk_norm=None)


def config_from_diffusers(cfg: dict[str, Any]) -> MMDiTConfig:
    """The MMDiTConfig of a diffusers SD3Transformer2DModel config (its constructor arguments)."""
    c = _DIFFUSERS_DEFAULTS | {k: v for k, v in cfg.items() if not k.startswith("_")}
    D = c["num_attention_heads"] * c["attention_head_dim"]
    if c["caption_projection_dim"] != D:
        raise ValueError(f"caption_projection_dim {c['caption_projection_dim']} must equal the width heads * head_dim "
                         f"= {D}: the text tokens join the image tokens in one attention")
    if c["qk_norm"] not in (None, "rms_norm"):
        raise ValueError(f"qk_norm={c['qk_norm']!r}: SD3 uses None or 'rms_norm', the two the course implements")
    if not c["pos_embed_max_size"]:
        raise ValueError("pos_embed_max_size must be set: SD3 crops its positions from a fixed grid")
    return MMDiTConfig(sample_size=c["sample_size"], patch_size=c["patch_size"], in_channels=c["in_channels"],
                       out_channels=c["out_channels"] or c["in_channels"], depth=c["num_layers"],
                       num_heads=c["num_attention_heads"], head_dim=c["attention_head_dim"],
                       context_dim=c["joint_attention_dim"], pooled_dim=c["pooled_projection_dim"],
                       pos_embed_max_size=c["pos_embed_max_size"], qk_norm=c["qk_norm"] == "rms_norm",
                       dual_attention_layers=tuple(c["dual_attention_layers"] or ()))


def diffusers_config(config: MMDiTConfig) -> dict[str, Any]:
    """The SD3Transformer2DModel constructor arguments of `config`."""
    if config.mlp_ratio != 4.0:
        raise ValueError("diffusers' SD3Transformer2DModel has mlp_ratio 4")
    return dict(sample_size=config.sample_size, patch_size=config.patch_size, in_channels=config.in_channels,
                out_channels=config.out_channels, num_layers=config.depth, attention_head_dim=config.head_dim,
                num_attention_heads=config.num_heads, joint_attention_dim=config.context_dim,
                caption_projection_dim=config.hidden_size, pooled_projection_dim=config.pooled_dim,
                pos_embed_max_size=config.pos_embed_max_size, dual_attention_layers=config.dual_attention_layers,
                qk_norm="rms_norm" if config.qk_norm else None)


_TOP_KEYS = {"pos_embed.proj": "x_embedder.proj", "time_text_embed.timestep_embedder": "t_embedder.mlp",
             "time_text_embed.text_embedder": "y_embedder", "context_embedder": "context_embedder",
             "norm_out.linear": "final_layer.modulation", "proj_out": "final_layer.linear"}
_BLOCK_KEYS = {"norm1.linear": "x.modulation", "norm1_context.linear": "c.modulation",
               "attn.to_q": "x.attn.to_q", "attn.to_k": "x.attn.to_k", "attn.to_v": "x.attn.to_v",
               "attn.norm_q": "x.attn.norm_q", "attn.norm_k": "x.attn.norm_k", "attn.to_out.0": "x.attn.to_out",
               "attn.add_q_proj": "c.attn.to_q", "attn.add_k_proj": "c.attn.to_k", "attn.add_v_proj": "c.attn.to_v",
               "attn.norm_added_q": "c.attn.norm_q", "attn.norm_added_k": "c.attn.norm_k",
               "attn.to_add_out": "c.attn.to_out", "ff.net.0.proj": "x.mlp.net.0.proj", "ff.net.2": "x.mlp.net.2",
               "ff_context.net.0.proj": "c.mlp.net.0.proj", "ff_context.net.2": "c.mlp.net.2"}


def _swap_halves(w: torch.Tensor) -> torch.Tensor:
    """(scale, shift) rows -> (shift, scale): diffusers' AdaLayerNormContinuous order -> the course's."""
    a, b = w.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def state_dict_from_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an SD3Transformer2DModel state dict to the course's keys (and swap the (scale, shift) halves)."""
    out: dict[str, torch.Tensor] = {}
    last = max((int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")), default=-1)
    for key, value in sd.items():
        if key == "pos_embed.pos_embed":
            out["pos_embed"] = value.reshape(-1, value.shape[-1])  # (1, M*M, D) -> (M*M, D)
            continue
        name, _, leaf = key.rpartition(".")
        top = next((k for k in _TOP_KEYS if name == k or name.startswith(k + ".")), None)
        if top is not None:
            ours = _TOP_KEYS[top] + name[len(top):]
            out[f"{ours}.{leaf}"] = _swap_halves(value) if name == "norm_out.linear" else value
            continue
        parts = name.split(".")
        if parts[0] == "transformer_blocks":
            i, sub = int(parts[1]), ".".join(parts[2:])
            if sub.startswith("attn2."):
                out[f"blocks.{i}.{sub}.{leaf}"] = value  # course.nn.attention.Attention has diffusers' names
                continue
            if sub in _BLOCK_KEYS:
                swap = sub == "norm1_context.linear" and i == last  # the last block's AdaLayerNormContinuous
                out[f"blocks.{i}.{_BLOCK_KEYS[sub]}.{leaf}"] = _swap_halves(value) if swap else value
                continue
        raise KeyError(f"unexpected diffusers SD3Transformer2DModel key {key!r}")
    return out


PARITY_DEFAULT_CONFIG = dict(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=3,
                             attention_head_dim=8, num_attention_heads=4, joint_attention_dim=24,
                             caption_projection_dim=32, pooled_projection_dim=16, pos_embed_max_size=12,
                             qk_norm="rms_norm", dual_attention_layers=(0,))


@torch.no_grad()
def parity_mmdit(config: dict[str, Any] | None = None, seed: int = 0) -> float:
    """Largest |course - diffusers.SD3Transformer2DModel| on the same random weights and inputs.

    Every weight (the RMSNorm scales included) is perturbed from diffusers' init, so that no zero
    or identity hides a wrong wiring; the input is a non-square latent smaller than the training
    size (the position crop is off-centre of the first row), 7 text tokens, fractional timesteps.
    """
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    ref = SD3Transformer2DModel(**(PARITY_DEFAULT_CONFIG if config is None else config)).eval()
    for name, p in ref.named_parameters():
        p.add_(0.1 * torch.randn_like(p))
    ours = MMDiT.from_diffusers(ref).eval()
    cfg = ours.config
    g = torch.Generator().manual_seed(seed)
    B, p = 2, cfg.patch_size
    H, W = cfg.sample_size, max(p, cfg.sample_size - 2 * p)  # non-square when the grid allows
    x = torch.randn(B, cfg.in_channels, H, W, generator=g)
    t = torch.rand(B, generator=g) * 1000  # flow time * 1000
    context = torch.randn(B, 7, cfg.context_dim, generator=g)
    pooled = torch.randn(B, cfg.pooled_dim, generator=g)
    expected = ref(hidden_states=x, encoder_hidden_states=context, pooled_projections=pooled, timestep=t).sample
    base = cfg.sample_size // p
    rebuilt = cropped_pos_embed_table(cfg.hidden_size, cfg.pos_embed_max_size, base)  # the course's own table
    return float(max((ours(x, t, context, pooled) - expected).abs().max(),
                     (rebuilt - ref.pos_embed.pos_embed[0]).abs().max()))
