"""Chapter 01's model: the recipe, the pipeline, the FID table, the toy helpers, the exercise checks."""

import dataclasses

import numpy as np
import pytest
import torch

from course import checkpoints, cli, zoo
from course.diffusion import ddpm
from course.exercises import ch01, runner
from course.nn.unet import UNet
from course.pipelines import base
from course.recipes import classifiers, toy_2d
from course.recipes import ddpm_fashion as F
from course.world.classifiers import FASHION_CLASSIFIER, FeatureClassifier

TINY = dataclasses.replace(F.UNET_CONFIG, block_out_channels=(8, 8), down_block_types=F.UNET_CONFIG.down_block_types[:2],
                           up_block_types=F.UNET_CONFIG.up_block_types[:2])
SMALL_T = ddpm.Schedule(num_train_timesteps=20, beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return UNet(TINY).eval()


def test_recipe_model_size_and_shapes():
    model = UNet(F.UNET_CONFIG)
    n = sum(p.numel() for p in model.parameters())
    assert 0.4e6 < n < 1.2e6, n  # a few MB shipped
    x = torch.randn(2, 1, 32, 32)
    assert model(x, torch.tensor([0, 999])).shape == (2, 1, 32, 32)
    assert F.train_config().steps == F.TRAIN_STEPS and F.SCHEDULE.beta_schedule == "squaredcos_cap_v2"


def test_fashion_batch_and_loss(tiny):
    g = torch.Generator().manual_seed(0)
    x0 = F.fashion_batch(0, 8, g)
    assert x0.shape == (8, 1, 32, 32) and x0.min() >= -1 and x0.max() <= 1
    assert (x0[:, :, :2] == -1).all()  # the 2-pixel padding is background
    for prediction in ("epsilon", "v_prediction"):
        loss = F.make_loss(SMALL_T, prediction)(tiny, x0, torch.Generator().manual_seed(1))
        assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="prediction"):
        F.make_loss(SMALL_T, "x0")


def test_pipeline_contract(tiny):
    pipe = F.DDPMFashionPipeline(tiny, SMALL_T)
    images = pipe.generate(["", "", ""], steps=4, seed=3)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert (images[..., 0] == images[..., 2]).all()  # grey, repeated
    assert np.array_equal(images, pipe.generate([""] * 3, steps=4, seed=3))  # deterministic
    assert not np.array_equal(images, pipe.generate([""] * 3, steps=4, seed=4))
    assert pipe.generate([""], steps=20, method="ddpm").shape == (1, 32, 32, 3)
    with pytest.raises(ValueError, match="unconditional"):
        pipe.generate(["a shoe"], steps=4)
    with pytest.raises(ValueError, match="guidance=1"):
        pipe.generate([""], steps=4, guidance=3.0)
    with pytest.raises(ValueError, match="steps must be in 1 ... 20"):
        pipe.generate([""], steps=21)
    with pytest.raises(ValueError, match="method"):
        pipe.generate([""], steps=4, method="euler")


