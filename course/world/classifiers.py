"""Small feature classifiers: their penultimate features give the course's FID.

FID (Heusel et al. 2017) compares Gaussians fitted to an image network's features; the
original uses Inception-v3, trained on ImageNet. The course's images are not ImageNet photos,
so it trains a small CNN on its own data instead (`shapes-classifier` on Shapes; chapter 01 adds
one for Fashion-MNIST) and ships it as a checkpoint. A feature space is only as good as what the
classifier had to tell apart, so the Shapes classifier predicts every attribute the generators
are asked for: which colour sits on which shape, which cells are occupied, and how many objects.

This module holds the network and the loaders of the shipped classifiers, which
`course.world.metrics` uses; their training recipes are in `course.recipes.classifiers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from course.world import shapes


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
        self.to_features = nn.Linear(4 * c * shapes.GRID**2, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, feature_dim)."""
        size = self.config.image_size
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        h = F.adaptive_avg_pool2d(self.body(x), shapes.GRID).flatten(1)  # (B, 4c·3·3): one average per grid cell keeps where things are
        return F.silu(self.to_features(h))  # (B, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, num_outputs)


# ----------------------------------------------------------------------------- training recipe

SHAPES_CLASSIFIER = ClassifierConfig()


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


# ----------------------------------------------------------------------------- Fashion-MNIST classifier
# The feature space of chapter 01's FID. 64 features (not 128) so that FID's covariance is usable
# from 128 images on (`metrics.fid` asks for twice the feature size): the notebook can afford a
# few hundred samples, not the tens of thousands an Inception FID wants.

FASHION_CLASSIFIER = ClassifierConfig(in_channels=1, image_size=32, width=32, feature_dim=64, num_outputs=10)


def load_fashion_classifier_from(tensors: dict[str, torch.Tensor], config: dict) -> FeatureClassifier:
    return load_classifier_from(tensors, config, source="fashion-classifier")


def load_fashion_classifier(checkpoint: str | Path | None = None) -> FeatureClassifier:
    """The shipped Fashion-MNIST classifier (or one from `checkpoint`), hash-verified, in eval mode."""
    return load_classifier("fashion-classifier", checkpoint)
