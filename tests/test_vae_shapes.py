"""Tests for course.recipes.vae_shapes: the vae-shapes recipe, normalised latents, evaluation, cost, explorers, exercises."""

import json

import numpy as np
import pytest
import torch

from course import checkpoints
from course.exercises import ch02, runner
from course.nn.codec import LatentCodec, load_codec_from, load_vae_shapes, raw_latents
from course.nn.vae import PRESETS, VAE, VAEConfig, gaussian_kl, kl_loss, reparameterize
from course.recipes import vae_shapes as L
from course.recipes.vae_shapes import reconstruction_loss
from course.world import shapes


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny_codec(seed=0, variational=True, n=64):
    torch.manual_seed(seed)
    cfg = VAEConfig(block_out_channels=(8, 8, 8, 8), latent_channels=4, norm_num_groups=4, variational=variational)
    return L.fit_codec(VAE(cfg).eval(), n=n)


def test_vae_shapes_is_f8_with_4_channels_and_48x_fewer_values():
    assert L.VAE_SHAPES.downsample_factor == 8 and L.VAE_SHAPES.latent_channels == 4
    assert (64 * 64 * 3) / (8 * 8 * 4) == 48 == (512 * 512 * 3) / (64 * 64 * 4)
    assert not L.AE_SHAPES.variational and L.AE_SHAPES.block_out_channels == L.VAE_SHAPES.block_out_channels


def test_vae_loss_is_reconstruction_plus_scaled_kl():
    torch.manual_seed(0)
    model = VAE(PRESETS["tiny"])
    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    loss, parts = L.vae_loss(model, x0, torch.Generator().manual_seed(1), kl_weight=0.5, fg_weight=1.0)
    out = model(x0, generator=torch.Generator().manual_seed(1))  # the same eps
    expected = reconstruction_loss(out.sample, x0) + 0.5 * kl_loss(out.posterior) / x0[0].numel()
    torch.testing.assert_close(loss, expected)
    assert parts["kl"] > 0
    # a larger foreground weight can only raise the loss, and the plain autoencoder has no KL
    heavier, _ = L.vae_loss(model, x0, torch.Generator().manual_seed(1), kl_weight=0.5, fg_weight=5.0)
    assert heavier > loss
    ae = VAE(VAEConfig(**(PRESETS["tiny"].__dict__ | {"variational": False})))
    assert L.vae_loss(ae, x0)[1]["kl"] == 0.0


def test_training_batches_are_shapes_images_and_seeded():
    a = L.shapes_images(0, 4, torch.Generator().manual_seed(5))
    b = L.shapes_images(0, 4, torch.Generator().manual_seed(5))
    assert a.shape == (4, 3, 64, 64) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)


def test_decoder_loss_weights_objects_and_their_outline():
    x0 = shapes.to_tensor(shapes.render_batch(shapes.sample_scenes(2, 3)))  # (2, 3, 64, 64)
    model = VAE(VAEConfig(block_out_channels=(8, 8, 8, 8), latent_channels=4, norm_num_groups=4))
    loss = L.decoder_loss(model, x0, torch.Generator().manual_seed(1), fg_weight=20.0)
    q = model.encode(x0)
    x_hat = model.decode(q.sample(torch.Generator().manual_seed(1)))  # the same eps
    weight = torch.ones(2, 1, 64, 64)
    fg = (x0 - L._BACKGROUND.view(1, 3, 1, 1)).abs().amax(1, keepdim=True) > 0.05  # (2, 1, 64, 64)
    ring = torch.nn.functional.max_pool2d(fg.float(), 3, stride=1, padding=1) > 0  # one pixel wider
    weight[ring] = 20.0
    torch.testing.assert_close(loss, reconstruction_loss(x_hat, x0, weight))
    assert ring.sum() > fg.sum()
    assert L.decoder_loss(model, x0, torch.Generator().manual_seed(1), fg_weight=1.0) < loss


