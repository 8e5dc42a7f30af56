"""The notebooks' setup cell and the PNG writer behind `python -m course generate`."""

import numpy as np
import pytest
import torch
from PIL import Image

from course import runtime
from course.pipelines import base


def test_seed_everything_repeats_draws():
    runtime.seed_everything(3)
    a = (torch.randn(4), np.random.rand(4))
    runtime.seed_everything(3)
    b = (torch.randn(4), np.random.rand(4))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_device_can_be_forced(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert runtime.pick_device() == torch.device("cpu")
    assert runtime.setup(seed=0, quiet=True) == torch.device("cpu")


def test_save_images_writes_pngs(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    paths = base.save_images(images, tmp_path / "out", prefix="x")
    assert [p.name for p in paths] == ["x-0000.png", "x-0001.png", "x-0002.png"]
    assert np.array_equal(np.asarray(Image.open(paths[1])), images[1])
    with pytest.raises(ValueError, match="uint8"):
        base.save_images(images.astype(np.float32), tmp_path)
