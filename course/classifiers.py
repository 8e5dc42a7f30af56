"""Small feature classifiers: their penultimate features give the course's FID.

FID (Heusel et al. 2017) compares Gaussians fitted to an image network's features; the
original uses Inception-v3, trained on ImageNet. The course's images are not ImageNet photos,
so it trains a small CNN on its own data instead (`shapes-classifier` on Shapes; chapter 01 adds
one for Fashion-MNIST) and ships it as a checkpoint. A feature space is only as good as what the
classifier had to tell apart, so the Shapes classifier predicts every attribute the generators
are asked for: which colour sits on which shape, which cells are occupied, and how many objects.

Reproduce the shipped weights with `python -m course train shapes-classifier --ship`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from course import data
from course.zoo import Trained

@dataclass(frozen=True)
class ClassifierConfig:
    in_channels: int = 3  # 3 for Shapes, 1 for Fashion-MNIST
    image_size: int = 64  # inputs of another size are resized to this
    width: int = 32  # channels after the stem (doubled twice, each time after a stride-2 conv)
    feature_dim: int = 128  # size of the penultimate features that FID uses
    feature_scale: float = 1.0  # FID divides the features by this: their mean variance over real images becomes 1
    num_outputs: int = 28  # logits (Shapes: 18 colour×shape presence + 9 cell occupancy + 1 two-objects)


class FeatureClassifier(nn.Module):
    """A small CNN whose penultimate features serve FID, as Inception's pool features do."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        c = config.width
        layers = [nn.Conv2d(config.in_channels, c // 2, 3, padding=1, stride=2), nn.GroupNorm(8, c // 2), nn.SiLU()]
        cin = c // 2  # a strided stem: the images are simple, full resolution would waste compute
        for cout, stride in ((c, 1), (c, 2), (2 * c, 1), (2 * c, 2), (4 * c, 1)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, stride=stride), nn.GroupNorm(8, cout), nn.SiLU()]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.to_features = nn.Linear(4 * c * data.GRID**2, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, feature_dim)."""
        size = self.config.image_size
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        h = F.adaptive_avg_pool2d(self.body(x), data.GRID).flatten(1)  # (B, 4c·3·3): one average per grid cell keeps where things are
        return F.silu(self.to_features(h))  # (B, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, num_outputs)


def shapes_targets(scenes: list[data.Scene]) -> torch.Tensor:
    """Multi-label targets (B, 28): colour×shape presence (18), cell occupancy (9), two objects (1)."""
    colors, n_shapes = list(data.PALETTE), len(data.SHAPES)
    y = torch.zeros(len(scenes), len(colors) * n_shapes + len(data.POSITIONS) + 1)
    for i, scene in enumerate(scenes):
        for o in scene.objects:
            y[i, colors.index(o.color) * n_shapes + data.SHAPES.index(o.shape)] = 1
            y[i, len(colors) * n_shapes + data.POSITIONS.index(o.position)] = 1
        y[i, -1] = float(len(scene.objects) == 2)
    return y


def exact_match_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of images whose every label is predicted right (logit > 0 iff target is 1)."""
    return float(((logits > 0).float() == targets).all(dim=1).float().mean())


# ----------------------------------------------------------------------------- training recipe

SHAPES_CLASSIFIER = ClassifierConfig()
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
    scenes = data.sample_scenes(batch_size, seed)
    x = data.to_tensor(data.render_batch(scenes))
    return _augment(x, generator), shapes_targets(scenes)


def classifier_loss(model, batch, generator):
    x, y = batch
    return F.binary_cross_entropy_with_logits(model(x), y)


def train_shapes_classifier(steps: int | None, run_dir: Path, fresh: bool, progress: bool) -> Trained:
    """Train the Shapes classifier with the course's training loop."""
    from course.train import TrainConfig, fit

    torch.manual_seed(0)
    model = FeatureClassifier(SHAPES_CLASSIFIER)
    config = TrainConfig(
        steps=steps or SHAPES_CLASSIFIER_STEPS, batch_size=64, lr=2e-3, weight_decay=1e-4,
        warmup_steps=min(50, (steps or SHAPES_CLASSIFIER_STEPS) // 10), schedule="cosine", ema_decay=0.99, checkpoint_every=250, log_every=25,
    )
    result = fit(model, classifier_loss, shapes_batch, config, run_dir, resume=not fresh, progress=progress)
    model = result.ema if result.ema is not None else result.model
    real = data.render_batch(data.sample_scenes(2048, FEATURE_SCALE_SEED))
    fitted = ClassifierConfig(**{**asdict(SHAPES_CLASSIFIER), "feature_scale": fit_feature_scale(model, real)})
    return Trained(
        model=model, config=asdict(fitted),
        wall_time_s=result.wall_time_s, steps=result.step, interrupted=result.interrupted,
    )


def load_classifier_from(tensors: dict[str, torch.Tensor], config: dict, source: str = "classifier") -> FeatureClassifier:
    """A FeatureClassifier rebuilt from its config with these (already verified) weights, in eval mode."""
    from course import checkpoints

    model = FeatureClassifier(ClassifierConfig(**config))
    checkpoints.load_into(model, tensors, source=source)
    return model.eval()


def load_classifier(name: str, checkpoint: str | Path | None = None) -> FeatureClassifier:
    """The shipped classifier `name` (or the one in `checkpoint`), hash-verified, in eval mode."""
    from course import checkpoints

    tensors, entry = checkpoints.load_checkpoint(None if checkpoint else name, checkpoint)
    return load_classifier_from(tensors, entry["config"], source=str(checkpoint or name))


def load_shapes_classifier_from(tensors: dict[str, torch.Tensor], config: dict) -> FeatureClassifier:
    return load_classifier_from(tensors, config, source="shapes-classifier")


def load_shapes_classifier(checkpoint: str | Path | None = None) -> FeatureClassifier:
    """The shipped Shapes classifier (or one from `checkpoint`), hash-verified, in eval mode."""
    return load_classifier("shapes-classifier", checkpoint)


@torch.no_grad()
def evaluate_shapes_classifier(model: FeatureClassifier, quick: bool = False) -> dict[str, float]:
    """Held-out exact-match accuracy (every label right), overall and by object count."""
    n = 512 if quick else 4096
    scenes = data.sample_scenes(n, HELD_OUT_SEED)
    logits = torch.cat([model(data.to_tensor(data.render_batch(scenes[i : i + 512]))) for i in range(0, n, 512)])
    targets = shapes_targets(scenes)
    two = targets[:, -1] == 1
    return {
        "held_out_accuracy": round(exact_match_accuracy(logits, targets), 4),
        "held_out_accuracy_one_object": round(exact_match_accuracy(logits[~two], targets[~two]), 4),
        "held_out_accuracy_two_objects": round(exact_match_accuracy(logits[two], targets[two]), 4),
        "held_out_images": n,
    }


# ----------------------------------------------------------------------------- Fashion-MNIST classifier
# The feature space of chapter 01's FID. 64 features (not 128) so that FID's covariance is usable
# from 128 images on (`metrics.fid` asks for twice the feature size): the notebook can afford a
# few hundred samples, not the tens of thousands an Inception FID wants.

FASHION_CLASSIFIER = ClassifierConfig(in_channels=1, image_size=32, width=32, feature_dim=64, num_outputs=10)
FASHION_CLASSIFIER_STEPS = 1500


def _shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels (the padding is background, -1)."""
    B, _, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)  # (B, C, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, B), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + H, dx[i] : dx[i] + W] for i in range(B)])  # (B, C, H, W)


def fashion_batch(step: int, batch_size: int, generator: torch.Generator):
    """A random batch of Fashion-MNIST training images (shifted and blurred a little) and labels."""
    from course import fashion_mnist

    images, labels = fashion_mnist.load_fashion_mnist("train")
    idx = torch.randint(0, len(images), (batch_size,), generator=generator).numpy()
    x = fashion_mnist.to_tensor_32(images[idx])  # (B, 1, 32, 32)
    return _augment(_shift(x, generator), generator), torch.from_numpy(labels[idx])


def cross_entropy_loss(model, batch, generator):
    x, y = batch
    return F.cross_entropy(model(x), y)


def train_fashion_classifier(steps: int | None, run_dir: Path, fresh: bool, progress: bool) -> Trained:
    """Train the Fashion-MNIST classifier with the course's training loop."""
    from course.train import TrainConfig, fit

    torch.manual_seed(0)
    model = FeatureClassifier(FASHION_CLASSIFIER)
    steps = steps or FASHION_CLASSIFIER_STEPS
    config = TrainConfig(steps=steps, batch_size=128, lr=2e-3, weight_decay=1e-4, warmup_steps=min(50, steps // 10),
                         schedule="cosine", ema_decay=0.99, checkpoint_every=250, log_every=25)
    result = fit(model, cross_entropy_loss, fashion_batch, config, run_dir, resume=not fresh, progress=progress)
    return Trained(
        model=result.ema if result.ema is not None else result.model, config=asdict(FASHION_CLASSIFIER),
        wall_time_s=result.wall_time_s, steps=result.step, interrupted=result.interrupted,
    )


def load_fashion_classifier_from(tensors: dict[str, torch.Tensor], config: dict) -> FeatureClassifier:
    return load_classifier_from(tensors, config, source="fashion-classifier")


def load_fashion_classifier(checkpoint: str | Path | None = None) -> FeatureClassifier:
    """The shipped Fashion-MNIST classifier (or one from `checkpoint`), hash-verified, in eval mode."""
    return load_classifier("fashion-classifier", checkpoint)


@torch.no_grad()
def evaluate_fashion_classifier(model: FeatureClassifier, quick: bool = False) -> dict[str, float]:
    """Accuracy on the Fashion-MNIST test set (all 10,000 images; 2,000 when quick)."""
    from course import fashion_mnist

    images, labels = fashion_mnist.load_fashion_mnist("test")
    n = 2000 if quick else len(images)
    x = fashion_mnist.to_tensor_32(images[:n])
    logits = torch.cat([model(x[i : i + 500]) for i in range(0, n, 500)])
    return {"test_accuracy": round(float((logits.argmax(1) == torch.from_numpy(labels[:n])).float().mean()), 4),
            "test_images": n}
