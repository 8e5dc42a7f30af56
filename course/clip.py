"""A mini-CLIP for the Shapes world: an image encoder and a CLIP text encoder trained contrastively.

CLIP (Radford et al. 2021) learns a shared embedding space from image-caption pairs: in a batch
of B pairs, each image must pick its own caption among the B captions and each caption its own
image. Stable Diffusion keeps only the text half; the image half is what taught it to put
"red" and "circle" where the pictures say they belong.

- `ImageEncoder`: a few strided conv stages on 64×64 images, pooled to the 3×3 grid of Shapes
  cells (so where a shape sits survives), then a linear map to the embedding width E.
- The text half is the course's `CLIPTextTransformer` (with projection), reading the real CLIP
  BPE ids, truncated to a 32-token context (the longest Shapes caption is 23 tokens with BOS and
  EOS; attention costs T², so 77 would waste over 5x the attention compute on padding). Its
  token embedding holds rows only for the ~37 BPE ids the Shapes grammar uses (plus one row for
  every other id) instead of all 49,408: SD's CLIP-L spends 38 M of its 123 M parameters there.
- `clip_loss`: the symmetric InfoNCE loss of CLIP's Fig. 3, with a learned temperature.
- The zoo recipe `train_clip_shapes` and `evaluate_clip_shapes` (zero-shot text -> image
  retrieval among 100 held-out images).
- Where it fails: `binding_test` asks whether an image prefers "a red circle and a blue square"
  over the colour-swapped "a blue circle and a red square" (a bag of words cannot tell them
  apart); `retrieval_explorer` shows the images closest to a caption built from menus.

Shape letters: B batch, C channels, H height, W width, T tokens, D text width, E embedding width.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from course import data
from course.text import BOS_ID, EOS_ID, VOCAB_SIZE, CLIPTextConfig, CLIPTextTransformer, tokenize
from course.zoo import Trained


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


def shapes_vocabulary() -> tuple[int, ...]:
    """The CLIP BPE ids of every word the Shapes grammar can write, plus BOS and EOS (sorted)."""
    ids = tokenize(list(data.VOCABULARY), max_length=8)["input_ids"]  # (V, 8); every Shapes word is a single BPE token
    return tuple(sorted(set(ids.flatten().tolist())))


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

    def __init__(self, width: int, embed_dim: int):
        super().__init__()
        layers, cin = [], 3
        for cout, stride in ((width, 2), (2 * width, 2), (4 * width, 2), (4 * width, 1)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, stride=stride), nn.GroupNorm(8, cout), nn.SiLU()]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(cin * data.GRID**2, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 64, 64) in [-1, 1] -> (B, E)."""
        h = F.adaptive_avg_pool2d(self.body(x), data.GRID)  # (B, 4w, 3, 3): one average per grid cell
        return self.proj(h.flatten(1))  # (B, 4w*9) -> (B, E)


class MiniClip(nn.Module):
    """Image encoder + CLIP text transformer + learned temperature (Radford et al. 2021, Sec. 2.5)."""

    def __init__(self, config: MiniClipConfig):
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoder(config.image_width, config.embed_dim)
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


# ----------------------------------------------------------------------------- training recipe

CLIP_SHAPES = MiniClipConfig()  # vocab_ids filled in by the recipe (`shapes_vocabulary()`)
# Chapter 05's second text encoder, in the role of SDXL's OpenCLIP bigG beside CLIP-L: the same
# recipe with a wider, deeper text tower (D = 96, 3 layers) whose projected EOS state (P = 96)
# is the pooled vector.
CLIP_SHAPES_WIDE = MiniClipConfig(embed_dim=96, text_width=96, text_layers=3, text_heads=4)
CLIP_SHAPES_STEPS = 1000  # a 250-step trial already reached 0.93 zero-shot top-1 (0.41 s/step, 1 thread)
CLIP_SHAPES_BATCH = 128
HELD_OUT_SEED = 424_242  # the evaluation scenes; training draws its seeds from the step generator


def clip_shapes_config(base: MiniClipConfig = CLIP_SHAPES) -> MiniClipConfig:
    """A shipped recipe's config: `base` (CLIP_SHAPES or CLIP_SHAPES_WIDE) with the Shapes vocabulary filled in."""
    return MiniClipConfig(**{**asdict(base), "vocab_ids": shapes_vocabulary()})


