"""Chapters 00 and 01: the recipes of the feature classifiers behind Shapes-FID and the Fashion-MNIST FID.

The network and its loaders are `course.world.classifiers`. `shapes-classifier` learns every
attribute a generator is asked for (colour x shape, occupied cells, count) from augmented
Shapes images; `fashion-classifier` learns the 10 Fashion-MNIST classes. Both fit the feature
scale that makes their FID features unit-variance.

Reproduce the shipped weights with `python -m course train shapes-classifier --ship` (and
`fashion-classifier`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from course.world import shapes
from course.world.classifiers import FASHION_CLASSIFIER, SHAPES_CLASSIFIER, ClassifierConfig, FeatureClassifier
from course.zoo import Trained


def shapes_targets(scenes: list[shapes.Scene]) -> torch.Tensor:
    """Multi-label targets (B, 28): colour×shape presence (18), cell occupancy (9), two objects (1)."""
    colors, n_shapes = list(shapes.PALETTE), len(shapes.SHAPES)
    y = torch.zeros(len(scenes), len(colors) * n_shapes + len(shapes.POSITIONS) + 1)
    for i, scene in enumerate(scenes):
        for o in scene.objects:
            y[i, colors.index(o.color) * n_shapes + shapes.SHAPES.index(o.shape)] = 1
            y[i, len(colors) * n_shapes + shapes.POSITIONS.index(o.position)] = 1
        y[i, -1] = float(len(scene.objects) == 2)
    return y


def exact_match_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of images whose every label is predicted right (logit > 0 iff target is 1)."""
    return float(((logits > 0).float() == targets).all(dim=1).float().mean())
SHAPES_CLASSIFIER_STEPS = 2000
HELD_OUT_SEED = 987_654  # scenes drawn from this seed are never used for training
FEATURE_SCALE_SEED = 555_555  # the real images that fix the FID feature scale


@torch.no_grad()
def fit_feature_scale(model: FeatureClassifier, images: np.ndarray) -> float:
    """sqrt of the features' mean variance over real images (uint8 (B, H, W, C)).

    FID adds up squared feature differences, so its value scales with the features' variance;
    dividing the features by this makes a feature's typical variance 1 and puts our FID on the
    familiar scale of published values (a few units for close distributions).
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, C, H, W)
    features = torch.cat([model.eval().features(x[i : i + 256]) for i in range(0, len(x), 256)]).double()
    return round(float(features.var(dim=0).mean().sqrt()), 6)


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random amount of 3×3 blur, so the features also behave on soft (generated) images."""
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)  # (B, 3, H, W)
    amount = torch.rand(x.shape[0], 1, 1, 1, generator=generator)
    return torch.lerp(x, blurred, amount)


