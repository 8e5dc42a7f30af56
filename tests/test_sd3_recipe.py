"""Tests for chapter 08's recipes: course.recipes.timestep_ablation, resolution_shift and timestep_densities."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from course.diffusion import flow, timesteps
from course.nn import dit
from course.recipes import dit_shapes as R
from course.recipes import resolution_shift as S
from course.recipes import timestep_ablation as A
from course.world import shapes


def _tiny(**kw) -> dit.DiT:
    torch.manual_seed(0)
    return dit.DiT(dit.DiTConfig(**(dict(input_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=2,
                                         num_classes=len(R.CLASSES), learn_sigma=False) | kw)))


class _RecordT(nn.Module):
    """A stand-in denoiser (the loss is under test, not the network) that records the timesteps it is given."""

    def __init__(self):
        super().__init__()
        self.config = _tiny().config
        self.seen = []

    def forward(self, x, t, y):
        self.seen.append(t.detach().clone())
        return torch.zeros_like(x)


@pytest.mark.parametrize("formulation", A.FORMULATIONS)
def test_every_formulation_trains(formulation):
    from course.train import TrainConfig, fit

    g = torch.Generator().manual_seed(0)
    z0, y = torch.randn(256, 4, 8, 8, generator=g) * 0.5, torch.randint(0, 18, (256,), generator=g)
    model = _tiny()
    result = fit(model, A.make_loss(formulation), R.make_batch_fn(y, z0),
                 TrainConfig(steps=40, batch_size=32, lr=3e-3, ema_decay=None), progress=False)
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10])


@pytest.mark.parametrize("name,median", [("rf/lognorm(1.00, 0.60)", 1 / (1 + math.exp(-1))), ("rf/uniform", 0.5),
                                         ("rf/mode(1.29)", 0.5)])
def test_the_flow_loss_draws_t_from_its_sampler_and_feeds_the_dit_1000_t(name, median):
    model = _RecordT()
    loss = A.make_loss(name)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        loss(model, (torch.randn(500, 4, 8, 8), torch.zeros(500, dtype=torch.long)), g)
    t = torch.cat(model.seen) / 1000
    assert float(t.median()) == pytest.approx(median, abs=0.02)
    assert 0 < float(t.min()) and float(t.max()) < 1


def test_ddpm_baselines_see_integer_timesteps_and_unknown_formulations_are_refused():
    model = _RecordT()
    A.make_loss("v/cos")(model, (torch.randn(8, 4, 8, 8), torch.zeros(8, dtype=torch.long)), torch.Generator())
    assert model.seen[0].dtype == torch.long and int(model.seen[0].max()) < 1000
    with pytest.raises(ValueError, match="rf/lognorm"):
        A.make_loss("rf/normal")


@pytest.mark.parametrize("formulation", ["rf/uniform", "eps/linear", "v/cos"])
def test_samplers_give_finite_latents_of_the_model_shape(formulation):
    z = A.sample_latents(_tiny().eval(), formulation, torch.arange(4), steps=5)
    assert z.shape == (4, 4, 8, 8) and torch.isfinite(z).all()


def test_the_shift_is_for_flows_only():
    with pytest.raises(ValueError, match="flow"):
        A.sample_latents(_tiny().eval(), "eps/linear", torch.arange(2), steps=5, shift=3.0)


def test_nondominated_sorting_peels_pareto_fronts():
    points = {"a": (10.0, 0.5), "b": (20.0, 0.9), "c": (15.0, 0.4), "d": (30.0, 0.3), "e": (10.0, 0.5)}
    # a and e tie (neither dominates), b is on the front (best accuracy), c is dominated by a, d by everything
    assert A.nondominated_ranks(points) == {"a": 1, "b": 1, "e": 1, "c": 2, "d": 3}


def test_average_ranks_over_settings_and_seeds():
    def run(fid5, acc5, fid25, acc25):
        return {"eval": {"5": {"fid": fid5, "class_accuracy": acc5}, "25": {"fid": fid25, "class_accuracy": acc25}}}
    results = {A.run_key("rf/uniform", 0): run(10, 0.5, 10, 0.5), A.run_key("v/cos", 0): run(20, 0.4, 5, 0.6)}
    ranks = A.average_ranks(results, seeds=(0,))
    assert ranks == {"rf/uniform": 1.5, "v/cos": 1.5}  # 1 then 2, and 2 then 1
    results[A.run_key("eps/linear", 0)] = run(30, 0.1, 30, 0.1)
    assert A.average_ranks(results, seeds=(0,))["eps/linear"] == 3.0


def test_gaussian_linear_predictor_matches_its_closed_form_per_dimension():
    """Independent dims of variance s^2: the error is 1 + s^2 - (t - (1 - t) s^2)^2 / ((1 - t)^2 s^2 + t^2)."""
    g = torch.Generator().manual_seed(0)
    std = torch.tensor([0.5, 1.0, 2.0, 1.5])
    z0 = (torch.randn(200_000, 4, 1, 1, generator=g, dtype=torch.float64) * std[None, :, None, None]).float()
    t_values = (0.02, 0.3, 0.5, 0.8, 0.98)
    got = A.gaussian_velocity_mse(z0, t_values)
    s2 = std.double() ** 2
    for t, value in zip(t_values, got):
        exact = (1 + s2 - (t - (1 - t) * s2) ** 2 / ((1 - t) ** 2 * s2 + t**2)).mean()
        assert value == pytest.approx(float(exact), rel=0.02)


def test_per_t_loss_of_the_exact_velocity_is_zero_only_where_it_knows_it():
    """A 'model' that returns the true u = eps - x0 needs eps and x0: not available, so the loss is > 0; shapes agree."""
    model = _tiny().eval()
    val = (torch.arange(32) % 18, torch.randn(32, 4, 8, 8))
    for f in ("rf/uniform", "eps/linear", "v/cos"):
        loss = A.per_t_loss(model, f, val, t_values=(0.1, 0.5, 0.9), n=32)
        assert len(loss) == 3 and all(math.isfinite(x) and x > 0 for x in loss)


def test_ddpm_models_are_scored_on_the_flow_velocity():
    """An eps model that predicts the true eps gives v_hat = eps - x0 exactly: per-t loss 0 (the conversion is exact)."""
    z0 = torch.randn(16, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    sched = A.DDPM_BASELINES["eps/linear"]
    g = torch.Generator().manual_seed(0)
    eps_draws = [torch.randn(z0.shape, generator=g) for _ in range(2)]

    class Oracle(nn.Module):
        config = _tiny().config

        def __init__(self):
            super().__init__()
            self.k = 0

        def forward(self, xt, t, y):
            eps = eps_draws[self.k]
            self.k += 1
            return eps

    loss = A.per_t_loss(Oracle(), "eps/linear", (torch.zeros(16, dtype=torch.long), z0), t_values=(0.3, 0.7), n=16)
    assert max(loss) < 1e-8
    assert sched.prediction_type == "epsilon"


# ----------------------------------------------------------------------------- the resolution shift
def test_the_analytic_argument():
    assert S.ALPHA == 2.0 and S.SHIFTS == (1.0, 2.0, 3.0)
    np.testing.assert_allclose(S.coarse_snr([0.5, 0.8], 256) / S.coarse_snr([0.5, 0.8], 64), [2.0, 2.0])


def test_block_means_survive_longer_at_128_and_the_shift_matches_them():
    sc = S.scenes(32, 0)
    im64, im128 = shapes.render_batch(sc, 64), shapes.render_batch(sc, 128)
    c64, c128 = S.coarse_correlation(im64, 0.8), S.coarse_correlation(im128, 0.8)
    assert c128 > c64 + 0.1
    shifted = float(flow.shift_sigmas(torch.tensor(0.8, dtype=torch.float64), S.ALPHA))
    assert S.coarse_correlation(im128, shifted) == pytest.approx(c64, abs=0.03)


def test_pooling_and_downsampling():
    x = np.arange(2 * 4 * 4 * 3, dtype=np.float64).reshape(2, 4, 4, 3)
    p = S.pool(x, 2)
    assert p.shape == (2, 2, 2, 3) and p[0, 0, 0, 0] == x[0, :2, :2, 0].mean()
    im = shapes.render_batch(S.scenes(2, 0), 128)
    assert S.downsample(im).shape == (2, 64, 64, 3) and S.downsample(im).dtype == np.uint8


def test_vae_shapes_encodes_128_px_into_16x16_latents():
    codec, _ = R._frozen_codec()
    z = S.encode(codec, shapes.render_batch(S.scenes(2, 0), 128))
    assert z.shape == (2, 4, 16, 16)
    assert S.decode(codec, z).shape == (2, 128, 128, 3)


def test_a_fine_tune_starts_from_the_8x8_weights():
    """Every weight carries over to 16x16 latents; only the fixed sin-cos positions (a buffer) grow, 16 -> 64 tokens."""
    import dataclasses

    base = _tiny()
    model = dit.DiT(dataclasses.replace(base.config, input_size=16))
    model.load_state_dict(base.state_dict())  # strict: the same parameters
    for (name, a), (_, b) in zip(model.state_dict().items(), base.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)
    assert model.pos_embed.shape[1] == 64 and base.pos_embed.shape[1] == 16
    assert model(torch.randn(1, 4, 16, 16), torch.tensor([500.0]), torch.tensor([0])).shape == (1, 4, 16, 16)


# ----------------------------------------------------------------------------- figures
def test_density_figures_and_explorer_panels_draw():
    from course.recipes import timestep_densities as D

    assert len(D.density_figure(draws=1000).axes) == 4
    assert len(D.density_panel(0.5, 0.6).axes) == 2
    with pytest.raises(ValueError, match="scale"):
        timesteps.TimestepSampler("lognorm", 0.0, 0.0)


def test_shift_panel_draws_the_grid_and_one_image_per_step():
    fig = S.shift_panel(3.0, size=64, steps=4)
    assert len(fig.axes) == 1 + 4
    line = fig.axes[0].lines[0].get_ydata()
    np.testing.assert_allclose(line, flow.flow_sigmas(4, shift=3.0).numpy())


def test_the_flow_loss_is_the_cfm_loss_on_the_ot_path_with_the_sampler_s_t():
    """The same draws by hand: t from the sampler, eps, label dropout; xt = (1 - t) x0 + t eps, target eps - x0."""
    from course.nn.dit import drop_labels

    model = _tiny()
    z0, y = torch.randn(16, 4, 8, 8), torch.arange(16) % 18
    got = A.make_loss("rf/lognorm(0.50, 0.60)")(model, (z0, y), torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    t = timesteps.parse("lognorm(0.5, 0.6)").sample(16, g)
    eps = torch.randn(z0.shape, generator=g)
    y = drop_labels(y, R.CLASS_DROPOUT, 18, g)
    xt, u = flow.rf_path(z0, eps, t)
    assert torch.equal(got, ((model(xt, 1000 * t, y) - u) ** 2).mean())


def test_a_fresh_checkout_restores_single_seed_runs_from_the_record(tmp_path):
    import json

    def run(fid, acc):
        return {"eval": {str(s): {"fid": fid + s, "class_accuracy": acc, "fid_floor": 1.0} for s in A.EVAL_STEPS},
                "per_t": [0.3] * len(A.PER_T), "steps": A.STEPS, "seed": 0, "train_s": 100}

    results = {A.run_key("rf/uniform", 0): run(40.0, 0.1), A.run_key("rf/cosmap", 0): run(30.0, 0.2),
               A.run_key("rf/cosmap", 1): run(32.0, 0.2)}
    record = {"seeds_run": {"rf/uniform": [0], "rf/cosmap": [0, 1]}, "table": A.table(results),
              "per_t": {"by_formulation": {f: [0.3] * len(A.PER_T) for f in ("rf/uniform", "rf/cosmap")}, "early": None},
              "protocol": {"steps": A.STEPS}, "shift": {"table": {}}}
    path = tmp_path / "sd3_recipe.json"
    path.write_text(json.dumps(record))
    restored = {}
    keys = A.restore_from_record(restored, path)
    assert keys == [A.run_key("rf/uniform", 0), "shift"]  # a two-seed mean is not one run's numbers: not restored
    assert A.table(restored)["rf/uniform"] == record["table"]["rf/uniform"]
    assert A.restore_from_record(restored, path) == []  # what is there is kept
    assert A.restore_from_record({}, tmp_path / "missing.json") == []