def test_decoder_finetune_keeps_encoder_latents_and_normalisation_bit_identical():
    from course.train import TrainConfig

    torch.manual_seed(0)
    vae = VAE(VAEConfig(block_out_channels=(8, 8, 8, 8), latent_channels=4, norm_num_groups=4)).eval()
    x0 = shapes.to_tensor(shapes.render_batch(shapes.sample_scenes(8, 5)))
    before = raw_latents(vae, x0)
    codec_before = L.fit_codec(vae, n=32)
    decoder_before = [p.clone() for p in vae.decoder.parameters()]
    result = L.finetune_decoder(vae, TrainConfig(steps=3, batch_size=2, lr=1e-2, ema_decay=None), None)
    tuned = result.model.eval()
    assert not any(p.requires_grad for p in tuned.encoder.parameters())
    assert not any(p.requires_grad for p in tuned.quant_conv.parameters())
    assert torch.equal(raw_latents(tuned, x0), before)  # the latents chapters 04+ train on
    codec_after = L.fit_codec(tuned, n=32)
    assert torch.equal(codec_after.shift, codec_before.shift) and torch.equal(codec_after.scale, codec_before.scale)
    assert codec_after.vae.config.scaling_factor == codec_before.vae.config.scaling_factor
    # the decoder did train, and the VAE handed in is untouched
    assert any(not torch.equal(p, q) for p, q in zip(tuned.decoder.parameters(), decoder_before))
    assert all(torch.equal(p, q) for p, q in zip(vae.decoder.parameters(), decoder_before))
    assert not torch.equal(tuned.post_quant_conv.weight, vae.post_quant_conv.weight)


def test_vae_shapes_phase_one_length_matches_the_shipped_run():
    # the resumable phase-1 state in runs/vae-shapes ended at this step: the recipe must resume it as finished
    assert L.VAE_SHAPES_STEPS == 1700
    assert L.DECODER_STEPS > 0 and L.DECODER_FOREGROUND_WEIGHT > L.FOREGROUND_WEIGHT


def test_codec_normalises_each_channel_and_round_trips_through_json():
    codec = _tiny_codec()
    x0 = shapes.to_tensor(shapes.render_batch(shapes.sample_scenes(64, L.STATS_SEED)))
    z = codec.encode(x0)  # the images the stats were fitted on
    assert z.shape == (64, 4, 8, 8)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(codec.denormalize(codec.normalize(z)), z)
    assert codec.vae.config.scaling_factor != 1.0  # fitted as 1 / std of posterior samples
    config = json.loads(json.dumps(codec.config_dict()))
    again = load_codec_from(dict(codec.state_dict()), config)
    assert torch.equal(again(x0[:4]), codec(x0[:4]))
    assert "shift" not in codec.state_dict()  # the normalisation lives in the config only


def test_codec_errors_are_clear():
    codec = _tiny_codec(n=16)
    config = codec.config_dict()
    del config["latent_scale"]
    with pytest.raises(ValueError, match="latent_scale"):
        load_codec_from(dict(codec.state_dict()), config)
    with pytest.raises(ValueError, match="shape"):
        LatentCodec(codec.vae, torch.zeros(3), torch.ones(4))
    with pytest.raises(checkpoints.CheckpointError):
        load_codec_from({}, codec.config_dict())
    with pytest.raises(ValueError, match="64, 64"):
        L.encode_images(codec, torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="latents"):
        L.decode_latents(codec, torch.zeros(2, 3, 8, 8))


