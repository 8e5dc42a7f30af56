"""course.nn.attention against diffusers' building blocks, plus the identities attention must satisfy."""

import pytest
import torch
from diffusers.models.attention import BasicTransformerBlock as RefBlock
from diffusers.models.attention import FeedForward as RefFeedForward
from diffusers.models.attention_processor import Attention as RefAttention
from diffusers.models.embeddings import TimestepEmbedding as RefTimestepEmbedding
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.transformers.transformer_2d import Transformer2DModel

from course.nn.attention import (
    Attention,
    BasicTransformerBlock,
    FeedForward,
    SpatialSelfAttention,
    TimestepEmbedding,
    Transformer2D,
    attention,
    timestep_embedding,
)

TOL = 1e-5


def _noisy(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter so that ones/zeros initialisations cannot hide a wiring bug."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return module.eval()


def _copy(ours: torch.nn.Module, ref: torch.nn.Module) -> torch.nn.Module:
    ours.load_state_dict(ref.state_dict(), strict=True)  # same names: the mapping is the identity
    return ours.eval()


@pytest.mark.parametrize("dim", [32, 33])
@pytest.mark.parametrize("flip,shift,max_period", [(True, 0, 10000), (False, 1, 10000), (True, 1, 1000)])
def test_timestep_embedding_matches_diffusers(dim, flip, shift, max_period):
    t = torch.tensor([0, 1, 17, 999])
    ref = get_timestep_embedding(t, dim, flip_sin_to_cos=flip, downscale_freq_shift=shift, max_period=max_period)
    got = timestep_embedding(t, dim, flip_sin_to_cos=flip, downscale_freq_shift=shift, max_period=max_period)
    assert got.shape == (4, dim)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    tf = torch.tensor([0.25, 500.5])  # fractional timesteps (flow models) too
    torch.testing.assert_close(timestep_embedding(tf, dim), get_timestep_embedding(tf, dim), atol=1e-6, rtol=0)


def test_timestep_embedding_at_zero_and_rejects_bad_shape():
    emb = timestep_embedding(torch.zeros(1), 8, flip_sin_to_cos=False)
    torch.testing.assert_close(emb, torch.tensor([[0.0] * 4 + [1.0] * 4]))  # sin 0 = 0, cos 0 = 1
    with pytest.raises(ValueError, match="shape"):
        timestep_embedding(torch.zeros(2, 1), 8)


def test_timestep_mlp_matches_diffusers():
    torch.manual_seed(0)
    ref = _noisy(RefTimestepEmbedding(16, 64))
    ours = _copy(TimestepEmbedding(16, 64), ref)
    x = torch.randn(3, 16)
    torch.testing.assert_close(ours(x), ref(x), atol=TOL, rtol=0)


def test_attention_function_is_softmax_qkT_v():
    torch.manual_seed(0)
    B, T, S, nh, hd = 2, 5, 7, 3, 4
    q, k, v = (torch.randn(B, n, nh * hd, dtype=torch.float64) for n in (T, S, S))
    got = attention(q, k, v, nh)
    qh = q.view(B, T, nh, hd).transpose(1, 2)  # (B, nh, T, hd)
    kh = k.view(B, S, nh, hd).transpose(1, 2)  # (B, nh, S, hd)
    vh = v.view(B, S, nh, hd).transpose(1, 2)  # (B, nh, S, hd)
    w = torch.softmax(qh @ kh.transpose(-1, -2) / hd**0.5, dim=-1)  # (B, nh, T, S)
    expected = (w @ vh).transpose(1, 2).reshape(B, T, nh * hd)  # (B, T, D)
    torch.testing.assert_close(got, expected)


def test_attention_mask_hides_keys():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 3, 8), torch.randn(1, 4, 8), torch.randn(1, 4, 8)
    mask = torch.tensor([[True, True, False, False]])
    out = attention(q, k, v, 2, mask)
    k2, v2 = k.clone(), v.clone()
    k2[:, 2:] += 5.0
    v2[:, 2:] -= 3.0
    torch.testing.assert_close(attention(q, k2, v2, 2, mask), out)  # masked keys do not matter
    assert not torch.allclose(attention(q, k2, v2, 2), attention(q, k, v, 2))