def clip_batch(step: int, batch_size: int, generator: torch.Generator, context_length: int = CLIP_SHAPES.context_length):
    """Fresh Shapes images and random paraphrased captions: ((B, 3, 64, 64), (B, T) ids)."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    images, captions, _ = data.sample_batch(batch_size, seed)
    return data.to_tensor(images), tokenize(captions, max_length=context_length)["input_ids"]


def clip_shapes_loss(model: MiniClip, batch, generator) -> torch.Tensor:
    x, input_ids = batch
    return model(x, input_ids)


def train_clip_shapes(steps: int | None, run_dir: Path, fresh: bool, progress: bool,
                      base: MiniClipConfig = CLIP_SHAPES) -> Trained:
    """Train the Shapes mini-CLIP with the course's training loop."""
    from course.train import TrainConfig, fit

    torch.manual_seed(0)
    config = clip_shapes_config(base)
    model = MiniClip(config)
    steps = steps or CLIP_SHAPES_STEPS
    train_config = TrainConfig(steps=steps, batch_size=CLIP_SHAPES_BATCH, lr=2e-3, weight_decay=1e-4,
                               warmup_steps=min(100, steps // 10), schedule="cosine", ema_decay=0.995,
                               checkpoint_every=250, log_every=25)
    result = fit(model, clip_shapes_loss, clip_batch, train_config, run_dir, resume=not fresh, progress=progress)
    return Trained(
        model=result.ema if result.ema is not None else result.model, config=asdict(config),
        wall_time_s=result.wall_time_s, steps=result.step, interrupted=result.interrupted,
    )


def train_clip_shapes_wide(steps: int | None, run_dir: Path, fresh: bool, progress: bool) -> Trained:
    """Train `clip-shapes-wide` (chapter 05's second text encoder): the clip-shapes recipe, CLIP_SHAPES_WIDE."""
    return train_clip_shapes(steps, run_dir, fresh, progress, base=CLIP_SHAPES_WIDE)


def load_clip_shapes_from(tensors: dict[str, torch.Tensor], config: dict) -> MiniClip:
    from course import checkpoints

    model = MiniClip(MiniClipConfig(**{**config, "vocab_ids": tuple(config["vocab_ids"])}))
    checkpoints.load_into(model, tensors, source="clip-shapes")
    return model.eval()


def load_clip_shapes(checkpoint: str | Path | None = None) -> MiniClip:
    """The shipped Shapes mini-CLIP (or one from `checkpoint`), hash-verified, in eval mode."""
    from course import checkpoints

    tensors, entry = checkpoints.load_checkpoint(None if checkpoint else "clip-shapes", checkpoint)
    return load_clip_shapes_from(tensors, entry["config"])


@torch.no_grad()
def retrieval_top1(model: MiniClip, scenes: list[data.Scene]) -> float:
    """Zero-shot text -> image top-1 among the scenes' images, with their canonical captions.

    Each canonical caption (all colours, shapes, sizes and positions stated) picks the image
    its embedding is closest to. A pick counts as right when that image's canonical caption is
    the query's: two scenes can differ only by a pixel of jitter, and then either is correct.

    Args:
        model: a MiniClip.
        scenes: the candidate images' scenes (100 for `zero_shot_top1_100`).

    Returns:
        share of captions whose pick is right.
    """
    device = model.logit_scale.device
    captions = [data.caption(s) for s in scenes]
    images = model.encode_image(data.to_tensor(data.render_batch(scenes)).to(device))  # (N, E)
    texts = model.encode_captions(captions)  # (N, E)
    picks = (texts @ images.T).argmax(dim=1).tolist()  # (N,) image chosen by each caption
    return sum(captions[p] == c for p, c in zip(picks, captions)) / len(scenes)


@torch.no_grad()
def evaluate_clip_shapes(model: MiniClip, quick: bool = False) -> dict[str, float]:
    """Zero-shot text -> image top-1 among 100 held-out images, averaged over 10 sets (3 if quick)."""
    model.eval()
    groups = 3 if quick else 10
    scenes = data.sample_scenes(100 * groups, HELD_OUT_SEED)
    scores = [retrieval_top1(model, scenes[100 * i : 100 * (i + 1)]) for i in range(groups)]
    return {"zero_shot_top1_100": round(sum(scores) / groups, 4), "held_out_images": 100 * groups}


# ----------------------------------------------------------------------------- where it fails: binding


def binding_captions(scene: data.Scene) -> tuple[str, str, str]:
    """Three captions of a two-object scene: right, colours swapped, one colour wrong.

    "a red circle and a blue square" (right), "a blue circle and a red square" (the same words,
    the colours bound to the other shapes) and "a green circle and a blue square" (a colour
    that is not in the image at all).

    Args:
        scene: a scene with two objects of different colours and different shapes.

    Returns:
        (right, swapped, wrong_colour) captions, colour and shape only.
    """
    if len(scene.objects) != 2:
        raise ValueError(f"binding needs a two-object scene, got {len(scene.objects)} object(s)")
    (c1, s1), (c2, s2) = ((o.color, o.shape) for o in scene.objects)
    if c1 == c2 or s1 == s2:
        raise ValueError("binding needs two different colours and two different shapes, else the swap says the same thing")
    other = next(c for c in data.PALETTE if c not in (c1, c2))
    return f"a {c1} {s1} and a {c2} {s2}", f"a {c2} {s1} and a {c1} {s2}", f"a {other} {s1} and a {c2} {s2}"


def binding_scenes(n: int, seed: int = HELD_OUT_SEED + 1) -> list[data.Scene]:
    """`n` held-out two-object scenes with two different colours and two different shapes."""
    scenes, draw = [], 0
    while len(scenes) < n:
        batch = data.sample_scenes(4 * n, seed + draw, p_two=1.0)
        scenes += [s for s in batch if len({o.shape for o in s.objects}) == 2][: n - len(scenes)]
        draw += 1
    return scenes


@torch.no_grad()
def binding_test(model: MiniClip, scenes: list[data.Scene]) -> dict[str, float]:
    """How often the image prefers its right caption over a colour-swapped one and over a wrong colour.

    A bag of words scores "a red circle and a blue square" and "a blue circle and a red square"
    the same: only a model that binds each colour to its shape can tell them apart. The
    wrong-colour control shows the model does see the colours.

    Args:
        model: a MiniClip.
        scenes: two-object scenes (see `binding_scenes`).

    Returns:
        {"vs_swapped": share of images closer to the right caption than to the swapped one,
         "vs_wrong_colour": the same against a caption with a colour the image lacks}.
    """
    device = model.logit_scale.device
    right, swapped, wrong = zip(*(binding_captions(s) for s in scenes))
    images = model.encode_image(data.to_tensor(data.render_batch(scenes)).to(device))  # (N, E)
    sims = [(images * model.encode_captions(list(c))).sum(-1) for c in (right, swapped, wrong)]  # 3 x (N,)
    return {"vs_swapped": (sims[0] > sims[1]).float().mean().item(), "vs_wrong_colour": (sims[0] > sims[2]).float().mean().item()}


def retrieval_explorer(model: MiniClip, n: int = 100, seed: int = HELD_OUT_SEED):
    """Chapter 03's explorer: write a caption from menus; see the 4 of n held-out images closest to it."""
    from course.widgets import Choice, explore

    scenes = data.sample_scenes(n, seed)
    images = data.render_batch(scenes)  # (n, 64, 64, 3) uint8
    with torch.no_grad():
        image_embeds = model.encode_image(data.to_tensor(images).to(model.logit_scale.device))  # (n, E)

    def closest_images(color: str, shape: str, position: str):
        import matplotlib.pyplot as plt

        text = f"a {color} {shape} in the {position}"
        with torch.no_grad():
            sims = (image_embeds @ model.encode_captions([text])[0]).cpu()  # (n,)
        top = sims.topk(4)
        fig, axes = plt.subplots(2, 2, figsize=(3.2, 3.6))
        for ax, score, i in zip(axes.flat, top.values.tolist(), top.indices.tolist()):
            ax.imshow(images[i])
            ax.set_title(f"cos {score:.2f}", fontsize=9)
            ax.axis("off")
        fig.suptitle(f'"{text}"\nthe 4 closest of {n} images', fontsize=9)
        fig.tight_layout()
        return fig

    return explore(
        closest_images, static={"color": ["red", "cyan"], "position": ["top left", "bottom right"]},
        color=Choice(tuple(data.PALETTE)), shape=Choice(data.SHAPES), position=Choice(data.POSITIONS, "top left"),
    )
