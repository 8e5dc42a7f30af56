"""course.recipes.flow_toys: the 2-D flows, the sliced Wasserstein distance, CFM = FM in gradient."""

import numpy as np
import pytest
import torch

from course.recipes import flow_toys as ft
from course.world.toys import toy_2d


def test_sliced_wasserstein_is_zero_on_equal_sets_and_grows_with_a_shift():
    a = toy_2d("moons", 2000, seed=0)
    assert ft.sliced_wasserstein(a, a) == pytest.approx(0.0, abs=1e-12)
    floor = ft.sw_floor("moons", 2000)
    assert 0 < floor < 0.15
    assert ft.sliced_wasserstein(a + np.float32(0.5), toy_2d("moons", 2000, seed=1)) > 3 * floor
    with pytest.raises(ValueError, match="same shape"):
        ft.sliced_wasserstein(a, a[:10])
    with pytest.raises(ValueError, match="non-finite"):
        ft.sliced_wasserstein(np.full_like(a, np.nan), a)


def test_cfm_and_fm_gradients_agree_up_to_monte_carlo_noise_and_a_wrong_target_does_not():
    torch.manual_seed(0)
    model = ft.ToyVelocity(hidden=32)
    small, big = ft.cfm_fm_gradients(model, n=20_000, seed=0), ft.cfm_fm_gradients(model, n=320_000, seed=0)
    assert big["relative_diff"] < small["relative_diff"] / 2  # shrinks as 1 / sqrt(n)
    assert big["relative_diff"] < 0.1
    assert big["cfm_loss"] > big["fm_loss"] + 0.5  # the losses differ by the conditional variance, a constant


def test_toy_flow_learns_moons_and_one_reflow_straightens_it():
    points = toy_2d("moons", 8000)
    run = ft.train_toy_flow(points, "ot", steps=600, seed=0)
    assert np.mean(run.losses[-50:]) < np.mean(run.losses[:50])
    table = ft.quality_table(run.model, "moons", n=1024, steps=(1, 32))
    assert table["sw_32"] < table["sw_1"]
    reflowed, nfe = ft.reflow_toy(run, n_pairs=4000, pair_steps=32, steps=300)
    after = ft.quality_table(reflowed.model, "moons", n=1024, steps=(1, 32))
    assert nfe == 4000 * 32
    assert after["straightness"] < table["straightness"] / 2
    assert after["sw_1"] < table["sw_1"] / 2


def test_reflow_needs_the_straight_path():
    with pytest.raises(ValueError, match="path='ot'"):
        ft.train_toy_flow(None, "vp", steps=1, couplings=(torch.zeros(4, 2), torch.zeros(4, 2)))
