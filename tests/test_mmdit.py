"""Tests for course.nn.mmdit: positions, the joint block, QK-norm, init, parity with SD3Transformer2DModel, sizes."""

import math

import pytest
import torch

from course import parity
from course.nn import mmdit

BASE = mmdit.PARITY_DEFAULT_CONFIG


def _tiny(**kw) -> mmdit.MMDiTConfig:
    return mmdit.MMDiTConfig(**(dict(sample_size=8, patch_size=2, in_channels=4, out_channels=4, depth=2, num_heads=2,
                                     head_dim=8, context_dim=12, pooled_dim=6, pos_embed_max_size=6) | kw))


def _randomised(config: mmdit.MMDiTConfig, seed: int = 0) -> mmdit.MMDiT:
    torch.manual_seed(seed)
    model = mmdit.MMDiT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.2)
    return model


def _inputs(config: mmdit.MMDiTConfig, B: int = 2, S: int = 5, H: int = 8, W: int = 8):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(B, config.in_channels, H, W, generator=g), torch.rand(B, generator=g) * 1000,
            torch.randn(B, S, config.context_dim, generator=g), torch.randn(B, config.pooled_dim, generator=g))


@pytest.mark.parametrize("overrides", [
    {},  # QK-norm and one dual-attention block
    dict(qk_norm=None, dual_attention_layers=()),  # SD3-medium's kind
    dict(patch_size=1, pos_embed_max_size=10),
    dict(num_layers=1, dual_attention_layers=(0,)),  # the only block is also the context_pre_only one
    dict(num_attention_heads=2, attention_head_dim=24, caption_projection_dim=48, joint_attention_dim=40,
         pooled_projection_dim=8, num_layers=4, dual_attention_layers=(0, 2)),
    dict(patch_size=4, sample_size=16, pos_embed_max_size=6),
])
def test_parity_with_diffusers_sd3_transformer(overrides):
    assert parity.compare("mmdit", BASE | overrides) <= 1e-5
    assert parity.compare("mmdit", BASE | overrides, seed=1) <= 1e-5


def test_parity_fails_when_a_modulation_is_read_in_the_wrong_order():
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    ref = SD3Transformer2DModel(**BASE).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    sd = mmdit.state_dict_from_diffusers(ref.state_dict())
    sd["final_layer.modulation.weight"] = mmdit._swap_halves(sd["final_layer.modulation.weight"])  # undo the swap
    ours = mmdit.MMDiT(mmdit.config_from_diffusers(dict(ref.config))).eval()
    ours.load_state_dict(sd)
    x, t, c, y = _inputs(ours.config, H=8, W=6)
    with torch.no_grad():
        expected = ref(hidden_states=x, encoder_hidden_states=c, pooled_projections=y, timestep=t).sample
        assert (ours(x, t, c, y) - expected).abs().max() > 1e-2


def test_position_table_crops_the_centre_and_refuses_a_grid_too_large():
    table = mmdit.cropped_pos_embed_table(16, 6, 4)  # (36, 16)
    assert table.shape == (36, 16)
    crop = mmdit.crop_pos_embed(table, 6, 2, 4)  # top (6-2)//2 = 2, left 1
    torch.testing.assert_close(crop[0], table[2 * 6 + 1])
    torch.testing.assert_close(crop[-1], table[3 * 6 + 4])
    torch.testing.assert_close(mmdit.crop_pos_embed(table, 6, 6, 6), table)
    # the grid spans base_size units: position 6 * (4 / 6) = 4 along x in the first half of the channels
    ref = mmdit.cropped_pos_embed_table(16, 4, 4).view(4, 4, 16)
    torch.testing.assert_close(table.view(6, 6, 16)[0, 3, :8], ref[0, 2, :8])
    with pytest.raises(ValueError, match="does not fit"):
        mmdit.crop_pos_embed(table, 6, 7, 2)


def test_a_fresh_model_is_the_identity_per_block_and_predicts_zero():
    model = mmdit.MMDiT(_tiny(dual_attention_layers=(0,), qk_norm=True))
    x, c, y = torch.randn(2, 16, 16), torch.randn(2, 5, 16), torch.randn(2, 16)
    out_x, out_c = model.blocks[0](x, c, y)
    torch.testing.assert_close(out_x, x, atol=0, rtol=0)
    torch.testing.assert_close(out_c, c, atol=0, rtol=0)
    assert torch.all(model(*_inputs(model.config)) == 0)


def test_the_last_block_is_context_pre_only_and_dual_blocks_have_a_second_attention():
    model = mmdit.MMDiT(_tiny(depth=3, dual_attention_layers=(0, 2)))
    first, middle, last = model.blocks
    assert last.context_pre_only and not first.context_pre_only
    assert last.c.attn.to_out is None and not hasattr(last.c, "mlp") and last.c.modulation.out_features == 2 * 16
    assert first.attn2 is not None and middle.attn2 is None and last.attn2 is not None
    assert first.x.modulation.out_features == 9 * 16 and middle.x.modulation.out_features == 6 * 16
    x, c, y = torch.randn(1, 16, 16), torch.randn(1, 5, 16), torch.randn(1, 16)
    out_x, out_c = last(x, c, y)
    assert out_c is None and out_x.shape == x.shape


