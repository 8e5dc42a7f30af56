"""The T5 encoder, SD3's third text encoder, from scratch (transformers' T5EncoderModel, T5 v1.1).

SD3 reads the prompt with two CLIPs and with T5-XXL's encoder (4.7 B parameters), whose per-token
states carry what contrastive CLIP does not train for: word order, counts, spelling (in SD3 it
matters most for typography and long prompts). T5 is a plain pre-LayerNorm transformer encoder
with three twists:

    ids (B, S) --embedding--> (B, S, D)             no absolute positions at all
    N blocks:  x + SelfAttention(RMSNorm(x), + relative position bias)
               x + GatedGELU-FF(RMSNorm(x))
    RMSNorm --> states (B, S, D)                    (SD3 uses this last hidden state)

- "T5 LayerNorm" is RMSNorm: a learned scale, no mean subtraction, no bias (Zhang & Sennrich 2019).
- Positions enter only as a learned bias on the attention logits, one scalar per head and per
  *bucket* of relative distance j - i (`relative_position_bucket`): exact for small distances,
  logarithmic up to `max_distance`, one bucket beyond; separate buckets for left and right.
  Only the first block owns the table; every block adds the same bias.
- No 1/sqrt(hd) on the logits (T5 folds it into the initialisation), and no biases anywhere.
- T5 v1.1 (what SD3 uses) has the gated-GELU feed-forward: wo(GELU_tanh(wi_0 x) * wi_1 x).

Module and parameter names follow the meaning; `from_transformers` renames transformers' keys.

Shape letters: B batch, S tokens, D width (d_model), F feed-forward width (d_ff), nh heads, hd head dim (d_kv).
Ref: Raffel et al. 2020 (T5), Sec. 2.1 and 3.1; Shazeer 2020 (GLU variants); the T5 v1.1 release notes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2  # T5's special tokens: <pad>, </s>, <unk>


@dataclass(frozen=True)
class T5Config:
    """A T5 encoder; the defaults are T5 v1.1 XXL, SD3's `text_encoder_3`."""

    vocab_size: int = 32128  # SentencePiece pieces (+ padding to a multiple of 128)
    d_model: int = 4096  # D
    d_kv: int = 64  # hd
    d_ff: int = 10240  # F
    num_layers: int = 24  # encoder blocks
    num_heads: int = 64  # nh
    relative_attention_num_buckets: int = 32  # buckets of relative distance (half per direction)
    relative_attention_max_distance: int = 128  # distances past this share the last bucket
    layer_norm_epsilon: float = 1e-6  # RMSNorm eps
    gated: bool = True  # T5 v1.1's gated-GELU feed-forward (False: T5 1.0's ReLU MLP)


PRESETS = {"t5-v1.1-xxl": T5Config()}


# --------------------------------------------------------------------------- relative positions
def relative_position_bucket(relative_position: torch.Tensor, num_buckets: int = 32, max_distance: int = 128
                             ) -> torch.Tensor:
    """Bucket of each relative distance j - i for a bidirectional encoder.

    Half the buckets are for keys to the right (j > i), half for the left and the same position.
    Within a half, distances below num_buckets / 4 get a bucket each; larger ones share buckets
    spaced logarithmically up to max_distance; farther ones all fall in the last bucket.

    Args:
        relative_position: integer tensor of j - i, any shape.

    Returns:
        long tensor of the same shape, values in 0 ... num_buckets - 1.

    Ref: Raffel et al. 2020, Sec. 2.1 ("Position embeddings"); Mesh TensorFlow's `_relative_position_bucket`.
    """
    half = num_buckets // 2
    bucket = (relative_position > 0).long() * half  # right of the query: the upper half
    n = relative_position.abs()
    exact = half // 2
    log_bucket = exact + (torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                          * (half - exact)).long()
    log_bucket = log_bucket.clamp(max=half - 1)
    return bucket + torch.where(n < exact, n, log_bucket)