def shapes_batch(step: int, batch_size: int, generator: torch.Generator):
    """A fresh batch of Shapes images (augmented) and their multi-label targets."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    scenes = shapes.sample_scenes(batch_size, seed)
    x = shapes.to_tensor(shapes.render_batch(scenes))
    return _augment(x, generator), shapes_targets(scenes)


def classifier_loss(model, batch, generator):
    x, y = batch
    return F.binary_cross_entropy_with_logits(model(x), y)


def train_shapes_classifier(steps: int | None, run_dir: Path, fresh: bool, progress: bool) -> Trained:
    """Train the Shapes classifier with the course's training loop."""
    from course.train import TrainConfig, fit, recipe_steps

    steps = recipe_steps(steps, SHAPES_CLASSIFIER_STEPS)
    torch.manual_seed(0)
    model = FeatureClassifier(SHAPES_CLASSIFIER)
    config = TrainConfig(
        steps=steps, batch_size=64, lr=2e-3, weight_decay=1e-4,
        warmup_steps=min(50, steps // 10), schedule="cosine", ema_decay=0.99, checkpoint_every=250, log_every=25,
    )
    result = fit(model, classifier_loss, shapes_batch, config, run_dir, resume=not fresh, progress=progress)
    model = result.ema if result.ema is not None else result.model
    real = shapes.render_batch(shapes.sample_scenes(2048, FEATURE_SCALE_SEED))
    fitted = ClassifierConfig(**{**asdict(SHAPES_CLASSIFIER), "feature_scale": fit_feature_scale(model, real)})
    return Trained(
        model=model, config=asdict(fitted),
        wall_time_s=result.wall_time_s, steps=result.step, interrupted=result.interrupted,
    )


@torch.no_grad()
def evaluate_shapes_classifier(model: FeatureClassifier, quick: bool = False) -> dict[str, float]:
    """Held-out exact-match accuracy (every label right), overall and by object count."""
    n = 512 if quick else 4096
    scenes = shapes.sample_scenes(n, HELD_OUT_SEED)
    logits = torch.cat([model(shapes.to_tensor(shapes.render_batch(scenes[i : i + 512]))) for i in range(0, n, 512)])
    targets = shapes_targets(scenes)
    two = targets[:, -1] == 1
    return {
        "held_out_accuracy": round(exact_match_accuracy(logits, targets), 4),
        "held_out_accuracy_one_object": round(exact_match_accuracy(logits[~two], targets[~two]), 4),
        "held_out_accuracy_two_objects": round(exact_match_accuracy(logits[two], targets[two]), 4),
        "held_out_images": n,
    }
FASHION_CLASSIFIER_STEPS = 1500


def _shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels (the padding is background, -1)."""
    B, _, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)  # (B, C, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, B), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + H, dx[i] : dx[i] + W] for i in range(B)])  # (B, C, H, W)


def fashion_batch(step: int, batch_size: int, generator: torch.Generator):
    """A random batch of Fashion-MNIST training images (shifted and blurred a little) and labels."""
    from course.world import fashion_mnist

    images, labels = fashion_mnist.load_fashion_mnist("train")
    idx = torch.randint(0, len(images), (batch_size,), generator=generator).numpy()
    x = fashion_mnist.to_tensor_32(images[idx])  # (B, 1, 32, 32)
    return _augment(_shift(x, generator), generator), torch.from_numpy(labels[idx])


def cross_entropy_loss(model, batch, generator):
    x, y = batch
    return F.cross_entropy(model(x), y)


def train_fashion_classifier(steps: int | None, run_dir: Path, fresh: bool, progress: bool) -> Trained:
    """Train the Fashion-MNIST classifier with the course's training loop."""
    from course.train import TrainConfig, fit, recipe_steps

    steps = recipe_steps(steps, FASHION_CLASSIFIER_STEPS)
    torch.manual_seed(0)
    model = FeatureClassifier(FASHION_CLASSIFIER)
    config = TrainConfig(steps=steps, batch_size=128, lr=2e-3, weight_decay=1e-4, warmup_steps=min(50, steps // 10),
                         schedule="cosine", ema_decay=0.99, checkpoint_every=250, log_every=25)
    result = fit(model, cross_entropy_loss, fashion_batch, config, run_dir, resume=not fresh, progress=progress)
    return Trained(
        model=result.ema if result.ema is not None else result.model, config=asdict(FASHION_CLASSIFIER),
        wall_time_s=result.wall_time_s, steps=result.step, interrupted=result.interrupted,
    )


@torch.no_grad()
def evaluate_fashion_classifier(model: FeatureClassifier, quick: bool = False) -> dict[str, float]:
    """Accuracy on the Fashion-MNIST test set (all 10,000 images; 2,000 when quick)."""
    from course.world import fashion_mnist

    images, labels = fashion_mnist.load_fashion_mnist("test")
    n = 2000 if quick else len(images)
    x = fashion_mnist.to_tensor_32(images[:n])
    logits = torch.cat([model(x[i : i + 500]) for i in range(0, n, 500)])
    return {"test_accuracy": round(float((logits.argmax(1) == torch.from_numpy(labels[:n])).float().mean()), 4),
            "test_images": n}
