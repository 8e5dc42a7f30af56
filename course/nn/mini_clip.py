"""A mini-CLIP: an image encoder and a CLIP text encoder in one embedding space, and CLIP's loss.

CLIP (Radford et al. 2021) learns a shared embedding space from image-caption pairs: in a batch
of B pairs, each image must pick its own caption among the B captions and each caption its own
image. Stable Diffusion keeps only the text half; the image half is what taught it to put
"red" and "circle" where the pictures say they belong.

- `ImageEncoder`: a few strided conv stages on 64×64 images, pooled to a 3×3 grid of cells
  (the Shapes world's grid, so where a shape sits survives), then a linear map to width E.
- The text half is the course's `CLIPTextTransformer` (with projection), reading the real CLIP
  BPE ids, truncated to a 32-token context (the longest Shapes caption is 23 tokens with BOS and
  EOS; attention costs T², so 77 would waste over 5x the attention compute on padding). Its
  token embedding holds rows only for the BPE ids in `vocab_ids` (plus one row for every other
  id) instead of all 49,408: SD's CLIP-L spends 38 M of its 123 M parameters there.
- `clip_loss`: the symmetric InfoNCE loss of CLIP's Fig. 3, with a learned temperature.

The `clip-shapes` recipe (its vocabulary, training, zero-shot evaluation and binding test) is
`course.recipes.clip_shapes`.

Shape letters: B batch, C channels, H height, W width, T tokens, D text width, E embedding width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from course.nn.clip_text import BOS_ID, EOS_ID, VOCAB_SIZE, CLIPTextConfig, CLIPTextTransformer, tokenize


@dataclass(frozen=True)
class MiniClipConfig:
    """The mini-CLIP: image encoder widths, text transformer size, shared embedding width."""

    image_width: int = 16  # channels of the first conv stage; doubled at each of the next two stride-2 stages
    embed_dim: int = 64  # E, width of the shared image-text space
    text_width: int = 64  # D of the text transformer
    text_layers: int = 2  # text transformer layers
    text_heads: int = 4  # text attention heads
    context_length: int = 32  # tokens the text encoder reads (captions are truncated to this)
    vocab_ids: tuple[int, ...] = ()  # the CLIP BPE ids with their own embedding row (must hold BOS and EOS); () = all 49,408
    init_temperature: float = 0.07  # tau at initialisation; logits = (1 / tau) cos-similarity, 1/tau capped at 100
    grid: int = 3  # the image features are pooled to grid x grid cells: the Shapes world's 3x3 (`course.world.shapes.GRID`)

    def __post_init__(self):
        if self.vocab_ids and not {BOS_ID, EOS_ID} <= set(self.vocab_ids):
            raise ValueError("vocab_ids must include BOS (49406) and EOS (49407)")
        if self.image_width % 8:
            raise ValueError(f"image_width must be a multiple of 8 (GroupNorm groups), got {self.image_width}")

    def text_config(self) -> CLIPTextConfig:
        """The `CLIPTextConfig` of the text half (vocabulary rows: 0 = any other id, then vocab_ids)."""
        ids = sorted(self.vocab_ids)
        return CLIPTextConfig(
            vocab_size=len(ids) + 1 if ids else VOCAB_SIZE, hidden_size=self.text_width,
            intermediate_size=4 * self.text_width, num_hidden_layers=self.text_layers,
            num_attention_heads=self.text_heads, max_position_embeddings=self.context_length,
            eos_token_id=ids.index(EOS_ID) + 1 if ids else EOS_ID, projection_dim=self.embed_dim,
        )


def clip_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: cross-entropy of each image over the captions and of each caption over the images.

    Args:
        image_embeds: (B, E) unit vectors; row i belongs with caption i.
        text_embeds: (B, E) unit vectors.
        logit_scale: scalar 1/tau (already exponentiated and capped).

    Returns:
        scalar loss, (CE(logits, i) + CE(logits^T, i)) / 2 with logits = scale * I T^T.

    Ref: Radford et al. 2021 (CLIP), Fig. 3; van den Oord et al. 2018 (InfoNCE), Eq. 4.
    """
    logits = logit_scale * image_embeds @ text_embeds.T  # (B, B): image i vs caption j
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class ImageEncoder(nn.Module):
    """64×64 image -> E: conv stages (64 -> 32 -> 16 -> 8 pixels), pooled to the 3×3 cells, then linear."""

    def __init__(self, width: int, embed_dim: int, grid: int = 3):
        super().__init__()
        self.grid = grid
        layers, cin = [], 3
        for cout, stride in ((width, 2), (2 * width, 2), (4 * width, 2), (4 * width, 1)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, stride=stride), nn.GroupNorm(8, cout), nn.SiLU()]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(cin * grid**2, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 64, 64) in [-1, 1] -> (B, E)."""
        h = F.adaptive_avg_pool2d(self.body(x), self.grid)  # (B, 4w, 3, 3): one average per grid cell
        return self.proj(h.flatten(1))  # (B, 4w*9) -> (B, E)


class MiniClip(nn.Module):
    """Image encoder + CLIP text transformer + learned temperature (Radford et al. 2021, Sec. 2.5)."""

    def __init__(self, config: MiniClipConfig):
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoder(config.image_width, config.embed_dim, config.grid)
        self.text_encoder = CLIPTextTransformer(config.text_config())
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))
        # CLIP id -> embedding row, rebuilt from the config (not saved: it is no weight)
        rows = torch.zeros(VOCAB_SIZE, dtype=torch.long)
        if config.vocab_ids:
            rows[torch.tensor(sorted(config.vocab_ids))] = torch.arange(1, len(config.vocab_ids) + 1)
        else:
            rows = torch.arange(VOCAB_SIZE)
        self.register_buffer("id_to_row", rows, persistent=False)

    def scale(self) -> torch.Tensor:
        """1/tau = exp(logit_scale), capped at 100 as CLIP does to keep training stable."""
        return self.logit_scale.clamp(max=math.log(100)).exp()

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 64, 64) in [-1, 1] -> (B, E) unit vectors."""
        return F.normalize(self.image_encoder(x), dim=-1)

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) CLIP BPE ids (T <= context_length) -> (B, E) unit vectors."""
        return F.normalize(self.text_encoder(self.id_to_row[input_ids]).text_embeds, dim=-1)

    def encode_captions(self, captions: list[str]) -> torch.Tensor:
        """Tokenize (truncated to context_length) and encode: list of B captions -> (B, E)."""
        ids = tokenize(captions, max_length=self.config.context_length)["input_ids"]  # (B, T)
        return self.encode_text(ids.to(self.id_to_row.device))

    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """The contrastive loss of a batch of (image, caption) pairs: (B, 3, 64, 64), (B, T) -> scalar."""
        return clip_loss(self.encode_image(x), self.encode_text(input_ids), self.scale())
