"""Prompt adherence in the three prompt styles, and concept bleeding: how chapter 09 scores a text-to-image model.

- `style_metrics`: ShapesEval in the three prompt styles (canonical, paraphrase and partial, short)
  on the same held-out scenes, per attribute and per number of objects, with concept bleeding.
- `score_report` / `score_styles`: the same as nested numbers with GenEval's categories
  (`geneval_categories`), what the capstone table stores.
- `concept_bleeding`: SDXL's "concept bleeding" in miniature (Podell et al. 2023, Sec. 4): on a
  two-object prompt of two colours and two shapes, the share of images whose colours are swapped
  between the objects or merged onto both.

Used by `course.recipes.sd3_shapes` (its manifest metrics) and `course.recipes.capstone` (the
chapter's table and experiments), which sits above both.

Images are uint8 (B, H, W, 3).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from course.world import shapes

HELD_OUT_SEED = 424_242  # the evaluation scenes of sd1-shapes, sdxl-shapes and sd3-shapes


def batched(fn, prompts: list[str], batch_size: int = 128):
    """fn(prompts, seed) per chunk of batch_size prompts (seed = the chunk's first index), outputs concatenated
    (each part of them, when fn returns a tuple of arrays)."""
    outs = [fn(prompts[i : i + batch_size], i) for i in range(0, len(prompts), batch_size)]
    if isinstance(outs[0], tuple):
        return tuple(np.concatenate(parts) for parts in zip(*outs))
    return np.concatenate(outs)


def generate_batched(pipe, prompts: list[str], batch_size: int = 128, **kwargs) -> np.ndarray:
    return batched(lambda p, seed: pipe.generate(p, seed=seed, **kwargs), prompts, batch_size)


def concept_bleeding(images: np.ndarray, prompts: list[str]) -> dict[str, float]:
    """SDXL's "concept bleeding" in miniature: on two-object prompts of two colours and two shapes
    (c1 s1 and c2 s2), the share of images whose colours are swapped (c2 s1 and c1 s2 drawn) or
    merged (both shapes drawn in one of the two colours, the other colour absent).

    Returns:
        {"bleeding": swapped + merged, "swapped", "merged", "bound" (c1 s1 and c2 s2 both drawn),
         "n" (eligible prompts)}.

    Ref: Podell et al. 2023, Sec. 4 (limitations: "concept bleeding").
    """
    from course.world import metrics

    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; give one prompt per image")
    counts = {"swapped": 0, "merged": 0, "bound": 0, "n": 0}
    labels = metrics.label_pixels(np.asarray(images)) if len(images) else []
    for image, prompt, label in zip(images, prompts, labels):
        objs = shapes.parse(prompt).objects
        if len(objs) != 2 or objs[0].color == objs[1].color or objs[0].shape == objs[1].shape:
            continue
        (c1, s1), (c2, s2) = ((o.color, o.shape) for o in objs)
        found = {(d.color, d.shape) for d in metrics.detect(image, label)}
        colours = {c for c, _ in found}
        counts["n"] += 1
        counts["bound"] += (c1, s1) in found and (c2, s2) in found
        counts["swapped"] += (c2, s1) in found and (c1, s2) in found
        counts["merged"] += any((c, s1) in found and (c, s2) in found and other not in colours
                                for c, other in ((c1, c2), (c2, c1)))
    n = max(counts["n"], 1)
    out = {k: round(counts[k] / n, 4) for k in ("swapped", "merged", "bound")}
    return {"bleeding": round(out["swapped"] + out["merged"], 4), **out, "n": counts["n"]}


def two_object_colour_binding(report) -> float:
    """Colour binding on two-object prompts: the share of their objects drawn with the right colour on the right shape."""
    by = report.by_objects()
    return round(by[2].binding, 4) if 2 in by else math.nan


@torch.no_grad()
def style_metrics(generate, n: int = 256, seed: int = HELD_OUT_SEED) -> dict[str, float]:
    """ShapesEval in the three prompt styles on n held-out scenes (per attribute, one / two objects), and
    concept bleeding on each style's two-object prompts.

    Args:
        generate: prompts -> uint8 images (B, 64, 64, 3), e.g. a pipeline at its settings.
    """
    from course.world import metrics

    scenes = shapes.sample_scenes(n, seed)
    out: dict[str, float] = {}
    reports = {}
    for style in metrics.PROMPT_STYLES:
        prompts = metrics.style_prompts(scenes, style)
        images = generate(prompts)
        reports[style] = metrics.shapes_eval(images, prompts)
        out |= {f"bleeding_{style}_{k}": v for k, v in concept_bleeding(images, prompts).items()}
    return out | metrics.style_table(reports)


def two_object_prompts(n: int = 256, style: str = "canonical", seed: int = HELD_OUT_SEED) -> list[str]:
    """The prompts of the n held-out scenes that `concept_bleeding` scores (two colours, two shapes), in a style."""
    from course.world import metrics

    scenes = [s for s in shapes.sample_scenes(n, seed) if len(s.objects) == 2
              and s.objects[0].color != s.objects[1].color and s.objects[0].shape != s.objects[1].shape]
    return metrics.style_prompts(scenes, style)


@torch.no_grad()
def bleeding_rates(generate, n: int = 256, styles: tuple[str, ...] = ("canonical", "short")) -> dict[str, dict]:
    """`concept_bleeding` of a model (prompts -> uint8 images) on the eligible two-object prompts of n held-out scenes."""
    return {style: concept_bleeding(generate(p), p) for style in styles for p in [two_object_prompts(n, style)]}


# ----------------------------------------------------------------------------- GenEval's categories, in miniature
GENEVAL_CATEGORIES = ("single_object", "two_objects", "counting", "colors", "position", "color_attribution")


def _states_position(prompt: str) -> bool:
    scene = shapes.parse(prompt)
    return scene.relation is not None or any(o.position is not None for o in scene.objects)


def geneval_categories(report) -> dict[str, float]:
    """ShapesEval's per-image results read as GenEval's six categories (Ghosh et al. 2023, Sec. 3):

        single_object      one-object prompts: the named shape is drawn
        two_objects        two-object prompts: both named shapes are drawn
        counting           every prompt: exactly as many objects as asked for
        colors             one-object prompts: the named colour on the named shape
        position           two-object prompts that state positions or a relation: all of them hold
        color_attribution  two-object prompts: each colour on its own shape (both bound)

    and "overall", their mean (GenEval's). A category no prompt tests (position on short prompts,
    which state none) is NaN and left out of the mean. GenEval draws its own prompts per category;
    here the categories are read off one held-out prompt set, so they are comparable across models
    of the course, and only in their ranking with GenEval's published numbers.
    """
    one = [r for r in report.results if r.n_objects == 1]
    two = [r for r in report.results if r.n_objects == 2]
    placed = [r for r in two if _states_position(r.prompt)]
    mean = lambda xs: round(float(np.mean(xs)), 4) if xs else math.nan  # noqa: E731
    out = {"single_object": mean([r.shape == 1.0 for r in one]), "two_objects": mean([r.shape == 1.0 for r in two]),
           "counting": mean([bool(r.count) for r in report.results]), "colors": mean([r.binding == 1.0 for r in one]),
           "position": mean([r.position == 1.0 for r in placed]),
           "color_attribution": mean([r.binding == 1.0 for r in two])}
    scored = [v for v in out.values() if not math.isnan(v)]
    return out | {"overall": round(float(np.mean(scored)), 4) if scored else math.nan}


# GenEval (Ghosh et al. 2023) as SD3's report tabulates it (Esser et al. 2024, Table 5): the real models' ranking.
GENEVAL_PUBLISHED = {
    "SD 1.5": {"overall": 0.43, "single_object": 0.97, "two_objects": 0.38, "counting": 0.35, "colors": 0.76,
               "position": 0.04, "color_attribution": 0.06},
    "SDXL": {"overall": 0.55, "single_object": 0.98, "two_objects": 0.74, "counting": 0.39, "colors": 0.85,
             "position": 0.15, "color_attribution": 0.23},
    "SD3 8B (1024px, DPO)": {"overall": 0.74, "single_object": 0.99, "two_objects": 0.94, "counting": 0.72,
                             "colors": 0.89, "position": 0.33, "color_attribution": 0.60},
}


def score_report(images: np.ndarray, prompts: list[str]) -> dict:
    """ShapesEval as nested numbers: full match, GenEval's categories, per-attribute scores of one / two objects."""
    from course.world import metrics

    report = metrics.shapes_eval(images, prompts)
    by = report.by_objects()
    out = {"full_match": round(report.full_match, 4), **geneval_categories(report)}
    for k, group in ((1, "one"), (2, "two")):
        if k in by:
            out[group] = {attr: round(getattr(by[k], attr), 4) for attr in metrics.ATTRIBUTES} | {"n": by[k].n}
    return out


@torch.no_grad()
def score_styles(generate, n: int = 256, seed: int = HELD_OUT_SEED) -> dict[str, dict]:
    """{style: `score_report`} (full match, GenEval's categories, per-attribute one / two objects) on n held-out scenes."""
    from course.world import metrics

    scenes = shapes.sample_scenes(n, seed)
    prompts = {style: metrics.style_prompts(scenes, style) for style in metrics.PROMPT_STYLES}
    return {style: score_report(generate(p), p) for style, p in prompts.items()}
