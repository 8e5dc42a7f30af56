"""Chapter 05's offset-noise study: the noise, the data, the loss, the sampler and the shipped pair."""

import dataclasses

import numpy as np
import pytest
import torch

from course import checkpoints, zoo
from course.nn.unet import UNet
from course.recipes import offset_noise as O

TINY = dataclasses.replace(O.UNET_CONFIG, block_out_channels=(8, 8), down_block_types=O.UNET_CONFIG.down_block_types[:2],
                           up_block_types=O.UNET_CONFIG.up_block_types[:2])
NAMES = ("ddpm-brightness", "ddpm-brightness-offset")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return UNet(TINY).eval()


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("strength", [0.0, 0.05, 0.2])
def test_offset_noise_mean_has_the_right_std(strength):
    noise = O.offset_noise((4096, 3, 16, 16), strength, g(0))
    means = noise.mean(dim=(2, 3))  # (B, C): 12288 per-image, per-channel means
    expected = (1 / 256 + strength**2) ** 0.5  # 1/N from the pixels, s^2 from the offset
    assert abs(means.std().item() / expected - 1) < 0.03  # the std's standard error is ~0.6%
    assert abs(noise.var().item() / (1 + strength**2) - 1) < 0.01
    assert abs(means.mean().item()) < 3 * expected / 12288**0.5


def test_strength_zero_is_plain_gaussian_noise_and_the_offset_is_per_image_and_channel():
    shape = (4, 3, 8, 8)
    assert torch.equal(O.offset_noise(shape, 0.0, g(1)), torch.randn(shape, generator=g(1)))
    diff = O.offset_noise(shape, 0.5, g(1)) - O.offset_noise(shape, 0.0, g(1))  # the same eps, plus the offset
    assert diff.abs().min() > 0
    torch.testing.assert_close(diff, diff[:, :, :1, :1].expand(shape))  # constant over H, W
    assert diff[:, :, 0, 0].unique().numel() == 12  # a different offset for every (image, channel)


def test_data_brightness_is_bimodal_as_designed():
    images, dark = O.brightness_images(512, seed=0)
    assert images.shape == (512, 32, 32, 3) and images.dtype == np.uint8
    b = O.brightness(images)
    assert (b[dark] < O.DARK).all() and (b[~dark] > O.LIGHT).all()  # nothing in between
    assert 0.4 < dark.mean() < 0.6
    stats = O.brightness_stats(b)
    assert stats["share_between"] == 0.0 and stats["std"] > 0.35
    again, dark_again = O.brightness_images(512, seed=0)
    assert np.array_equal(images, again) and np.array_equal(dark, dark_again)
    assert not np.array_equal(dark, O.brightness_images(512, seed=1)[1])
    x0 = O.brightness_batch(0, 8, g(0))
    assert x0.shape == (8, 3, 32, 32) and x0.min() >= -1 and x0.max() <= 1


def test_brightness_stats_counts_the_shares():
    stats = O.brightness_stats(np.array([0.1, 0.2, 0.5, 0.9]))
    assert (stats["share_dark"], stats["share_between"], stats["share_light"]) == (0.5, 0.25, 0.25)
    assert stats["mean"] == 0.425


def test_mean_snr_explains_the_study():
    assert 2.0 < O.mean_snr() < 2.4  # 0.068 of the image's mean over noise means of std 1/32
    assert O.mean_snr(strength=O.SDXL_OFFSET) < 0.6 * O.mean_snr()  # offset noise drowns the mean
    assert O.mean_snr(pixels=64 * 64) == pytest.approx(2 * O.mean_snr())  # grows as sqrt(N) without offset


def test_loss_runs_and_decreases_on_a_tiny_model():
    torch.manual_seed(0)
    model = UNet(TINY)
    x0 = O.brightness_batch(0, 16, g(0))
    loss_fn = O.make_loss(O.SDXL_OFFSET)
    plain = O.make_loss(0.0)(model, x0, g(3))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = loss_fn(model, x0, g(3))  # the same t and noise each step
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert plain.ndim == 0 and losses[0] != plain.item()  # the offset changes the target
    assert losses[-1] < 0.7 * losses[0], losses


def test_sampler_output(tiny):
    images = O.generate(tiny, 3, seed=2, steps=3)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, O.generate(tiny, 3, seed=2, steps=3, batch_size=2))  # same x_T whatever the batching
    assert not np.array_equal(images, O.generate(tiny, 3, seed=4, steps=3))
    table = O.brightness_table({"data": O.brightness_images(4)[0], "tiny": images})
    assert table["tiny"]["n"] == 3 and set(table) == {"data", "tiny"}


def test_zoo_cards():
    cards = [zoo.card(name) for name in NAMES]
    assert all(c.chapter == "05" for c in cards)
    assert cards[0].load == cards[1].load and cards[0].evaluate == cards[1].evaluate
    for c in cards:
        for target in (c.train, c.load, c.evaluate):
            assert callable(zoo.resolve(target))


def _shipped(name):
    if name not in checkpoints.read_manifest():
        pytest.skip(f"{name} is not shipped yet: python -m course train {name} --ship")
    tensors, entry = checkpoints.load_checkpoint(name)
    return O.load_brightness(tensors, entry["config"]), entry


def test_figure():
    images = {"data": O.brightness_images(6)[0], "other": O.brightness_images(6, seed=1)[0]}
    fig = O.brightness_figure(images, n_show=4)
    assert len(fig.axes) == 1 + 2 * 4


def test_shipped_pair_differs_only_in_the_offset_and_the_offset_model_chooses_the_brightness():
    (plain, plain_entry), (offset, offset_entry) = _shipped(NAMES[0]), _shipped(NAMES[1])
    a, b = plain_entry["config"], offset_entry["config"]
    assert (a["offset_noise"], b["offset_noise"]) == (0.0, O.SDXL_OFFSET)
    assert {k: v for k, v in a.items() if k != "offset_noise"} == {k: v for k, v in b.items() if k != "offset_noise"}
    assert a["unet"]["norm_num_groups"] == O.UNET_CONFIG.norm_num_groups
    assert plain_entry["size_bytes"] < 3e6 and offset_entry["size_bytes"] < 3e6
    # What was measured (n = 512, DDIM-50 from the same x_T): without offset 95% of the samples are
    # in between dark and light (brightness std 0.14), with offset 0.05 5% (std 0.34; data: 0%, 0.39).
    grey = O.brightness_stats(O.brightness(O.generate(plain, 32)))
    assert grey["share_between"] > 0.7 and grey["std"] < 0.2, grey
    chosen = O.brightness_stats(O.brightness(O.generate(offset, 32)))
    assert chosen["share_between"] < 0.25 and chosen["std"] > 0.28, chosen
    # the plain model reads the brightness off x_T's mean: shifting it by +-0.06 gives dark / light images
    assert O.brightness(O.generate(plain, 16, mean_shift=-0.06)).mean() < O.DARK
    assert O.brightness(O.generate(plain, 16, mean_shift=0.06)).mean() > O.LIGHT
