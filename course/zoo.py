"""The course's named models: what `python -m course train|eval|generate NAME` can work on.

Each model is a `ModelCard` naming the functions that build, train, evaluate and sample it;
those functions live in the model family's recipe (`course.recipes.sd1_shapes`, ...; the loaders of
the feature classifiers in `course.world.classifiers`, of the codecs in `course.nn.codec`) and are
imported only when a command needs them, so `import course.zoo` stays light.

The functions' contracts:
    train(steps: int | None, run_dir: Path, fresh: bool, progress: bool) -> Trained
    load(tensors: dict[str, Tensor], config: dict) -> nn.Module        (weights already verified)
    evaluate(model: nn.Module, quick: bool) -> dict[str, float]         (the manifest's metrics)
    pipeline(model: nn.Module, config: dict) -> a pipeline with .generate(...) (generators only)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn


@dataclass(frozen=True)
class ModelCard:
    name: str  # the name used on the command line and in the manifest
    chapter: str  # the notebook that builds it, e.g. "00"
    summary: str  # one line for listings
    train: str  # "module:function", see the module docstring
    load: str  # "module:function"
    evaluate: str  # "module:function"
    pipeline: str | None = None  # "module:function" for models that generate images
    storage_dtype: str = "float32"  # how the shipped weights are stored: "float16" halves the large U-Nets
    #   (the course's checkpoints share a 120 MB budget, COURSE_PLAN.md); they load back into float32, and the
    #   manifest's metrics are measured on the rounded weights


@dataclass
class Trained:
    """What a training recipe returns: the weights to ship and how they were made."""

    model: nn.Module  # the weights to ship (the EMA copy where the recipe keeps one)
    config: dict[str, Any]  # the model config, enough for `load` to rebuild it
    wall_time_s: float  # training time, including resumed segments
    steps: int
    interrupted: bool  # Ctrl-C: state saved in the run dir, not finished
    notes: str = ""


MODELS: dict[str, ModelCard] = {
    card.name: card
    for card in (
        ModelCard(
            "shapes-classifier", "00",
            "Shapes classifier (colour×shape, cell, count) whose features give Shapes-FID",
            train="course.recipes.classifiers:train_shapes_classifier",
            load="course.world.classifiers:load_shapes_classifier_from",
            evaluate="course.recipes.classifiers:evaluate_shapes_classifier",
        ),
        ModelCard(
            "ddpm-fashion", "01",
            "unconditional DDPM on Fashion-MNIST, 32x32 pixels (sample with DDPM or DDIM)",
            train="course.recipes.ddpm_fashion:train_ddpm_fashion",
            load="course.recipes.ddpm_fashion:load_ddpm_fashion",
            evaluate="course.recipes.ddpm_fashion:evaluate_ddpm_fashion",
            pipeline="course.recipes.ddpm_fashion:ddpm_fashion_pipeline",
        ),
        ModelCard(
            "fashion-classifier", "01",
            "Fashion-MNIST classifier (10 classes) whose features give the FID of chapter 01",
            train="course.recipes.classifiers:train_fashion_classifier",
            load="course.world.classifiers:load_fashion_classifier_from",
            evaluate="course.recipes.classifiers:evaluate_fashion_classifier",
        ),
        ModelCard(
            "vae-shapes", "02",
            "VAE 64x64x3 -> 8x8x4 latents (f = 8, 4 channels) for Shapes, with per-channel latent normalisation",
            train="course.recipes.vae_shapes:train_vae_shapes",
            load="course.nn.codec:load_codec_from",
            evaluate="course.recipes.vae_shapes:evaluate_vae_shapes",
        ),
        ModelCard(
            "ae-shapes", "02",
            "plain autoencoder (no KL term), otherwise vae-shapes: chapter 02's autoencoder-vs-VAE comparison",
            train="course.recipes.vae_shapes:train_ae_shapes",
            load="course.nn.codec:load_codec_from",
            evaluate="course.recipes.vae_shapes:evaluate_vae_shapes",
        ),
        ModelCard(
            "clip-shapes", "03",
            "mini-CLIP (conv image encoder + CLIP text transformer) trained contrastively on Shapes captions",
            train="course.recipes.clip_shapes:train_clip_shapes",
            load="course.recipes.clip_shapes:load_clip_shapes_from",
            evaluate="course.recipes.clip_shapes:evaluate_clip_shapes",
        ),
        ModelCard(
            "clip-shapes-wide", "05",
            "wider mini-CLIP (text width 96, 3 layers): SDXL's second text encoder and pooled vector, in miniature",
            train="course.recipes.clip_shapes:train_clip_shapes_wide",
            load="course.recipes.clip_shapes:load_clip_shapes_from",
            evaluate="course.recipes.clip_shapes:evaluate_clip_shapes",
        ),
        ModelCard(
            "sd1-shapes", "04",
            "mini Stable Diffusion 1.x: U-Net on vae-shapes latents, cross-attention to clip-shapes text, CFG",
            train="course.recipes.sd1_shapes:train_sd1_shapes",
            load="course.recipes.sd1_shapes:load_sd1_shapes_from",
            evaluate="course.recipes.sd1_shapes:evaluate_sd1_shapes",
            pipeline="course.recipes.sd1_shapes:sd1_shapes_pipeline",
            storage_dtype="float16",
        ),
        ModelCard(
            "ddpm-brightness", "05",
            "pixel DDPM on dark/light 32x32 Shapes, SD's schedule, plain noise: the offset-noise study's baseline",
            train="course.recipes.offset_noise:train_brightness",
            load="course.recipes.offset_noise:load_brightness",
            evaluate="course.recipes.offset_noise:evaluate_brightness",
        ),
        ModelCard(
            "ddpm-brightness-offset", "05",
            "ddpm-brightness trained with offset noise 0.05 (SDXL), otherwise identical",
            train="course.recipes.offset_noise:train_brightness_offset",
            load="course.recipes.offset_noise:load_brightness",
            evaluate="course.recipes.offset_noise:evaluate_brightness",
        ),
        ModelCard(
            "sdxl-shapes", "05",
            "mini SDXL: size/crop micro-conditioning, two text encoders, buckets, offset noise (v-prediction U-Net)",
            train="course.recipes.sdxl_shapes:train_sdxl_shapes",
            load="course.recipes.sdxl_shapes:load_sdxl_shapes_from",
            evaluate="course.recipes.sdxl_shapes:evaluate_sdxl_shapes",
            pipeline="course.recipes.sdxl_shapes:sdxl_shapes_pipeline",
            storage_dtype="float16",
        ),
        ModelCard(
            "sdxl-shapes-no-micro", "05",
            "the sdxl-shapes ablation: same data and steps, never told the size or crop (time ids zero)",
            train="course.recipes.sdxl_shapes:train_sdxl_shapes_no_micro",
            load="course.recipes.sdxl_shapes:load_sdxl_shapes_from",
            evaluate="course.recipes.sdxl_shapes:evaluate_sdxl_shapes_no_micro",
            pipeline="course.recipes.sdxl_shapes:sdxl_shapes_pipeline",
            storage_dtype="float16",
        ),
        ModelCard(
            "sdxl-shapes-refiner", "05",
            "SDXL's refiner in miniature: trained on plain images at t < 200 only, applied as SDEdit to sdxl-shapes",
            train="course.recipes.sdxl_shapes:train_sdxl_shapes_refiner",
            load="course.recipes.sdxl_shapes:load_sdxl_shapes_from",
            evaluate="course.recipes.sdxl_shapes:evaluate_sdxl_shapes_refiner",
            pipeline="course.recipes.sdxl_shapes:sdxl_shapes_pipeline",
            storage_dtype="float16",
        ),
        ModelCard(
            "dit-shapes", "06",
            "class-conditional DiT (adaLN-Zero, learned sigma) on vae-shapes latents: 18 classes 'a {colour} {shape}'",
            train="course.recipes.dit_shapes:train_dit_shapes",
            load="course.recipes.dit_shapes:load_dit_shapes_from",
            evaluate="course.recipes.dit_shapes:evaluate_dit_shapes",
            pipeline="course.recipes.dit_shapes:dit_shapes_pipeline",
            storage_dtype="float16",
        ),
        ModelCard(
            "flow-shapes", "07",
            "dit-shapes' network, data and steps trained with rectified flow (velocity, uniform t): Euler in few steps",
            train="course.recipes.flow_shapes:train_flow_shapes",
            load="course.recipes.flow_shapes:load_flow_shapes_from",
            evaluate="course.recipes.flow_shapes:evaluate_flow_shapes",
            pipeline="course.recipes.flow_shapes:flow_shapes_pipeline",
            storage_dtype="float16",
        ),
        ModelCard(
            "flow-shapes-reflow", "07",
            "flow-shapes after one reflow (2-rectified flow on its own noise -> sample pairs): 1-2 Euler steps, no CFG",
            train="course.recipes.flow_shapes:train_flow_shapes_reflow",
            load="course.recipes.flow_shapes:load_flow_shapes_from",
            evaluate="course.recipes.flow_shapes:evaluate_flow_shapes_reflow",
            pipeline="course.recipes.flow_shapes:flow_shapes_pipeline",
            storage_dtype="float16",
        ),
        ModelCard(
            "sd3-shapes", "09",
            "mini SD3: MM-DiT with three text streams (two mini-CLIPs + MiniLM), rectified flow, Euler + CFG",
            train="course.recipes.sd3_shapes:train_sd3_shapes",
            load="course.recipes.sd3_shapes:load_sd3_shapes_from",
            evaluate="course.recipes.sd3_shapes:evaluate_sd3_shapes",
            pipeline="course.recipes.sd3_shapes:sd3_shapes_pipeline",
            storage_dtype="float16",
        ),
    )
}


def card(name: str) -> ModelCard:
    """The ModelCard for `name`; an unknown name gets an error listing the known ones."""
    if name not in MODELS:
        known = "\n".join(f"  {c.name:<20} (chapter {c.chapter}) {c.summary}" for c in MODELS.values())
        raise KeyError(f"unknown model {name!r}. Known models:\n{known}")
    return MODELS[name]


def resolve(target: str) -> Callable:
    """Import "module:function" and return the function."""
    module_name, fn_name = target.split(":")
    return getattr(importlib.import_module(module_name), fn_name)