def test_encode_images_accepts_uint8_and_tensors_and_decodes_to_uint8():
    codec = _tiny_codec(n=16)
    images = shapes.render_batch(shapes.sample_scenes(3, 1))
    z = L.encode_images(codec, images, batch_size=2)
    # batches of 2 and of 3 may round differently in the convolutions (oneDNN picks kernels by shape)
    torch.testing.assert_close(z, L.encode_images(codec, shapes.to_tensor(images)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z, L.encode_scenes(codec, shapes.sample_scenes(3, 1)), atol=1e-5, rtol=1e-5)
    out = L.decode_latents(codec, z)
    assert out.dtype == np.uint8 and out.shape == (3, 64, 64, 3)


def test_plain_autoencoder_codec_has_no_scaling_factor():
    codec = _tiny_codec(variational=False, n=16)
    assert codec.vae.config.scaling_factor == 1.0
    assert codec.encode(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 8, 8)


def test_psnr_known_values():
    x = np.full((2, 4, 4, 3), 100, np.uint8)
    y = x.copy()
    y[1] += 1  # MSE 1 -> 20 log10(255) = 48.13 dB
    p = L.psnr(y, x)
    assert p[0] > 90 and abs(p[1] - 20 * np.log10(255)) < 1e-9


def test_evaluate_reports_psnr_and_shapes_eval():
    metrics = L.evaluate_vae_shapes(_tiny_codec(n=16), quick=True)
    assert metrics["held_out_images"] == 256
    assert 0 <= metrics["shapes_eval_full_match"] <= 1 and metrics["psnr_db"] < 30  # an untrained VAE
    assert metrics["latent_raw_std_min"] <= metrics["latent_raw_std_max"]


def test_denoisers_differ_only_in_input_size_and_cost_is_measured():
    pix, lat = L.denoiser_config("pixels"), L.denoiser_config("latents")
    assert (pix.in_channels, pix.sample_size, lat.in_channels, lat.sample_size) == (3, 64, 4, 8)
    assert pix.block_out_channels == lat.block_out_channels
    cost = L.pixel_vs_latent_cost(batch_size=1, sampling_steps=2, repeat=1)
    assert cost["train_step_ratio"] > 1 and cost["sampling_ratio"] > 1
    assert abs(cost["pixels_params"] - cost["latents_params"]) < 0.01 * cost["pixels_params"]


def test_explorer_panels():
    codec = _tiny_codec(n=16)
    strip = L.channel_view(codec, seed=3)
    assert strip.dtype == np.uint8 and strip.shape == (64, 6 * 64 + 5 * 2, 3)
    panels = L.perturb_view(codec, seed=3, channel="all", noise=0.0)
    clean, perturbed = panels[:, 66:130], panels[:, 132:196]
    assert np.array_equal(clean, perturbed)  # no noise, no change
    assert not np.array_equal(L.perturb_view(codec, 3, "2", 2.0)[:, 132:], clean)


def test_explorers_are_static_figures_without_a_front_end(monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.setenv("COURSE_STATIC_WIDGETS", "1")
    codec = _tiny_codec(n=16)
    assert isinstance(L.latent_viewer(codec), Figure) and isinstance(L.perturb_explorer(codec), Figure)


# ----------------------------------------------------------------------------- exercises


def _stub(*args):
    raise NotImplementedError(runner.STUB_MESSAGE)


def test_reparameterize_check_passes_the_solution_and_fails_stub_and_mistake():
    assert ch02.check_reparameterize(lambda mean, logvar, eps: mean + torch.exp(0.5 * logvar) * eps)
    with pytest.raises(runner.ExerciseFailed, match="NotImplementedError"):
        ch02.check_reparameterize(_stub)
    with pytest.raises(runner.ExerciseFailed, match="VARIANCE"):  # exp(logvar) is the variance
        ch02.check_reparameterize(lambda mean, logvar, eps: mean + torch.exp(logvar) * eps)
    with pytest.raises(runner.ExerciseFailed):  # fresh noise instead of the given eps
        ch02.check_reparameterize(lambda mean, logvar, eps: mean + torch.exp(0.5 * logvar) * torch.randn_like(eps))


def test_kl_check_passes_the_solution_and_fails_stub_and_mistakes():
    assert ch02.check_kl(lambda mean, logvar: 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)))
    with pytest.raises(runner.ExerciseFailed, match="NotImplementedError"):
        ch02.check_kl(_stub)
    with pytest.raises(runner.ExerciseFailed, match="summed"):  # a mean instead of a sum
        ch02.check_kl(lambda mean, logvar: 0.5 * (mean**2 + logvar.exp() - 1 - logvar).mean(dim=(1, 2, 3)))
    with pytest.raises(runner.ExerciseFailed, match="shape"):  # one number for the batch
        ch02.check_kl(lambda mean, logvar: 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum())


def test_pure_functions_match_the_posterior():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    eps = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(9))
    from course.nn.vae import DiagonalGaussian

    q = DiagonalGaussian(mean, logvar)
    torch.testing.assert_close(q.sample(torch.Generator().manual_seed(9)), reparameterize(mean, logvar, eps))
    torch.testing.assert_close(q.kl(), gaussian_kl(mean, logvar))


# ----------------------------------------------------------------------------- the shipped checkpoint


@pytest.mark.skipif("vae-shapes" not in checkpoints.read_manifest(), reason="vae-shapes is not shipped yet")
def test_shipped_vae_shapes_loads_and_reconstructs():
    codec = load_vae_shapes()
    entry = checkpoints.manifest_entry("vae-shapes")
    images = shapes.render_batch(shapes.sample_scenes(32, L.HELD_OUT_SEED))
    z = L.encode_images(codec, images)
    assert z.shape == (32, 4, 8, 8) and 0.5 < float(z.std()) < 2.0  # normalised latents
    recon = L.decode_latents(codec, z)
    assert L.psnr(recon, images).mean() > entry["metrics"]["psnr_db"] - 3
