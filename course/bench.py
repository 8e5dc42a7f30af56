"""`python -m course bench`: the course's speed and acceptance figures, printed, not asserted.

Performance is measured here, with wall-clock timings on the machine at hand, rather than
with timed assertions in the tests (which would be flaky on a shared CPU). Each section prints
what it measured; chapters add their own sections to `SECTIONS`.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from course.runtime import best_time
from course.world import metrics, shapes


def bench_shapes_generator(quick: bool) -> dict[str, float]:
    """Images per second of the Shapes world: scenes + rendering + captions, and rendering alone."""
    n = 2_000 if quick else 10_000
    full = best_time(lambda: shapes.sample_batch(n, seed=1))
    scenes = shapes.sample_scenes(n, seed=2)
    render = best_time(lambda: shapes.render_batch(scenes))
    return {"images": n, "sample_batch_img_per_s": round(n / full), "render_img_per_s": round(n / render)}


def shapes_eval_acceptance(n: int = 1000, seed: int = 123) -> dict[str, float]:
    """ShapesEval on real images: their own captions (must be >= 0.99) vs shuffled (<= 0.25)."""
    images, paraphrases, scenes = shapes.sample_batch(n, seed)
    canonical = [shapes.caption(s) for s in scenes]
    shuffled = [canonical[i] for i in np.random.default_rng(seed).permutation(n)]
    start = time.perf_counter()
    own = metrics.shapes_eval(images, canonical)
    seconds = time.perf_counter() - start
    return {
        "images": n,
        "full_match_own_captions": own.full_match,
        "full_match_paraphrased_captions": metrics.shapes_eval(images, paraphrases).full_match,
        "full_match_shuffled_captions": metrics.shapes_eval(images, shuffled).full_match,
        "eval_img_per_s": round(n / seconds),
    }


def bench_shapes_fid_floor(quick: bool) -> dict[str, float]:
    """Shapes-FID between two independent sets of real images (the floor), by set size."""
    from course import checkpoints
    from course.world.classifiers import load_shapes_classifier

    if "shapes-classifier" not in checkpoints.read_manifest():
        return {"skipped": "shapes-classifier is not shipped yet (python -m course train shapes-classifier --ship)"}
    classifier = load_shapes_classifier()
    sizes = (500,) if quick else (500, 2000)
    return {f"floor_n{n}": round(metrics.shapes_fid_floor(n, classifier=classifier), 3) for n in sizes}


def bench_pixel_vs_latent(quick: bool) -> dict[str, float]:
    """ms per image of a diffusion training step and of 50-step sampling, pixels vs latents, and the ratios."""
    from course.recipes.vae_shapes import pixel_vs_latent_cost

    return pixel_vs_latent_cost(batch_size=4 if quick else 8, repeat=1 if quick else 3)


def bench_ddpm_fashion(quick: bool) -> dict[str, float]:
    """Chapter 01: one training step and one sampling step of the ddpm-fashion U-Net."""
    from course.recipes.ddpm_fashion import bench_sampler

    return bench_sampler(quick)


def bench_unet_vs_diffusers(quick: bool) -> dict[str, float]:
    """Chapter 04: the course U-Net against diffusers' UNet2DConditionModel, same config and weights."""
    import importlib.util

    from course import paths

    spec = importlib.util.spec_from_file_location("bench_unet", paths.REPO_ROOT / "benchmarks" / "bench_unet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    presets = ("shapes-latent",) if quick else ("shapes-latent", "fashion-32")
    results = {}
    for preset in presets:
        for key, value in module.bench_unet(preset, repeats=2 if quick else 5).items():
            results[f"{preset}: {key}"] = value
    return results


SECTIONS = {
    "Shapes generator (issue: >= 10,000 images/s)": bench_shapes_generator,
    "ShapesEval acceptance (real images: own >= 0.99, shuffled <= 0.25)": lambda quick: shapes_eval_acceptance(500 if quick else 2000),
    "Shapes-FID real-vs-real floor": bench_shapes_fid_floor,
    "Pixel vs latent diffusion cost (chapter 02: same U-Net on 64x64x3 vs 8x8x4)": bench_pixel_vs_latent,
    "DDPM on Fashion-MNIST (chapter 01: the ddpm-fashion U-Net, one training step and one sampling step)": bench_ddpm_fashion,
    "U-Net: course vs diffusers (chapter 04: forward and training step, batch 64, ratio < 1 = course faster)": bench_unet_vs_diffusers,
}


def run(quick: bool = False) -> dict[str, dict]:
    """Run every section, print its figures, return them."""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = {}
    for title, fn in SECTIONS.items():
        print(f"\n== {title}")
        try:
            results[title] = fn(quick)
        except ImportError as err:
            results[title] = {"skipped": f"not available yet: {err}"}
        for key, value in results[title].items():
            print(f"  {key:<36} {format_figure(value)}")
    return results


def format_figure(value) -> str:
    """A measured figure for reading: floats to 4 significant digits (0.04548055099985504 -> 0.04548)."""
    if isinstance(value, bool) or not isinstance(value, (float, np.floating)):
        return str(value)
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
