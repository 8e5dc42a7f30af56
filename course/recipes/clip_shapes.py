"""Chapters 03 and 05: the `clip-shapes` and `clip-shapes-wide` recipes, their evaluation and explorer.

The network is `course.nn.mini_clip.MiniClip`; this module trains it contrastively on Shapes
images and captions and measures what it learned:

- `shapes_vocabulary`: the ~37 CLIP BPE ids the Shapes grammar uses, the rows of the token table.
- The zoo recipes `train_clip_shapes` / `train_clip_shapes_wide` and `evaluate_clip_shapes`
  (zero-shot text -> image retrieval among 100 held-out images).
- Where it fails: `binding_test` asks whether an image prefers "a red circle and a blue square"
  over the colour-swapped "a blue circle and a red square" (a bag of words cannot tell them
  apart); `retrieval_explorer` shows the images closest to a caption built from menus.

Shape letters: B batch, T tokens, E embedding width.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from course.nn.clip_text import tokenize
from course.nn.mini_clip import MiniClip, MiniClipConfig
from course.world import shapes
from course.zoo import Trained


def shapes_vocabulary() -> tuple[int, ...]:
    """The CLIP BPE ids of every word the Shapes grammar can write, plus BOS and EOS (sorted)."""
    ids = tokenize(list(shapes.VOCABULARY), max_length=8)["input_ids"]  # (V, 8); every Shapes word is a single BPE token
    return tuple(sorted(set(ids.flatten().tolist())))


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
    images, captions, _ = shapes.sample_batch(batch_size, seed)
    return shapes.to_tensor(images), tokenize(captions, max_length=context_length)["input_ids"]


def clip_shapes_loss(model: MiniClip, batch, generator) -> torch.Tensor:
    x, input_ids = batch
    return model(x, input_ids)


def train_clip_shapes(steps: int | None, run_dir: Path, fresh: bool, progress: bool,
                      base: MiniClipConfig = CLIP_SHAPES) -> Trained:
    """Train the Shapes mini-CLIP with the course's training loop."""
    from course.train import TrainConfig, fit, recipe_steps

    steps = recipe_steps(steps, CLIP_SHAPES_STEPS)
    torch.manual_seed(0)
    config = clip_shapes_config(base)
    model = MiniClip(config)
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
def retrieval_top1(model: MiniClip, scenes: list[shapes.Scene]) -> float:
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
    captions = [shapes.caption(s) for s in scenes]
    images = model.encode_image(shapes.to_tensor(shapes.render_batch(scenes)).to(device))  # (N, E)
    texts = model.encode_captions(captions)  # (N, E)
    picks = (texts @ images.T).argmax(dim=1).tolist()  # (N,) image chosen by each caption
    return sum(captions[p] == c for p, c in zip(picks, captions)) / len(scenes)


@torch.no_grad()
def evaluate_clip_shapes(model: MiniClip, quick: bool = False) -> dict[str, float]:
    """Zero-shot text -> image top-1 among 100 held-out images, averaged over 10 sets (3 if quick)."""
    model.eval()
    groups = 3 if quick else 10
    scenes = shapes.sample_scenes(100 * groups, HELD_OUT_SEED)
    scores = [retrieval_top1(model, scenes[100 * i : 100 * (i + 1)]) for i in range(groups)]
    return {"zero_shot_top1_100": round(sum(scores) / groups, 4), "held_out_images": 100 * groups}


# ----------------------------------------------------------------------------- where it fails: binding


def binding_captions(scene: shapes.Scene) -> tuple[str, str, str]:
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
    other = next(c for c in shapes.PALETTE if c not in (c1, c2))
    return f"a {c1} {s1} and a {c2} {s2}", f"a {c2} {s1} and a {c1} {s2}", f"a {other} {s1} and a {c2} {s2}"


def binding_scenes(n: int, seed: int = HELD_OUT_SEED + 1) -> list[shapes.Scene]:
    """`n` held-out two-object scenes with two different colours and two different shapes."""
    scenes, draw = [], 0
    while len(scenes) < n:
        batch = shapes.sample_scenes(4 * n, seed + draw, p_two=1.0)
        scenes += [s for s in batch if len({o.shape for o in s.objects}) == 2][: n - len(scenes)]
        draw += 1
    return scenes


@torch.no_grad()
def binding_test(model: MiniClip, scenes: list[shapes.Scene]) -> dict[str, float]:
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
    images = model.encode_image(shapes.to_tensor(shapes.render_batch(scenes)).to(device))  # (N, E)
    sims = [(images * model.encode_captions(list(c))).sum(-1) for c in (right, swapped, wrong)]  # 3 x (N,)
    return {"vs_swapped": (sims[0] > sims[1]).float().mean().item(), "vs_wrong_colour": (sims[0] > sims[2]).float().mean().item()}


def retrieval_explorer(model: MiniClip, n: int = 100, seed: int = HELD_OUT_SEED):
    """Chapter 03's explorer: write a caption from menus; see the 4 of n held-out images closest to it."""
    from course.widgets import Choice, explore

    scenes = shapes.sample_scenes(n, seed)
    images = shapes.render_batch(scenes)  # (n, 64, 64, 3) uint8
    with torch.no_grad():
        image_embeds = model.encode_image(shapes.to_tensor(images).to(model.logit_scale.device))  # (n, E)

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
        color=Choice(tuple(shapes.PALETTE)), shape=Choice(shapes.SHAPES), position=Choice(shapes.POSITIONS, "top left"),
    )