def test_joint_attention_is_one_softmax_over_both_modalities():
    g = torch.Generator().manual_seed(0)
    qx, kx, vx = (torch.randn(2, 4, 8, generator=g) for _ in range(3))
    qc, kc, vc = (torch.randn(2, 3, 8, generator=g) for _ in range(3))
    out_x, out_c = mmdit.joint_attention((qx, kx, vx), (qc, kc, vc), heads=2)
    q, k, v = torch.cat([qx, qc], 1), torch.cat([kx, kc], 1), torch.cat([vx, vc], 1)  # (2, 7, 8)
    qh, kh, vh = (a.view(2, 7, 2, 4).transpose(1, 2) for a in (q, k, v))  # (B, nh, 7, hd)
    w = torch.softmax(qh @ kh.transpose(-1, -2) / 2.0, dim=-1)  # sqrt(hd) = 2
    expected = (w @ vh).transpose(1, 2).reshape(2, 7, 8)
    torch.testing.assert_close(torch.cat([out_x, out_c], 1), expected, atol=1e-6, rtol=1e-5)


def test_image_tokens_read_the_text_and_the_pooled_vector():
    model = _randomised(_tiny())
    x, t, c, y = _inputs(model.config)
    with torch.no_grad():
        out = model(x, t, c, y)
        assert (model(x, t, c + 1.0, y) - out).abs().max() > 1e-3  # through the joint attention
        assert (model(x, t, c, y + 1.0) - out).abs().max() > 1e-3  # through adaLN
        assert (model(x, t + 100, c, y) - out).abs().max() > 1e-3


def test_qk_norm_bounds_the_attention_logits():
    """With RMS-normalised q and k (unit scales), |q . k| / sqrt(hd) <= sqrt(hd), however large the tokens."""
    for qk_norm, bounded in ((True, True), (False, False)):
        model = _randomised(_tiny(qk_norm=qk_norm))
        for m in model.modules():
            if isinstance(m, torch.nn.RMSNorm):
                torch.nn.init.ones_(m.weight)
        x, t, c, y = _inputs(model.config)
        logits: list = []
        with torch.no_grad():
            model(100 * x, t, 100 * c, y, logits=logits)
        assert len(logits) == model.config.depth
        largest = max(float(v) for v in logits)
        assert (largest <= math.sqrt(8) + 1e-4) == bounded, (qk_norm, largest)


def test_sizes_follow_width_64d_and_equal_diffusers_counts():
    rows = mmdit.sizes_by_depth((15, 18, 24, 30, 38))
    for row in rows:
        assert row["width"] == 64 * row["depth"] and row["heads"] == row["depth"]
        assert row["params"] == row["diffusers"]
    by_depth = {r["depth"]: r["params"] for r in rows}
    assert 7.5e9 < by_depth[38] < 8.5e9  # "8B"
    assert 0.8e9 < by_depth[18] < 0.9e9  # "800M": d = 18
    assert 1.9e9 < by_depth[24] < 2.1e9  # SD3-medium, 2 B
    assert mmdit.count_parameters_meta(mmdit.get_preset("sd3-medium")) == by_depth[24]


def test_bad_inputs_and_configs_get_clear_errors():
    model = mmdit.MMDiT(_tiny())
    x, t, c, y = _inputs(model.config)
    with pytest.raises(ValueError, match="expects x"):
        model(x[:, :3], t, c, y)
    with pytest.raises(ValueError, match="patches"):
        model(torch.randn(2, 4, 8, 7), t, c, y)
    with pytest.raises(ValueError, match="does not fit"):
        model(torch.randn(2, 4, 16, 16), t, c, y)
    with pytest.raises(ValueError, match="context must be"):
        model(x, t, c[..., :5], y)
    with pytest.raises(ValueError, match="dual_attention_layers"):
        _tiny(dual_attention_layers=(2,))
    with pytest.raises(ValueError, match="caption_projection_dim"):
        mmdit.config_from_diffusers(BASE | dict(caption_projection_dim=24))
    with pytest.raises(KeyError, match="unknown MM-DiT preset"):
        mmdit.get_preset("sd4")


def test_chapter_09_checkers_pass_a_right_answer_and_explain_a_wrong_one():
    import torch.nn.functional as F

    from course.exercises.ch09 import check_joint_attention, check_joint_block
    from course.exercises.runner import ExerciseFailed
    from course.nn.attention import attention

    assert check_joint_attention(mmdit.joint_attention) is True

    def separate(qkv_x, qkv_c, heads):  # each stream attends only to itself: not joint
        return attention(*qkv_x, heads), attention(*qkv_c, heads)

    with pytest.raises(ExerciseFailed, match="one softmax"):
        check_joint_attention(separate)
    assert check_joint_block(lambda block, x, c, y: block(x, c, y)) is True

    def shared_weights(block, x, c, y):  # the text read through the image stream's weights
        m = block.x.modulation(F.silu(y)).chunk(6, dim=-1)
        h = torch.cat([x, c], dim=1)
        q, k, v = block.x.attn.qkv(block.x.norm1(h) * (1 + m[1][:, None]) + m[0][:, None])
        h = h + m[2][:, None] * block.x.attn.to_out(attention(q, k, v, block.heads))
        h = h + m[5][:, None] * block.x.mlp(block.x.norm2(h) * (1 + m[4][:, None]) + m[3][:, None])
        return h[:, :x.shape[1]], h[:, x.shape[1]:]

    with pytest.raises(ExerciseFailed, match="EACH"):
        check_joint_block(shared_weights)
