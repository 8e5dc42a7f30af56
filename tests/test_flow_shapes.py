"""course.recipes.flow_shapes: the rectified-flow DiT's loss, training, sampler, loader and pipeline."""

import dataclasses

import pytest
import torch

from course.nn.dit import DiT
from course.recipes import flow_shapes as fs

TINY = dataclasses.replace(fs.FLOW_SHAPES, hidden_size=32, depth=1, num_heads=2)


def _bank(n=64):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 18, (n,), generator=g), torch.randn(n, 4, 8, 8, generator=g)


@pytest.mark.parametrize("path", ["ot", "vp"])
def test_flow_training_lowers_the_loss(path, tmp_path):
    result, _ = fs.train_flow(TINY, 40, tmp_path, path=path, bank=_bank(), batch_size=16, lr=3e-3)
    assert result.step == 40
    assert torch.isfinite(torch.tensor(result.losses)).all()
    if path == "ot":  # the VP target's variance diverges as t -> 0 (db/dt ~ 1/sqrt(t)): its loss is too noisy to rank
        assert sum(result.losses[-10:]) < sum(result.losses[:10])


def test_the_loss_targets_the_velocity_on_the_chosen_path():
    torch.manual_seed(0)
    model = DiT(TINY).eval()
    labels, x0 = _bank(8)
    eps = torch.randn_like(x0)
    loss = fs.make_flow_loss("ot", t_sampler=lambda B, g: torch.full((B,), 0.3), class_dropout=0.0)
    got = loss(model, (x0, labels, eps), torch.Generator().manual_seed(1))
    xt = 0.7 * x0 + 0.3 * eps
    expect = ((model(xt, torch.full((8,), 300.0), labels) - (eps - x0)) ** 2).mean()
    torch.testing.assert_close(got, expect)


def test_sampler_shapes_guidance_and_errors():
    torch.manual_seed(0)
    model = DiT(TINY).eval()
    labels = torch.arange(3)
    z = fs.sample_flow_latents(model, labels, steps=2, guidance=3.0)
    assert z.shape == (3, 4, 8, 8)
    again = fs.sample_flow_latents(model, labels, steps=2, guidance=3.0)
    torch.testing.assert_close(z, again)  # seeded
    with pytest.raises(ValueError, match="guidance"):
        fs.sample_flow_latents(model, labels, steps=2, guidance=float("nan"))
    with pytest.raises(ValueError, match="steps"):
        fs.sample_flow_latents(model, labels, steps=0)


def test_a_velocity_field_refuses_learned_sigma(tmp_path):
    with pytest.raises(ValueError, match="learn_sigma=False"):
        fs.train_flow(dataclasses.replace(TINY, learn_sigma=True), 1, tmp_path, bank=_bank())


def test_the_diffusers_grid_wastes_its_last_step():
    torch.manual_seed(0)
    model = DiT(TINY).eval()
    with torch.no_grad():  # adaLN-Zero starts as a zero velocity: give every weight a value
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    labels = torch.arange(2)
    one = fs.sample_flow_latents(model, labels, steps=1, guidance=1.0, grid="diffusers")
    two = fs.sample_flow_latents(model, labels, steps=2, guidance=1.0, grid="diffusers")
    two_uniform = fs.sample_flow_latents(model, labels, steps=2, guidance=1.0, grid="uniform")
    assert (one - two).abs().max() < 0.05 * one.abs().max()  # the second step runs from sigma 1/1000 to 0
    assert (one - two_uniform).abs().max() > 0.05 * one.abs().max()
    with pytest.raises(ValueError, match="grid"):
        fs.sample_flow_latents(model, labels, steps=2, grid="karras")


def test_the_ablation_summary_reads_every_row_and_floor():
    from course.recipes import flow_ablations as A

    row = lambda f: {"fid": f, "fid_floor": 0.5, "class_accuracy": 0.9, "n": 512}  # noqa: E731
    results = {"rf_euler_1": row(100.0), "rf_euler_8": row(2.0), "dit_ddim_50": row(7.0), "vp_euler_8": row(3.0),
               "reflow_euler_1": row(9.0), "rf_straightness": {"straightness": 1.2},
               "reflow_straightness": {"straightness": 0.1}, "toy_moons_ot": {"sw_1": 1.0}}
    s = A.summary(results)
    assert s["rf_euler"] == {"1": {"fid": 100.0, "class_accuracy": 0.9}, "8": {"fid": 2.0, "class_accuracy": 0.9}}
    assert set(s["dit_ddim"]) == {"50"} and set(s["vp_euler"]) == {"8"} and set(s["reflow_euler"]) == {"1"}
    assert s["straightness"] == {"rf": 1.2, "reflow": 0.1}
    assert s["toys"] == {"moons_ot": {"sw_1": 1.0}} and s["fid_floor"] == [0.5]
