"""Tests for course.nn.vae: shapes, the Gaussian posterior, losses, latent scaling, parity with diffusers."""

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from course.nn import codec
from course.nn import vae as V
from course.recipes import vae_shapes


def _diffusers_cfg(widths, **kw):
    n = len(widths)
    return dict(
        block_out_channels=widths,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        **kw,
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread is faster, and it stays fast on a busy shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


PARITY_CONFIGS = [
    None,  # the "tiny" preset
    _diffusers_cfg((16, 32, 32), layers_per_block=2, latent_channels=4, norm_num_groups=8),
    _diffusers_cfg((32, 64), layers_per_block=1, latent_channels=8, norm_num_groups=16, mid_block_add_attention=False),
    _diffusers_cfg(
        (24, 48, 48, 96), layers_per_block=1, latent_channels=16, norm_num_groups=12,
        use_quant_conv=False, use_post_quant_conv=False,
    ),
]


# ---------------------------------------------------------------------------------------------- shapes


def test_shapes_preset_maps_64x64x3_to_8x8x4():
    torch.manual_seed(0)
    vae = V.build("shapes").eval()
    n_params = sum(p.numel() for p in vae.parameters())
    assert 500_000 <= n_params <= 1_000_000
    assert vae.config.downsample_factor == 8
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        q = vae.encode(x)
        assert isinstance(q, V.DiagonalGaussian)
        assert q.mean.shape == q.logvar.shape == (2, 4, 8, 8)
        assert vae.decode(q.sample()).shape == (2, 3, 64, 64)
        out = vae(x)
    assert out.sample.shape == (2, 3, 64, 64) and out.z.shape == (2, 4, 8, 8)
    assert out.posterior is not None


def test_plain_autoencoder_has_no_kl():
    torch.manual_seed(0)
    ae = V.build("shapes_ae").eval()
    assert ae.encoder.conv_out.out_channels == 4  # z itself, no logvar channels
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        z = ae.encode(x)
        out = ae(x)
    assert isinstance(z, torch.Tensor) and z.shape == (2, 4, 8, 8)
    assert out.posterior is None
    torch.testing.assert_close(out.z, z)
    torch.testing.assert_close(ae.encode_latent(x), z)


@pytest.mark.parametrize(
    "shape, match",
    [((2, 3, 60, 64), "multiples of 8"), ((2, 1, 64, 64), r"\(B, 3, H, W\)"), ((3, 64, 64), r"\(B, 3, H, W\)")],
)
def test_encode_rejects_bad_shapes(shape, match):
    vae = V.build("shapes")
    with pytest.raises(ValueError, match=match):
        vae.encode(torch.randn(*shape))


def test_decode_rejects_wrong_latent_channels():
    vae = V.build("shapes")
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        vae.decode(torch.randn(1, 3, 8, 8))


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="must divide every width"):
        V.VAEConfig(block_out_channels=(12, 32), norm_num_groups=8)
    with pytest.raises(KeyError, match="known presets"):
        V.build("sdxl")
    for name, cfg in V.PRESETS.items():  # GroupNorm groups divide every width of every preset
        assert all(c % cfg.norm_num_groups == 0 for c in cfg.block_out_channels), name


# ---------------------------------------------------------------------------------------------- posterior


def test_kl_is_zero_for_the_standard_normal_and_matches_torch():
    zeros = torch.zeros(3, 4, 2, 2)
    kl0 = V.DiagonalGaussian(zeros, zeros).kl()
    assert kl0.shape == (3,)
    assert torch.all(kl0 == 0)
    assert V.kl_loss(V.DiagonalGaussian(zeros, zeros)).item() == 0.0

    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    q = V.DiagonalGaussian(mean, logvar)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0)
    ).sum(dim=(1, 2, 3))
    torch.testing.assert_close(q.kl(), ref)
    torch.testing.assert_close(V.kl_loss(q), ref.mean())
    assert torch.all(q.kl() > 0)


def test_reparameterised_samples_have_the_right_statistics():
    mean = torch.full((1, 1, 200, 200), 1.5, requires_grad=True)
    logvar = torch.full((1, 1, 200, 200), math.log(0.25), requires_grad=True)
    q = V.DiagonalGaussian(mean, logvar)
    z = q.sample(torch.Generator().manual_seed(0))
    assert abs(z.mean().item() - 1.5) < 0.01  # 40k samples: standard error 0.0025
    assert abs(z.std().item() - 0.5) < 0.01
    z.sum().backward()  # gradients reach the encoder's outputs through the sample
    assert mean.grad is not None and logvar.grad is not None
    # same generator seed -> same sample; mode is the mean
    torch.testing.assert_close(q.sample(torch.Generator().manual_seed(0)), z)
    assert q.mode() is mean


