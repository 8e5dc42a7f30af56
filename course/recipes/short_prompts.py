"""Chapter 04: why a Shapes text-to-image model follows short prompts worst, measured.

"a red circle" is what a person types first; the world's canonical caption says more ("a large red
circle in the center"). The first shipped `sd1-shapes` followed canonical captions (one-object full
match 0.86) far better than short prompts (0.67). Four measurements name the cause, each a function
of a text-to-image pipeline (`course.pipelines.base.TextToImage`) or of the training recipe, so the
chapter, the command line and the tests run the same code:

1. `caption_distribution`: what the training captions say (`metrics.caption_shares` over the
   recipe's own captions). A prompt style the model rarely saw is one it cannot follow.
2. `text_neighbours`: does the frozen text encoder keep a short prompt's colour and shape? For each
   short prompt, the k nearest canonical captions (cosine of the whole (T, D) states) among held-out
   scenes, and how many of them share its colour and its shape.
3. `unconditional_draws`: what the empty prompt draws, the branch classifier-free guidance pushes
   away from (colours and shapes of the detected objects, and how many objects).
4. `guidance_sweep`: ShapesEval of short and canonical one-object prompts of the same scenes, per
   guidance scale: is the failure in the conditional model (w = 1) or made by guidance?

`diagnose(pipe)` runs all four; `python -m course.recipes.short_prompts [MODEL]` records them for
the shipped weights in RECORD (course/recipes/data/short_prompts.json) under the checkpoint's
sha256, with the manifest's three-style evaluation of the same weights, so the chapter can show
the model before and after a fix.

Shape letters: B prompts, T tokens, D text width.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from course.recipes.style_eval import HELD_OUT_SEED  # the evaluation scenes of the Shapes text-to-image models
from course.world import metrics, shapes

RECORD = Path(__file__).parent / "data" / "short_prompts.json"
SWEEP_GUIDANCES = (1.0, 2.0, 3.0, 5.0, 7.5)


def caption_distribution(caption_fn, n: int = 20_000, seed: int = 777) -> dict[str, float]:
    """Shares of empty, short, partial and full captions that `caption_fn(scene, rng)` writes for n scenes.

    Args:
        caption_fn: a recipe's training caption, e.g. `sd1_shapes.training_caption`.
        n: scenes (drawn as the training banks draw them, up to two objects).
        seed: the scenes' and the captions' seed.

    Returns:
        `metrics.caption_shares` of the n captions.
    """
    rng = np.random.default_rng(seed)
    return metrics.caption_shares([caption_fn(s, rng) for s in shapes.sample_scenes(n, seed)])


@torch.no_grad()
def text_neighbours(text_encoder, k: int = 5, n: int = 256, seed: int = HELD_OUT_SEED) -> dict[str, float]:
    """How much of a short prompt's colour and shape its text states keep, read off its nearest captions.

    For each of the short one-object prompts "a {colour} {shape}" (every colour and shape of the world)
    the k canonical captions of n held-out one-object scenes whose states (B, T, D), flattened, have the
    highest cosine with the prompt's; the shares of those neighbours with the same colour and shape.
    As a control, the same for the paraphrases of the same scenes.

    Returns:
        {"short_color", "short_shape", "paraphrase_color", "paraphrase_shape"}: shares in [0, 1]
        (chance is 1 / len(PALETTE) for colour and 1 / len(SHAPES) for shape).
    """
    def states(texts: list[str]) -> torch.Tensor:  # (B, T*D); SDXL's DualPromptEncoder also returns the pooled vector
        out = text_encoder(texts)
        return torch.nn.functional.normalize((out[0] if isinstance(out, tuple) else out).flatten(1), dim=1)

    scenes = shapes.sample_scenes(n, seed, max_objects=1)
    keys = states([shapes.caption(s) for s in scenes])  # (n, T*D)
    queries = {"short": [shapes.Scene((shapes.SceneObject(c, s, None, None),))
                         for c in shapes.PALETTE for s in shapes.SHAPES],
               "paraphrase": scenes}
    rng = np.random.default_rng(seed + 1)
    out = {}
    for style, query_scenes in queries.items():
        texts = [shapes.short_caption(s) if style == "short" else shapes.caption(s, rng) for s in query_scenes]
        q = states(texts)  # (B, T*D)
        sims = q @ keys.T  # (B, n)
        if style == "paraphrase":
            sims.fill_diagonal_(-2.0)  # not the query scene's own canonical caption
        top = sims.topk(k, dim=1).indices  # (B, k)
        same_colour = [[scenes[j].objects[0].color == qs.objects[0].color for j in row] for qs, row in zip(query_scenes, top.tolist())]
        same_shape = [[scenes[j].objects[0].shape == qs.objects[0].shape for j in row] for qs, row in zip(query_scenes, top.tolist())]
        out[f"{style}_color"], out[f"{style}_shape"] = float(np.mean(same_colour)), float(np.mean(same_shape))
    return {key: round(v, 4) for key, v in out.items()}


def unconditional_draws(pipe, n: int = 64, steps: int | None = None, seed: int = 0) -> dict[str, float]:
    """What the empty prompt draws: shares of the detected objects per colour and shape, and objects per image.

    Returns:
        {"objects_per_image", "color_<name>" for each colour, "shape_<name>" for each shape}.
    """
    images = pipe.generate([""] * n, steps=steps, guidance=1.0, seed=seed)  # (n, H, W, 3)
    found = [d for image in images for d in metrics.detect(image)]
    total = max(len(found), 1)
    out = {"objects_per_image": len(found) / n}
    out |= {f"color_{c}": sum(d.color == c for d in found) / total for c in shapes.PALETTE}
    out |= {f"shape_{s}": sum(d.shape == s for d in found) / total for s in shapes.SHAPES}
    return {key: round(v, 4) for key, v in out.items()}


def guidance_sweep(pipe, n: int = 64, guidances=SWEEP_GUIDANCES, steps: int | None = None,
                   seed: int = HELD_OUT_SEED) -> dict[str, dict[str, float]]:
    """ShapesEval of n held-out one-object scenes, prompted short and canonical, per guidance scale.

    Returns:
        {f"w{w:g}": {"short_full_match", "short_color", "short_shape", "short_count",
                      "canonical_full_match", ...}}; the same starting noise for both styles.
    """
    scenes = shapes.sample_scenes(n, seed, max_objects=1)
    out = {}
    for w in guidances:
        row = {}
        for style in ("short", "canonical"):
            prompts = metrics.style_prompts(scenes, style)
            report = metrics.shapes_eval(pipe.generate(prompts, steps=steps, guidance=w, seed=0), prompts)
            row |= {f"{style}_{a}": round(getattr(report, a), 4) for a in ("full_match", "color", "shape", "count")}
        out[f"w{w:g}"] = row
    return out


def diagnose(pipe, caption_fn, text_encoder, n: int = 64) -> dict[str, dict]:
    """All four measurements for one model (see the module docstring)."""
    return {"captions": caption_distribution(caption_fn), "text": text_neighbours(text_encoder),
            "unconditional": unconditional_draws(pipe, n), "guidance": guidance_sweep(pipe, n),
            "settings": {"n": n, "steps": pipe.default_steps}}


def read_record(path: Path = RECORD) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def main(argv: list[str]) -> None:
    """python -m course.recipes.short_prompts [sd1-shapes | sdxl-shapes]: diagnose the shipped weights, add them
    to RECORD (both recipes caption with `sd1_shapes.training_caption` at their config's short-caption share)."""
    from course import checkpoints
    from course.pipelines import base
    from course.recipes import sd1_shapes

    name = argv[0] if argv else "sd1-shapes"
    if name not in ("sd1-shapes", "sdxl-shapes"):
        raise SystemExit(f"short_prompts diagnoses sd1-shapes or sdxl-shapes (their recipes' captions and text "
                         f"encoders), not {name!r}")
    entry = checkpoints.manifest_entry(name)
    pipe = base.load(name)
    share = entry["config"].get("short_caption_share", 0.0)
    result = diagnose(pipe, lambda s, rng: sd1_shapes.training_caption(s, rng, share), pipe.text_encoder)
    result["settings"] |= {"model": name, "short_caption_share": share, "created": entry.get("created")}
    result["style"] = {k: v for k, v in entry["metrics"].items() if k.startswith("style_")}  # the shipped evaluation's
    if name == "sdxl-shapes":  # and the same scenes refined by the shipped refiner, as its evaluation measured them
        refined = checkpoints.manifest_entry("sdxl-shapes-refiner")["metrics"]
        if any(refined.get(f"base_{k}") != v for k, v in result["style"].items() if k.endswith("_full_match")):
            raise SystemExit("the refiner's evaluation measured another sdxl-shapes: run `python -m course eval "
                             "sdxl-shapes-refiner --record` (it re-measures against the shipped base) first")
        result["refined_style"] = {k: v for k, v in refined.items() if k.startswith("refined_style_")}
    record = read_record()
    record[entry["sha256"]] = result
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