@pytest.mark.parametrize("cross_dim,bias", [(None, False), (24, False), (None, True), (24, True)])
def test_attention_module_matches_diffusers(cross_dim, bias):
    torch.manual_seed(0)
    ref = _noisy(RefAttention(32, cross_attention_dim=cross_dim, heads=4, dim_head=8, bias=bias))
    ours = _copy(Attention(32, heads=4, head_dim=8, cross_attention_dim=cross_dim, bias=bias), ref)
    x = torch.randn(2, 6, 32)
    cond = torch.randn(2, 5, cross_dim) if cross_dim else None
    torch.testing.assert_close(ours(x, cond), ref(x, encoder_hidden_states=cond), atol=TOL, rtol=0)


def test_attention_qk_norm_matches_diffusers():
    torch.manual_seed(0)
    ref = _noisy(RefAttention(32, heads=4, dim_head=8, qk_norm="rms_norm", eps=1e-6))
    ours = _copy(Attention(32, heads=4, head_dim=8, qk_norm=True), ref)
    x = torch.randn(2, 6, 32)
    torch.testing.assert_close(ours(x), ref(x), atol=TOL, rtol=0)


def test_cross_attention_needs_cond():
    with pytest.raises(ValueError, match="cross-attention"):
        Attention(16, 2, 8, cross_attention_dim=4)(torch.randn(1, 3, 16))


def test_spatial_self_attention_matches_diffusers():
    torch.manual_seed(0)
    ref = _noisy(RefAttention(32, heads=4, dim_head=8, norm_num_groups=8, eps=1e-5, residual_connection=True,
                              bias=True, upcast_softmax=True, _from_deprecated_attn_block=True))
    ours = _copy(SpatialSelfAttention(32, head_dim=8, groups=8, eps=1e-5), ref)
    x = torch.randn(2, 32, 4, 5)
    torch.testing.assert_close(ours(x), ref(x), atol=TOL, rtol=0)


@pytest.mark.parametrize("act", ["geglu", "gelu", "gelu-approximate"])
def test_feed_forward_matches_diffusers(act):
    torch.manual_seed(0)
    ref = _noisy(RefFeedForward(16, activation_fn=act))
    ours = _copy(FeedForward(16, activation=act), ref)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(ours(x), ref(x), atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="activation"):
        FeedForward(16, activation="relu6")


@pytest.mark.parametrize("cross_dim", [None, 12])
def test_transformer_block_matches_diffusers(cross_dim):
    torch.manual_seed(0)
    ref = _noisy(RefBlock(32, 4, 8, cross_attention_dim=cross_dim))
    ours = _copy(BasicTransformerBlock(32, 4, 8, cross_attention_dim=cross_dim), ref)
    x = torch.randn(2, 9, 32)
    cond = torch.randn(2, 3, cross_dim) if cross_dim else None
    torch.testing.assert_close(ours(x, cond), ref(x, encoder_hidden_states=cond), atol=TOL, rtol=0)


@pytest.mark.parametrize("linear", [False, True])
def test_transformer2d_matches_diffusers(linear):
    torch.manual_seed(0)
    ref = _noisy(Transformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=32, num_layers=2,
                                    cross_attention_dim=12, norm_num_groups=8, use_linear_projection=linear))
    ours = _copy(Transformer2D(32, heads=2, cross_attention_dim=12, num_layers=2, groups=8,
                               use_linear_projection=linear), ref)
    x, cond = torch.randn(2, 32, 4, 6), torch.randn(2, 5, 12)
    expected = ref(x, encoder_hidden_states=cond).sample
    got = ours(x, cond)
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, atol=TOL, rtol=0)
