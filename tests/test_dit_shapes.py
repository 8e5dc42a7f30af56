"""Tests for course.recipes.dit_shapes and dit_ablations: classes, data, loss, sampler, pipeline, tables."""

import dataclasses

import numpy as np
import pytest
import torch

from course import cli, zoo
from course.diffusion import ddpm
from course.exercises import ch06
from course.nn import dit
from course.recipes import dit_ablations as A
from course.recipes import dit_shapes as R


def _tiny(**kw) -> dit.DiT:
    torch.manual_seed(0)
    return dit.DiT(dit.DiTConfig(**(dict(input_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=2,
                                         num_classes=len(R.CLASSES)) | kw)))


def test_one_class_per_colour_and_shape_and_prompts_round_trip():
    assert len(R.CLASSES) == 18
    for label in range(18):
        assert R.class_of(R.class_prompt(label)) == label
    assert R.class_of("  A Red   Circle ") == R.class_of("a red circle")


@pytest.mark.parametrize("prompt", ["a red banana", "a large red circle in the center", "red circle", ""])
def test_a_class_model_refuses_other_prompts_and_lists_its_classes(prompt):
    with pytest.raises(ValueError, match='"a red circle", "a red square"'):
        R.class_of(prompt)


def test_the_loss_is_the_hybrid_loss_with_label_dropout_and_trains():
    from course.train import TrainConfig, fit

    g = torch.Generator().manual_seed(0)
    z0, y = torch.randn(256, 4, 8, 8, generator=g) * 0.5, torch.randint(0, 18, (256,), generator=g)
    model = _tiny()
    loss = R.make_loss()(model, (z0[:8], y[:8]), torch.Generator().manual_seed(1))
    assert loss.ndim == 0 and torch.isfinite(loss)
    result = fit(model, R.make_loss(), R.make_batch_fn(y, z0), TrainConfig(steps=60, batch_size=32, lr=3e-3,
                 ema_decay=None), progress=False)
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10])
    fixed = _tiny(learn_sigma=False)
    assert torch.isfinite(R.make_loss()(fixed, (z0[:8], y[:8]), torch.Generator().manual_seed(1)))


def test_the_sampler_guides_all_four_channels_and_refuses_bad_settings():
    model = _tiny()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    labels = torch.tensor([0, 5, 17])
    fn = R.guided_model_fn(model, labels, guidance=3.0)
    x, t = torch.randn(3, 4, 8, 8), torch.full((3,), 500)
    cond, uncond = model(x, t, labels), model(x, t, torch.full_like(labels, 18))
    torch.testing.assert_close(fn(x, t)[:, :4], uncond[:, :4] + 3.0 * (cond[:, :4] - uncond[:, :4]))
    torch.testing.assert_close(fn(x, t)[:, 4:], cond[:, 4:])  # the variance of the conditional branch
    z = R.sample_latents(model, labels, steps=5, guidance=2.0)
    assert z.shape == (3, 4, 8, 8) and torch.isfinite(z).all()
    for bad in (float("nan"), float("inf"), 1e30):
        with pytest.raises(ValueError, match="guidance"):
            R.sample_latents(model, labels, steps=5, guidance=bad)
    with pytest.raises(ValueError, match="no variance"):
        R.sample_latents(_tiny(learn_sigma=False), labels, steps=5)
    with pytest.raises(ValueError, match="variance must be"):
        R.sample_latents(model, labels, steps=5, variance="learned")


def test_the_sampler_raises_on_non_finite_latents():
    model = _tiny()
    with torch.no_grad():
        model.final_layer.linear.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite"):
        R.sample_latents(model, torch.tensor([0]), steps=3)


def test_real_one_object_images_are_balanced_classes():
    from course.world import metrics

    images = R.real_one_object(36)
    report = metrics.shapes_eval(images, [R.class_prompt(i) for i in R.balanced_labels(36).tolist()])
    assert report.full_match == 1.0


def test_the_exercises_accept_the_package_and_refuse_a_wrong_answer():
    assert ch06.check_patchify(dit.patchify)
    assert ch06.check_unpatchify(dit.unpatchify)
    assert ch06.check_adaln_zero_block(lambda block, x, c: block(x, c))
    from course.exercises.runner import ExerciseFailed

    with pytest.raises(ExerciseFailed):
        ch06.check_patchify(lambda x, p: x.reshape(x.shape[0], -1, p * p * x.shape[1]))  # the wrong order
    with pytest.raises(ExerciseFailed):
        ch06.check_adaln_zero_block(lambda block, x, c: x + block.attn(block.norm1(x)))  # no modulation


def test_the_ablation_tables_average_seeds_and_rank_by_fid():
    results = {}
    for cond, fid in zip(dit.CONDITIONINGS, (30.0, 25.0, 22.0, 20.0)):
        for seed in A.SEEDS:
            for s in A.ABLATION_STEPS:
                results[f"{cond}-s{seed}@{s}"] = {"fid": fid + seed + 1000 / s, "class_accuracy": 0.5, "fid_floor": 1.0,
                                                  "val_mse": 0.1, "probe_accuracy": 0.5,
                                                  "gflops": 0.01, "train_s": 1}
    table = A.conditioning_table(results)
    assert table["adaln-zero"]["by_steps"][2000]["fid"] == pytest.approx(20.0 + 0.5 + 1000 / 2000, abs=0.01)
    assert table["adaln-zero"]["by_steps"][2000]["fid_spread"] == 0.5
    assert A.ranking(table) == ["adaln-zero", "adaln", "cross-attention", "in-context"]
    assert table["cross-attention"]["gflops"] > table["adaln-zero"]["gflops"]


def test_dit_shapes_is_a_zoo_model_with_a_recipe():
    card = zoo.card("dit-shapes")
    assert card.chapter == "06" and card.storage_dtype == "float16"
    for target in (card.train, card.load, card.evaluate, card.pipeline):
        assert callable(zoo.resolve(target))
    assert dataclasses.asdict(R.DIT_SHAPES)["num_classes"] == 18
    with pytest.raises(ValueError, match="steps must be >= 1"):
        R.train_dit_shapes(0, None, False, False)


def _shipped() -> bool:
    from course import checkpoints

    return "dit-shapes" in checkpoints.read_manifest()


@pytest.mark.skipif(not _shipped(), reason="dit-shapes is not shipped yet: python -m course train dit-shapes --ship")
def test_the_shipped_pipeline_generates_class_prompts_and_the_cli_works(tmp_path):
    pipe = R.load()
    images = pipe.generate(["a red circle", "a blue square"], steps=5, guidance=2.0, seed=0)
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    assert pipe.default_steps == R.SAMPLE_STEPS and pipe.default_guidance == R.GUIDANCE
    with pytest.raises(ValueError, match="class prompts"):
        pipe.generate(["a red circle in the top left"])
    assert cli.main(["generate", "--model", "dit-shapes", "--prompt", "a red circle", "--num", "1", "--steps", "5",
                     "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("*.png"))) == 1
