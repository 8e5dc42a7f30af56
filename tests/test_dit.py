"""Tests for course.nn.dit: patches, positions, the four block designs, DiT's init, parity, counts."""

import dataclasses

import pytest
import torch

from course import parity
from course.nn import dit


def _tiny(**kw) -> dit.DiTConfig:
    return dit.DiTConfig(**(dict(input_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=2, num_classes=5) | kw))


@pytest.mark.parametrize("p", [1, 2, 4])
def test_unpatchify_inverts_patchify_and_the_conv_is_patchify_then_linear(p):
    x = torch.randn(2, 4, 8, 8)
    tokens = dit.patchify(x, p)
    assert tokens.shape == (2, (8 // p) ** 2, p * p * 4)
    torch.testing.assert_close(dit.unpatchify(tokens, p, 4), x)
    embed = dit.PatchEmbed(4, 16, p)
    w = embed.proj.weight.permute(0, 2, 3, 1).reshape(16, -1)  # (D, p, p, C) -> (D, p*p*C): patchify's order
    torch.testing.assert_close(embed(x), tokens @ w.T + embed.proj.bias, atol=1e-5, rtol=1e-5)


def test_patchify_refuses_images_that_do_not_tile():
    with pytest.raises(ValueError, match="not divisible"):
        dit.patchify(torch.zeros(1, 4, 8, 6), 4)
    with pytest.raises(ValueError, match="cannot unpatchify"):
        dit.unpatchify(torch.zeros(1, 15, 16), 2, 4)


def test_position_embeddings_encode_column_then_row():
    pe = dit.sincos_pos_embed_2d(16, 3, 4)  # (12, 16)
    assert pe.shape == (12, 16)
    # tokens in the same column share the first half, tokens in the same row the second half
    torch.testing.assert_close(pe[0, :8], pe[4, :8])
    torch.testing.assert_close(pe[0, 8:], pe[1, 8:])
    assert not torch.allclose(pe[0, :8], pe[1, :8])
    torch.testing.assert_close(pe[0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))  # position (0, 0)


def test_an_adaln_zero_block_is_the_identity_at_init_and_the_fresh_model_outputs_zeros():
    model = dit.DiT(_tiny())
    x, c = torch.randn(3, 16, 32), torch.randn(3, 32)
    for block in model.blocks:
        torch.testing.assert_close(block(x, c), x, atol=0, rtol=0)
        assert torch.all(block.gates(c) == 0)
    out = model(torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999]), torch.tensor([0, 4, 5]))
    assert out.shape == (3, 8, 8, 8) and torch.all(out == 0)


@pytest.mark.parametrize("conditioning", dit.CONDITIONINGS)
def test_every_design_runs_learns_from_the_label_and_the_time(conditioning):
    torch.manual_seed(0)
    model = dit.DiT(_tiny(conditioning=conditioning, learn_sigma=False))
    for p in model.parameters():  # leave the zero init so that the output depends on everything
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 4, 8, 8)
    t, y = torch.tensor([10, 10]), torch.tensor([1, 1])
    out = model(x, t, y)
    assert out.shape == (2, 4, 8, 8)
    assert not torch.allclose(out, model(x, t, torch.tensor([2, 2])))  # the class matters
    assert not torch.allclose(out, model(x, torch.tensor([900, 900]), y))  # the time matters
    if conditioning in ("adaln", "adaln-zero"):
        assert model.blocks[0].norm1.weight is None  # scale and shift come from c, not from the LayerNorm
    else:
        assert model.blocks[0].modulation is None


def test_labels_out_of_range_and_wrong_shapes_are_refused():
    model = dit.DiT(_tiny())
    with pytest.raises(ValueError, match="class labels must be in 0 ... 5"):
        model(torch.zeros(1, 4, 8, 8), torch.zeros(1, dtype=torch.long), torch.tensor([6]))
    with pytest.raises(ValueError, match=r"expects x of shape \(B, 4, 8, 8\)"):
        model(torch.zeros(1, 4, 16, 16), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="conditioning"):
        _tiny(conditioning="film")


def test_label_dropout_uses_the_null_class_at_the_asked_rate():
    y = torch.zeros(20_000, dtype=torch.long)
    dropped = dit.drop_labels(y, 0.1, 18, torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, 18}
    assert abs((dropped == 18).float().mean().item() - 0.1) < 0.01


@pytest.mark.parametrize("config", [
    None,
    dict(num_attention_heads=3, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=3, sample_size=16,
         patch_size=4, num_embeds_ada_norm=7, norm_eps=1e-6),  # fixed sigma, p = 4, 7 classes
    dict(num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=8, num_layers=1, sample_size=8,
         patch_size=1, num_embeds_ada_norm=18),  # p = 1, width 64, one block
    dict(num_attention_heads=4, attention_head_dim=8, in_channels=3, out_channels=6, num_layers=4, sample_size=12,
         patch_size=2, num_embeds_ada_norm=1000),  # 3 channels, 1000 classes
])
def test_parity_with_diffusers_dit(config):
    assert parity.compare("dit", config) <= 1e-5


def test_from_diffusers_refuses_untied_block_embedders_and_unsupported_configs():
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    ref = DiTTransformer2DModel(**dit.PARITY_DEFAULT_CONFIG)  # each block draws its own embedder
    with pytest.raises(ValueError, match="embedder differs"):
        dit.DiT.from_diffusers(ref)
    with pytest.raises(ValueError, match="supports"):
        dit.config_from_diffusers(dict(dit.PARITY_DEFAULT_CONFIG, activation_fn="geglu"))


def test_diffusers_port_differs_from_dit_in_two_numbers():
    """diffusers' sinusoid shift (1) and MLP LayerNorm eps (1e-5) are DiT's 0 and 1e-6: both are kept as config."""
    c = dit.config_from_diffusers(dit.PARITY_DEFAULT_CONFIG)
    assert (c.freq_shift, c.mlp_norm_eps) == (1.0, 1e-5)
    assert (dit.DiTConfig().freq_shift, dit.DiTConfig().mlp_norm_eps) == (0.0, 1e-6)
    assert dit.diffusers_config(dataclasses.replace(c, freq_shift=1.0))["norm_eps"] == 1e-5


def test_parameter_counts_and_gflops_reproduce_the_paper():
    assert abs(dit.count_parameters_meta(dit.PRESETS["DiT-XL/2"]) / 1e6 - 675) < 1  # Peebles & Xie: 675 M
    paper = {"DiT-XL/2": 118.64, "DiT-XL/4": 29.05, "DiT-XL/8": 7.39, "DiT-S/2": 6.06, "DiT-B/2": 23.01, "DiT-L/2": 80.71}
    for name, g in paper.items():
        assert abs(dit.gflops(dit.PRESETS[name]) / g - 1) < 0.01, name
    xl = {c: dit.gflops(dit.get_preset("DiT-XL/2", conditioning=c)) for c in dit.CONDITIONINGS}
    assert abs(xl["cross-attention"] / xl["adaln-zero"] - 1.16) < 0.01  # 137.6 / 118.6
    assert abs(xl["in-context"] - 119.4) < 0.2


def test_gflops_scale_with_the_batch_only_through_the_batch():
    c = dit.get_preset("dit-shapes-ablation")
    assert abs(dit.gflops(c, batch=4) - dit.gflops(c, batch=1)) < 1e-9
