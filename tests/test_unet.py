"""course.nn.unet: parity with diffusers' UNet2DConditionModel, presets, and the errors it raises."""

import dataclasses

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D

from course.nn.unet import PRESETS, UNet, UNetConfig, config_from_diffusers, diffusers_config, get_preset, parity_unet
from course.nn.unet_blocks import MidBlock

CA_D, D, CA_U, U = "CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"
SMALL = dict(sample_size=8, in_channels=4, out_channels=4, norm_num_groups=8, layers_per_block=1)

PARITY_CONFIGS = {
    "default": None,
    "sd1-like, 3 levels, conv proj": dict(
        SMALL, block_out_channels=(16, 32, 32), down_block_types=(CA_D, CA_D, D), up_block_types=(U, CA_U, CA_U),
        cross_attention_dim=24, attention_head_dim=2, layers_per_block=2),
    "linear proj, per-level heads and depth (SDXL-like)": dict(
        SMALL, block_out_channels=(16, 32, 48), down_block_types=(D, CA_D, CA_D), up_block_types=(CA_U, CA_U, U),
        cross_attention_dim=20, attention_head_dim=(1, 2, 4), transformer_layers_per_block=(1, 2, 3),
        use_linear_projection=True),
    "no mid block, cross-attn everywhere": dict(
        SMALL, block_out_channels=(16, 24), down_block_types=(CA_D, CA_D), up_block_types=(CA_U, CA_U),
        mid_block_type=None, cross_attention_dim=12, attention_head_dim=4),
    "unconditional (chapter 01)": dict(
        SMALL, in_channels=1, out_channels=1, block_out_channels=(8, 16, 24), down_block_types=(D, D, D),
        up_block_types=(U, U, U), mid_block_type="UNetMidBlock2D"),
    "SDXL text_time micro-conditioning": dict(
        SMALL, block_out_channels=(16, 32), down_block_types=(D, CA_D), up_block_types=(CA_U, U),
        cross_attention_dim=16, attention_head_dim=2, use_linear_projection=True, transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=10 + 6 * 8),
}


@pytest.mark.parametrize("name", list(PARITY_CONFIGS))
def test_parity_with_diffusers(name):
    diff = parity_unet(PARITY_CONFIGS[name], seed=1)
    print(f"parity {name}: {diff:.3g}")
    assert diff <= 1e-4


def test_parity_detects_a_wrong_weight():
    torch.manual_seed(0)
    ref = UNet2DConditionModel(**PARITY_CONFIGS["sd1-like, 3 levels, conv proj"]).eval()
    ours = UNet.from_diffusers(ref).eval()
    x, t, cond = torch.randn(1, 4, 8, 8), torch.tensor([5]), torch.randn(1, 3, 24)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t, cond), ref(x, t, cond).sample, atol=1e-4, rtol=0)
        ours.up_blocks[1].attentions[0].transformer_blocks[0].attn2.to_k.weight.add_(0.5)
        assert (ours(x, t, cond) - ref(x, t, cond).sample).abs().max() > 1e-3