def test_logvar_is_clamped():
    q = V.DiagonalGaussian(torch.zeros(1, 1, 1, 2), torch.tensor([[[[100.0, -100.0]]]]))
    assert q.logvar.flatten().tolist() == [20.0, -30.0]
    assert torch.isfinite(q.var).all()


# ---------------------------------------------------------------------------------------------- losses


def test_reconstruction_loss_combines_l1_and_mse_with_weights():
    g = torch.Generator().manual_seed(0)
    x, x_hat = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    d = x_hat - x
    torch.testing.assert_close(vae_shapes.reconstruction_loss(x_hat, x), d.abs().mean() + d.pow(2).mean())
    assert vae_shapes.reconstruction_loss(x, x).item() == 0.0
    weight = torch.ones(2, 1, 4, 4)
    weight[0] = 3.0
    expected = (weight * (d.abs() + d.pow(2))).mean()
    torch.testing.assert_close(vae_shapes.reconstruction_loss(x_hat, x, weight), expected)
    with pytest.raises(ValueError, match="same shape"):
        vae_shapes.reconstruction_loss(x_hat[:, :1], x)


def test_foreground_weight_marks_non_background_pixels():
    background = torch.tensor([0.8, 0.8, 0.8])
    x = background.view(1, 3, 1, 1).expand(1, 3, 4, 4).clone()
    x[0, :, 1, 2] = torch.tensor([0.9, -0.5, -0.5])  # one red pixel
    w = vae_shapes.foreground_weight(x, background, weight=5.0)
    assert w.shape == (1, 1, 4, 4)
    assert w[0, 0, 1, 2] == 5.0 and (w == 5.0).sum() == 1 and (w == 1.0).sum() == 15


def test_scaling_factor_gives_unit_variance():
    g = torch.Generator().manual_seed(0)
    latents = 5.0 * torch.randn(64, 4, 8, 8, generator=g)
    s = codec.fit_scaling_factor(latents)
    assert abs(s - 0.2) < 0.01
    assert abs((latents * s).std().item() - 1.0) < 1e-5

    channel_std = torch.tensor([3.0, 5.0, 8.0, 11.0]).view(1, 4, 1, 1)
    channel_mean = torch.tensor([1.0, -2.0, 0.0, 4.0]).view(1, 4, 1, 1)
    latents = channel_mean + channel_std * torch.randn(64, 4, 8, 8, generator=g)
    shift, scale = codec.fit_channel_normalization(latents)
    assert shift.shape == scale.shape == (4,)
    normed = (latents - shift.view(1, 4, 1, 1)) * scale.view(1, 4, 1, 1)
    torch.testing.assert_close(normed.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(normed.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-5, rtol=0)


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    vae = V.build("tiny")
    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    x = F.interpolate(torch.rand(8, 3, 2, 2) * 2 - 1, scale_factor=8, mode="nearest")  # (8, 3, 16, 16) blocks
    losses = []
    for _ in range(20):
        out = vae(x)
        loss = vae_shapes.reconstruction_loss(out.sample, x) + 1e-4 * V.kl_loss(out.posterior)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


# ---------------------------------------------------------------------------------------------- diffusers


@pytest.mark.parametrize("config", PARITY_CONFIGS)
def test_parity_with_diffusers(config):
    assert V.parity_vae(config, seed=1) <= 1e-4


def test_parity_detects_a_wrong_weight():
    torch.manual_seed(0)
    ref = AutoencoderKL(**V.diffusers_config(V.PRESETS["tiny"])).eval()
    ours = V.VAE.from_diffusers(ref).eval()
    z = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        assert (ref.decode(z).sample - ours.decode(z)).abs().max() < 1e-5
        ours.decoder.mid.attn.to_q.bias.add_(1.0)
        assert (ref.decode(z).sample - ours.decode(z)).abs().max() > 1e-3


def test_config_round_trip_and_parameter_count():
    cfg = V.PRESETS["shapes"]
    with torch.device("meta"):
        ref = AutoencoderKL(**V.diffusers_config(cfg))
        ours = V.VAE(cfg)
    assert V.config_from_diffusers(ref.config) == cfg
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    assert {V.diffusers_key_to_course(k) for k in ref.state_dict()} == set(ours.state_dict())
    assert (
        V.diffusers_key_to_course("encoder.mid_block.attentions.0.to_out.0.weight") == "encoder.mid.attn.to_out.weight"
    )
    with pytest.raises(ValueError, match="always variational"):
        V.diffusers_config(V.PRESETS["shapes_ae"])


def test_sd_vae_has_83_7m_parameters():
    assert V.count_parameters_meta(V.sd_vae_config()) == 83_653_863