# --------------------------------------------------------------------------- the block
class T5SelfAttention(nn.Module):
    """Multi-head self-attention without biases or 1/sqrt(hd), plus the relative position bias."""

    def __init__(self, config: T5Config, has_bias_table: bool):
        super().__init__()
        inner = config.num_heads * config.d_kv
        self.heads, self.head_dim = config.num_heads, config.d_kv
        self.q, self.k, self.v = (nn.Linear(config.d_model, inner, bias=False) for _ in range(3))
        self.o = nn.Linear(inner, config.d_model, bias=False)
        self.bias_table = nn.Embedding(config.relative_attention_num_buckets, config.num_heads) if has_bias_table else None

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (B, S, D), bias (1 or B, nh, S, S) additive (positions and padding) -> (B, S, D)."""
        B, S, _ = x.shape
        q = self.q(x).view(B, S, self.heads, self.head_dim).transpose(1, 2)  # (B, nh, S, hd)
        k = self.k(x).view(B, S, self.heads, self.head_dim).transpose(1, 2)  # (B, nh, S, hd)
        v = self.v(x).view(B, S, self.heads, self.head_dim).transpose(1, 2)  # (B, nh, S, hd)
        # scale=1: T5's logits are q . k with no 1/sqrt(hd) (it is folded into the init of q)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)  # (B, nh, S, hd)
        return self.o(out.transpose(1, 2).reshape(B, S, self.heads * self.head_dim))  # (B, S, D)


class T5FeedForward(nn.Module):
    """Gated GELU (T5 v1.1): wo(GELU_tanh(wi_0 x) * wi_1 x); or T5 1.0's wo(ReLU(wi x))."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.gated = config.gated
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False) if config.gated else None
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, D) -> (B, S, D)."""
        if self.gated:
            return self.wo(F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x))  # (B, S, F) -> (B, S, D)
        return self.wo(F.relu(self.wi_0(x)))


class T5Block(nn.Module):
    """x + attn(RMSNorm(x)), then x + FF(RMSNorm(x))."""

    def __init__(self, config: T5Config, has_bias_table: bool):
        super().__init__()
        self.norm1 = nn.RMSNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.attn = T5SelfAttention(config, has_bias_table)
        self.norm2 = nn.RMSNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.ff = T5FeedForward(config)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), bias)  # (B, S, D)
        return x + self.ff(self.norm2(x))  # (B, S, D)


class T5Encoder(nn.Module):
    """ids (B, S) -> last hidden states (B, S, D), T5's encoder stack.

    Ref: Raffel et al. 2020, Sec. 3.1.
    """

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(T5Block(config, has_bias_table=i == 0) for i in range(config.num_layers))
        self.final_norm = nn.RMSNorm(config.d_model, eps=config.layer_norm_epsilon)

    def position_bias(self, S: int) -> torch.Tensor:
        """(1, nh, S, S) the learned bias of each head for each (query i, key j) pair."""
        pos = torch.arange(S, device=self.embed.weight.device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.config.relative_attention_num_buckets,
                                           self.config.relative_attention_max_distance)  # (S, S): j - i
        return self.blocks[0].attn.bias_table(buckets).permute(2, 0, 1)[None]  # (1, nh, S, S)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args: input_ids (B, S); attention_mask (B, S), 1 = a real token (SD3 passes none: pads are read too).

        Returns: (B, S, D) the final-norm states.
        """
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (B, S), got {tuple(input_ids.shape)}")
        if input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size:
            raise ValueError(f"token ids must be in 0 ... {self.config.vocab_size - 1}; got {int(input_ids.min())} ... "
                             f"{int(input_ids.max())}: is the tokenizer the one this T5 was trained with?")
        x = self.embed(input_ids)  # (B, S, D)
        bias = self.position_bias(input_ids.shape[1])  # (1, nh, S, S)
        if attention_mask is not None:
            neg = torch.finfo(x.dtype).min
            bias = bias + (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * neg  # (B, nh, S, S)
        for block in self.blocks:
            x = block(x, bias)  # (B, S, D)
        return self.final_norm(x)  # (B, S, D)


# --------------------------------------------------------------------------- transformers bridge
def config_from_transformers(cfg: dict) -> T5Config:
    """The T5Config of a transformers T5Config (as a dict: config.json's or `.to_dict()`)."""
    proj = cfg.get("feed_forward_proj", "relu")
    if proj not in ("gated-gelu", "relu"):
        raise ValueError(f"feed_forward_proj={proj!r}: the course implements T5 v1.1's 'gated-gelu' and T5's 'relu'")
    return T5Config(vocab_size=cfg["vocab_size"], d_model=cfg["d_model"], d_kv=cfg["d_kv"], d_ff=cfg["d_ff"],
                    num_layers=cfg["num_layers"], num_heads=cfg["num_heads"],
                    relative_attention_num_buckets=cfg.get("relative_attention_num_buckets", 32),
                    relative_attention_max_distance=cfg.get("relative_attention_max_distance", 128),
                    layer_norm_epsilon=cfg.get("layer_norm_epsilon", 1e-6), gated=proj == "gated-gelu")


_LEAVES = {"layer.0.SelfAttention.q": "attn.q", "layer.0.SelfAttention.k": "attn.k", "layer.0.SelfAttention.v": "attn.v",
           "layer.0.SelfAttention.o": "attn.o", "layer.0.SelfAttention.relative_attention_bias": "attn.bias_table",
           "layer.0.layer_norm": "norm1", "layer.1.DenseReluDense.wi_0": "ff.wi_0",
           "layer.1.DenseReluDense.wi_1": "ff.wi_1", "layer.1.DenseReluDense.wi": "ff.wi_0",
           "layer.1.DenseReluDense.wo": "ff.wo", "layer.1.layer_norm": "norm2"}


def state_dict_from_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a T5EncoderModel state dict (`shared` or `encoder.embed_tokens` hold the tied embedding)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in ("shared.weight", "encoder.embed_tokens.weight"):
            out["embed.weight"] = value
        elif key == "encoder.final_layer_norm.weight":
            out["final_norm.weight"] = value
        elif key.startswith("encoder.block."):
            _, _, i, rest = key.split(".", 3)
            name, _, leaf = rest.rpartition(".")
            if name not in _LEAVES:
                raise KeyError(f"unexpected T5 key {key!r}")
            out[f"blocks.{i}.{_LEAVES[name]}.{leaf}"] = value
        else:
            raise KeyError(f"unexpected T5 key {key!r}")
    return out


def from_transformers(model: nn.Module) -> T5Encoder:
    """Copy a transformers `T5EncoderModel` into the course's `T5Encoder`."""
    encoder = T5Encoder(config_from_transformers(model.config.to_dict()))
    encoder.load_state_dict(state_dict_from_transformers(model.state_dict()))
    return encoder.eval()


# --------------------------------------------------------------------------- a tiny tokenizer, offline
TINY_WORDS = ("a", "an", "the", "and", "of", "in", "on", "to", "at", "with", "small", "large", "big", "red", "green",
              "blue", "yellow", "purple", "orange", "cyan", "circle", "square", "triangle", "top", "bottom", "left",
              "right", "center", "centre", "middle", "above", "below", "next", "photo", "picture")


def tiny_t5_vocabulary(words: tuple[str, ...] = TINY_WORDS) -> list[tuple[str, float]]:
    """A hand-written Unigram vocabulary: T5's three specials, "▁", the letters, then one piece per word.

    Scores are log-probabilities: a whole-word piece (-1) beats spelling it out letter by letter
    (-4 each), so the Shapes words are one token each and any other word still tokenizes.
    """
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    return ([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
            + [(ch, -4.0) for ch in letters] + [("▁" + ch, -4.5) for ch in letters]
            + [("▁" + w, -1.0) for w in words if len(w) > 1])


def tiny_t5_tokenizer(words: tuple[str, ...] = TINY_WORDS, max_length: int = 32):
    """A transformers T5Tokenizer on `tiny_t5_vocabulary` (no SentencePiece model, no download)."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=tiny_t5_vocabulary(words), extra_ids=0, model_max_length=max_length)


PARITY_DEFAULT_CONFIG = dict(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_heads=4,
                             relative_attention_num_buckets=8, relative_attention_max_distance=20,
                             feed_forward_proj="gated-gelu", decoder_start_token_id=0)


@torch.no_grad()
def parity_t5(config: dict | None = None, seed: int = 0) -> float:
    """Largest |course - transformers.T5EncoderModel| on the same random weights, ids and padding mask.

    30 tokens against max_distance 20: the logarithmic and the far buckets are all used.
    """
    from transformers import T5Config as HFT5Config
    from transformers import T5EncoderModel

    torch.manual_seed(seed)
    ref = T5EncoderModel(HFT5Config(**(PARITY_DEFAULT_CONFIG if config is None else config))).eval()
    for p in ref.parameters():
        p.add_(0.05 * torch.randn_like(p))
    ours = from_transformers(ref)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, ref.config.vocab_size, (2, 30), generator=g)
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, 21:] = 0
    diffs = [(ours(ids) - ref(input_ids=ids).last_hidden_state).abs().max(),
             ((ours(ids, mask) - ref(input_ids=ids, attention_mask=mask).last_hidden_state)[mask.bool()]).abs().max()]
    return float(max(diffs))