def test_checkpoint_round_trip_through_zoo_pipeline_and_cli(tiny, tmp_path):
    path = tmp_path / "ddpm.safetensors"
    config = F.model_config(TINY, SMALL_T)
    checkpoints.export(path, {k: v.contiguous() for k, v in tiny.state_dict().items()}, config=config,
                       command="test", wall_time_s=0.0, metrics={})
    pipe = base.load("ddpm-fashion", checkpoint=path)
    expected = F.DDPMFashionPipeline(tiny, SMALL_T).generate([""] * 2, steps=3, seed=0)
    assert np.array_equal(pipe.generate([""] * 2, steps=3, seed=0), expected)
    out = tmp_path / "out"
    assert cli.main(["generate", "--model", "ddpm-fashion", "--checkpoint", str(path), "--num", "2",
                     "--steps", "3", "--out", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 2
    assert cli.main(["generate", "--model", "ddpm-fashion", "--checkpoint", str(path), "--prompt", "a shoe",
                     "--out", str(out)]) == 2  # a clear error, not a traceback
    # the loaded model carries the schedule it was trained with (an eps one here, not the recipe's v one),
    # and every sampler of the recipe reads it when no schedule is given
    assert pipe.model.schedule == SMALL_T != F.SCHEDULE
    assert np.array_equal(F.steps_figure(pipe.model, 2, n=4), F.steps_figure(tiny, 2, n=4, schedule=SMALL_T))
    assert not np.array_equal(F.steps_figure(pipe.model, 2, n=4),
                              F.steps_figure(pipe.model, 2, n=4, schedule=dataclasses.replace(SMALL_T, prediction_type="v_prediction")))


def test_zoo_cards():
    assert zoo.card("ddpm-fashion").chapter == "01" and zoo.card("ddpm-fashion").pipeline
    assert zoo.card("fashion-classifier").pipeline is None
    assert "ddpm-fashion" in base.generators()


def test_fid_table_keys_and_floor(tiny):
    classifier = FeatureClassifier(FASHION_CLASSIFIER).eval()
    table = F.fid_table(tiny, 128, (("ddim", 2),), schedule=SMALL_T, classifier=classifier)
    assert set(table) == {"fid_floor", "fid_ddim_2", "fid_n"} and table["fid_n"] == 128
    assert 0 <= table["fid_floor"] < table["fid_ddim_2"]  # noise from an untrained net is far from real images
    with pytest.raises(ValueError, match="test set has 10000"):
        F.real_images(10, offset=9995)


def test_recipe_predicts_v_and_the_loss_follows_the_schedule(tiny):
    assert F.SCHEDULE.prediction_type == "v_prediction" and F.SCHEDULE.timestep_spacing == "trailing"
    x0 = F.fashion_batch(0, 4, torch.Generator().manual_seed(0))
    v_sched = dataclasses.replace(SMALL_T, prediction_type="v_prediction")
    default = F.make_loss(v_sched)(tiny, x0, torch.Generator().manual_seed(1))
    assert torch.equal(default, F.make_loss(v_sched, "v_prediction")(tiny, x0, torch.Generator().manual_seed(1)))
    assert not torch.equal(default, F.make_loss(v_sched, "epsilon")(tiny, x0, torch.Generator().manual_seed(1)))


def test_table_rows_and_sampler_variants(tiny):
    assert F.row_key("ddpm", 1000) == "fid_ddpm_1000" and F.row_key("ddim", 50, "eta1") == "fid_ddim_eta1_50"
    assert F.EVAL_ROWS[-1] == ("ddpm", 1000, "") and F.EVAL_N >= 512
    assert {("ddim", s, "eta1") for s in (25, 50, 100)} <= set(F.EVAL_ROWS)
    clipped = dataclasses.replace(SMALL_T, clip_sample_range=0.05)  # an untrained net's x0_hat leaves +-0.05: clipping acts
    rows = {v: F.sample_row(tiny, 4, "ddim", 5, v, schedule=clipped, seed=0) for v in F.VARIANTS}
    for v in ("eta1", "clipped_eps", "leading", "noclip"):
        assert (rows[v] - rows[""]).abs().max() > 1e-4, v
    assert rows["noclip"].abs().max() > 0.05 >= rows[""].abs().max()  # unclipped x0_hat leaves the clip range
    torch.testing.assert_close(rows[""], F.generate_x0(tiny, 4, 5, "ddim", schedule=clipped, seed=0))
    with pytest.raises(ValueError, match="variant"):
        F.sample_row(tiny, 4, "ddim", 5, "eta2", schedule=SMALL_T)


def test_fid_table_resumes_from_its_cache(tiny, tmp_path, monkeypatch):
    classifier = FeatureClassifier(FASHION_CLASSIFIER).eval()
    cache = tmp_path / "rows.json"
    first = F.fid_table(tiny, 128, (("ddim", 2, ""), ("ddim", 2, "eta1")), schedule=SMALL_T, classifier=classifier, cache=cache)
    assert set(first) == {"fid_floor", "fid_ddim_2", "fid_ddim_eta1_2", "fid_n"}

    def no_sampling(*args, **kwargs):
        raise AssertionError("a cached row was sampled again")

    monkeypatch.setattr(F, "sample_row", no_sampling)
    assert F.fid_table(tiny, 128, (("ddim", 2, ""), ("ddim", 2, "eta1")), schedule=SMALL_T, classifier=classifier,
                       cache=cache) == first
    other = UNet(TINY).eval()  # other weights: the cache does not apply
    with pytest.raises(AssertionError, match="sampled again"):
        F.fid_table(other, 128, (("ddim", 2, ""),), schedule=SMALL_T, classifier=classifier, cache=cache)


def test_pipeline_default_steps(tiny):
    pipe = F.DDPMFashionPipeline(tiny, SMALL_T, steps=4)
    assert (pipe.default_steps, pipe.default_guidance) == (4, 1.0)
    assert np.array_equal(pipe.generate([""] * 2, seed=1), pipe.generate([""] * 2, steps=4, guidance=1.0, seed=1))
    assert not np.array_equal(pipe.generate([""] * 2, seed=1), pipe.generate([""] * 2, steps=3, seed=1))
    assert F.ddpm_fashion_pipeline(tiny, F.model_config(TINY, SMALL_T)).default_steps == F.SAMPLE_STEPS == 50


def test_pipeline_default_eta_is_the_recommended_one_and_an_explicit_eta_wins(tiny):
    pipe = F.DDPMFashionPipeline(tiny, SMALL_T, steps=4)
    assert pipe.default_eta == F.SAMPLE_ETA == 1.0
    assert np.array_equal(pipe.generate([""] * 2, seed=1), pipe.generate([""] * 2, eta=1.0, seed=1))
    assert not np.array_equal(pipe.generate([""] * 2, seed=1), pipe.generate([""] * 2, eta=0.0, seed=1))
    old = {k: v for k, v in F.model_config(TINY, SMALL_T).items() if k != "sample_eta"}
    assert F.ddpm_fashion_pipeline(tiny, old).default_eta == 0.0  # a config from before the key samples as it did
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="eta"):
            pipe.generate([""], eta=bad)


def test_trajectories_end_where_sample_ends():
    model_fn = lambda x, t: 0.3 * x  # noqa: E731 - any deterministic eps_theta will do
    x_T = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    traj = toy_2d.trajectories(model_fn, x_T, SMALL_T, 7, "ddim")
    assert traj.shape == (8, 5, 2) and torch.equal(traj[0], x_T)
    torch.testing.assert_close(traj[-1], ddpm.sample(model_fn, None, SMALL_T, 7, "ddim", x_T=x_T))


def test_score_field_of_a_gaussian_is_minus_x():
    # data N(0, I) stays N(0, I) under the VP forward process; its ideal eps_theta is sqrt(1 - ab_t) xt
    schedule = ddpm.SCHEDULES["cosine"]
    t = 400
    model_fn = lambda x, tt: (1 - schedule.alpha_bar[tt[0]]) ** 0.5 * x  # noqa: E731
    grid, score = toy_2d.score_field(model_fn, t, schedule, n=5)
    assert grid.shape == (25, 2)
    torch.testing.assert_close(score, -grid)


def test_train_toy_learns():
    points = np.random.default_rng(0).normal(size=(512, 2)).astype(np.float32)
    _, losses = toy_2d.train_toy(points, SMALL_T, steps=100, batch_size=64, lr=1e-2)
    assert np.mean(losses[-30:]) < np.mean(losses[:30])


def test_forward_process_figure_and_steps_figure(tiny):
    from matplotlib.figure import Figure

    assert isinstance(F.forward_process_figure(100, "linear", n=2), Figure)
    with pytest.raises(ValueError, match="unknown schedule"):
        F.forward_process_figure(100, "exponential")
    image = F.steps_figure(tiny, 2, n=4, schedule=SMALL_T)
    assert image.shape == (64, 64) and image.dtype == np.uint8


def test_fashion_classifier_batch():
    g = torch.Generator().manual_seed(0)
    x, y = classifiers.fashion_batch(0, 16, g)
    assert x.shape == (16, 1, 32, 32) and y.shape == (16,) and y.dtype == torch.int64
    model = FeatureClassifier(FASHION_CLASSIFIER)
    assert model.features(x).shape == (16, 64)
    assert classifiers.cross_entropy_loss(model, (x, y), g).ndim == 0


# --- exercise checks: pass the solution, fail a stub and a typical mistake ---------------------


def _stub(*args, **kwargs):
    raise NotImplementedError(runner.STUB_MESSAGE)


def test_check_q_sample():
    assert ch01.check_q_sample(ddpm.q_sample)
    with pytest.raises(runner.ExerciseFailed, match="NotImplementedError"):
        ch01.check_q_sample(_stub)

    def no_sqrt(x0, t, eps, alpha_bar):  # the classic slip: alpha_bar instead of its square root
        a = ddpm.gather(alpha_bar, t, x0)
        return a * x0 + (1 - a) * eps

    with pytest.raises(runner.ExerciseFailed, match="square roots"):
        ch01.check_q_sample(no_sqrt)


def _ddim(eps, t, xt, alpha_bar, prev_t, eta=0.0, noise=None, wrap_last=False):
    ab_t = alpha_bar[t]
    ab_prev = alpha_bar[prev_t] if (prev_t >= 0 or wrap_last) else torch.tensor(1.0)
    x0 = (xt - (1 - ab_t) ** 0.5 * eps) / ab_t**0.5
    sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)) ** 0.5
    x_prev = ab_prev**0.5 * x0 + (1 - ab_prev - sigma**2) ** 0.5 * eps
    return x_prev + sigma * noise if eta > 0 else x_prev


def test_check_ddim_step():
    assert ch01.check_ddim_step(_ddim)
    with pytest.raises(runner.ExerciseFailed, match="NotImplementedError"):
        ch01.check_ddim_step(_stub)
    with pytest.raises(runner.ExerciseFailed, match="prev_t = -1"):  # alpha_bar[-1] is the noisiest, not 1
        ch01.check_ddim_step(lambda *a, **k: _ddim(*a, **k, wrap_last=True))

    def no_noise(eps, t, xt, alpha_bar, prev_t, eta=0.0, noise=None):  # forgets sigma entirely
        return _ddim(eps, t, xt, alpha_bar, prev_t)

    with pytest.raises(runner.ExerciseFailed, match="eta = 0.5"):
        ch01.check_ddim_step(no_noise)