def test_mid_block_with_self_attention_matches_diffusers():
    torch.manual_seed(0)
    ref = UNetMidBlock2D(32, temb_channels=20, resnet_eps=1e-5, resnet_groups=8, attention_head_dim=8,
                         num_layers=1, add_attention=True).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = MidBlock(32, 20, groups=8, eps=1e-5, dropout=0.0, kind="self_attn", heads=4).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x, temb = torch.randn(2, 32, 4, 4), torch.randn(2, 20)
    torch.testing.assert_close(ours(x, temb), ref(x, temb), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_round_trips_through_diffusers_config(name):
    cfg = get_preset(name)
    assert config_from_diffusers(diffusers_config(cfg)) == cfg


def test_preset_sizes_and_shapes():
    counts = {}
    for name, cfg in PRESETS.items():
        model = UNet(cfg).eval()
        counts[name] = sum(p.numel() for p in model.parameters())
        x = torch.randn(2, cfg.in_channels, cfg.sample_size, cfg.sample_size)
        cond = torch.randn(2, 5, cfg.cross_attention_dim) if cfg.has_cross_attention else None
        with torch.no_grad():
            assert model(x, torch.tensor([0, 999]), cond).shape == (2, cfg.out_channels, cfg.sample_size, cfg.sample_size)
    assert 2e6 <= counts["fashion-32"] <= 6e6
    assert 1e6 <= counts["shapes-latent"] <= 3.5e6
    assert not PRESETS["fashion-32"].has_cross_attention and PRESETS["shapes-latent"].cross_attention_dim == 64


def test_timestep_forms_agree():
    torch.manual_seed(0)
    model = UNet(dataclasses.replace(get_preset("fashion-32"), block_out_channels=(8, 16), down_block_types=(D, D),
                                     up_block_types=(U, U), norm_num_groups=4)).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        out = model(x, torch.tensor([7, 7]))
        torch.testing.assert_close(model(x, 7), out)  # a scalar broadcasts over the batch
        torch.testing.assert_close(model(x, torch.tensor([7.0, 7.0])), out)  # float timesteps
        assert not torch.allclose(model(x, 8), out)  # t matters


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    cfg = UNetConfig(sample_size=8, block_out_channels=(16, 32), down_block_types=(CA_D, D), up_block_types=(U, CA_U),
                     num_heads=2, cross_attention_dim=8, norm_num_groups=8, layers_per_block=1)
    model = UNet(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, t, cond, eps = torch.randn(4, 4, 8, 8), torch.randint(0, 1000, (4,)), torch.randn(4, 3, 8), torch.randn(4, 4, 8, 8)
    losses = []
    for _ in range(8):
        loss = (model(x, t, cond) - eps).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_clear_errors_on_bad_inputs():
    cond_model = UNet(UNetConfig(sample_size=8, block_out_channels=(16, 32), down_block_types=(CA_D, D),
                                 up_block_types=(U, CA_U), num_heads=2, cross_attention_dim=8, norm_num_groups=8,
                                 layers_per_block=1))
    x, t, cond = torch.randn(1, 4, 8, 8), torch.tensor([1]), torch.randn(1, 3, 8)
    with pytest.raises(ValueError, match="divisible by 2"):
        cond_model(torch.randn(1, 4, 7, 8), t, cond)
    with pytest.raises(ValueError, match="pass cond"):
        cond_model(x, t)
    with pytest.raises(ValueError, match="cond must be"):
        cond_model(x, t, torch.randn(1, 3, 9))
    with pytest.raises(ValueError, match=r"x must be \(B, 4"):
        cond_model(torch.randn(1, 3, 8, 8), t, cond)
    with pytest.raises(ValueError, match="t must be"):
        cond_model(x, torch.tensor([1, 2]), cond)
    with pytest.raises(ValueError, match="added_cond"):
        cond_model(x, t, cond, added_cond={"text_embeds": torch.randn(1, 4)})
    uncond = UNet(dataclasses.replace(get_preset("fashion-32"), block_out_channels=(8, 16), down_block_types=(D, D),
                                      up_block_types=(U, U), norm_num_groups=4))
    with pytest.raises(ValueError, match="without cond"):
        uncond(torch.randn(1, 1, 8, 8), t, torch.randn(1, 3, 8))


def test_clear_errors_on_bad_configs():
    with pytest.raises(KeyError, match="known presets"):
        get_preset("fashion-64")
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(block_out_channels=(64, 128, 128), num_heads=3)
    with pytest.raises(ValueError, match="cross_attention_dim"):
        UNetConfig(cross_attention_dim=None)
    with pytest.raises(ValueError, match="one per level"):
        UNetConfig(transformer_layers_per_block=(1, 2))
    with pytest.raises(ValueError, match="unknown block type"):
        UNetConfig(down_block_types=("AttnDownBlock2D", D, D))
    with pytest.raises(NotImplementedError, match="resnet_time_scale_shift"):
        config_from_diffusers(dict(PARITY_CONFIGS["sd1-like, 3 levels, conv proj"], resnet_time_scale_shift="scale_shift"))
