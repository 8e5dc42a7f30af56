"""Tests for course.pipelines.sd3 (and course.nn.t5, its third text encoder): parity, the folder loader, dropped encoders."""

import json
import shutil

import numpy as np
import pytest
import torch

from course import parity
from course.nn import t5
from course.pipelines import sd3


# ----------------------------------------------------------------------------- T5
def test_t5_encoder_equals_transformers():
    assert t5.parity_t5() <= 1e-5
    assert t5.parity_t5(seed=1) <= 1e-5
    assert t5.parity_t5(t5.PARITY_DEFAULT_CONFIG | dict(feed_forward_proj="relu", num_layers=1)) <= 1e-5


def test_relative_position_buckets_equal_t5s():
    from transformers.models.t5.modeling_t5 import T5Attention

    r = torch.arange(-300, 300)
    for buckets, distance in ((32, 128), (8, 20)):
        expected = T5Attention._relative_position_bucket(r, bidirectional=True, num_buckets=buckets,
                                                         max_distance=distance)
        torch.testing.assert_close(t5.relative_position_bucket(r, buckets, distance), expected)
    b = t5.relative_position_bucket(r, 32, 128)
    assert b[r == 0].item() == 0 and b[r == 1].item() == 17  # right of the query: the upper half
    assert len(set(b[r > 127].tolist())) == 1 and len(set(b[r < -127].tolist())) == 1  # far: one bucket per side


def test_tiny_t5_tokenizer_reads_shapes_words_whole_and_spells_the_rest():
    tok = t5.tiny_t5_tokenizer()
    pieces = tok.convert_ids_to_tokens(tok("a red circle zebra").input_ids)
    assert pieces[:3] == ["▁a", "▁red", "▁circle"] and pieces[-1] == "</s>"
    assert "".join(pieces[3:-1]) == "▁zebra"


# ----------------------------------------------------------------------------- the pipeline
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-sd3")
    cfg = sd3.build_tiny_sd3_folder(path)
    return path, cfg


def test_parity_with_diffusers_stable_diffusion_3_pipeline():
    """CFG with negative prompts at shift 3, no CFG, CFG at shift 1, and T5 dropped: the same images."""
    assert parity.compare("sd3_pipeline") <= 1e-4


def test_loader_round_trip_reads_every_part(folder):
    from diffusers import StableDiffusion3Pipeline

    path, cfg = folder
    ours = sd3.load_diffusers_sd3_folder(path, t5_length=cfg["t5_length"])
    ref = StableDiffusion3Pipeline.from_pretrained(path, local_files_only=True)
    assert ours.text_encoder.present == sd3.ENCODERS
    assert ours.shift == 3.0 and ours.dynamic_shift is None
    assert ours.latent_shape == (16, 8, 8) and ours.image_size == 16
    assert ours.codec.vae.config.shift_factor == pytest.approx(0.0609)
    # the MM-DiT holds diffusers' weights: the same velocity on the same inputs
    x, t = torch.randn(1, 16, 8, 8), torch.tensor([500.0])
    context, pooled = torch.randn(1, 9, 48), torch.randn(1, 40)
    with torch.no_grad():
        expected = ref.transformer(hidden_states=x, timestep=t, encoder_hidden_states=context,
                                   pooled_projections=pooled).sample
        torch.testing.assert_close(ours.transformer(x, t, context, pooled), expected, atol=1e-5, rtol=1e-5)
    # the T5 tokens are those of transformers' tokenizer, cut and padded as diffusers does
    prompts = ["a red circle", "a large blue square in the top left and a small green triangle to the right of a "
               "yellow circle below the purple square"]
    ids = ref.tokenizer_3(prompts, padding="max_length", max_length=16, truncation=True, return_tensors="pt").input_ids
    torch.testing.assert_close(ours.text_encoder.t5.token_ids(prompts, 16), ids)
    with pytest.warns(UserWarning, match="T5 pieces"):
        ours.sample_latents(prompts[1:], steps=1, guidance=1.0)


def test_conditioning_shapes_and_dropped_encoders_give_zeros(folder):
    path, cfg = folder
    L = cfg["t5_length"]
    full = sd3.load_diffusers_sd3_folder(path, t5_length=L)
    prompts = ["a red circle", "a blue square"]
    context, pooled = full.text_encoder(prompts)
    assert context.shape == (2, 77 + L, 48) and pooled.shape == (2, 16 + 24)
    assert torch.all(context[:, :77, 40:] == 0)  # CLIP-L 16 + CLIP-G 24 channels, zero-padded to T5's 48
    for drop, zero_tokens, zero_channels, zero_pooled in (
            (("t5",), slice(77, None), slice(None), None),
            (("clip_l",), slice(0, 77), slice(0, 16), slice(0, 16)),
            (("clip_g",), slice(0, 77), slice(16, 40), slice(16, 40)),
            (("clip_l", "t5"), slice(77, None), slice(None), slice(0, 16))):
        pipe = sd3.load_diffusers_sd3_folder(path, t5_length=L, drop=drop)
        assert set(pipe.text_encoder.present) == set(sd3.ENCODERS) - set(drop)
        c, p = pipe.text_encoder(prompts)
        assert c.shape == context.shape and p.shape == pooled.shape
        assert torch.all(c[:, zero_tokens, zero_channels] == 0)
        kept = torch.ones_like(c, dtype=torch.bool)
        kept[:, zero_tokens, zero_channels] = False
        kept[:, 77:] &= "t5" not in drop
        kept[:, :77] &= ~(torch.arange(48) >= 40)  # the padding channels are zero anyway
        if "clip_l" in drop:
            kept[:, :77, 0:16] = False
        torch.testing.assert_close(c[kept], context[kept])  # the other encoders' parts are unchanged
        if zero_pooled is not None:
            assert torch.all(p[:, zero_pooled] == 0)
        assert not torch.equal(c, context)


def test_guidance_shift_and_t5_each_change_the_image(folder):
    path, cfg = folder
    pipe = sd3.load_diffusers_sd3_folder(path, t5_length=cfg["t5_length"])
    no_t5 = sd3.load_diffusers_sd3_folder(path, t5_length=cfg["t5_length"], drop=("t5",))
    prompts = ["a red circle"]
    base = pipe.sample_latents(prompts, steps=4, guidance=4.0, seed=3)
    assert base.shape == (1, 16, 8, 8)
    for other in (pipe.sample_latents(prompts, steps=4, guidance=1.0, seed=3),
                  pipe.sample_latents(prompts, steps=4, guidance=4.0, seed=3, shift=1.0),
                  no_t5.sample_latents(prompts, steps=4, guidance=4.0, seed=3),
                  pipe.sample_latents(prompts, steps=4, guidance=4.0, seed=4)):
        assert (other - base).abs().max() > 1e-4
    torch.testing.assert_close(pipe.sample_latents(prompts, steps=4, guidance=4.0, seed=3), base)  # deterministic
    images = pipe.generate(prompts, steps=2, guidance=2.0, seed=0)
    assert images.dtype == np.uint8 and images.shape == (1, 16, 16, 3)


def test_sampler_uses_the_shifted_flow_grid():
    from course.diffusion import flow

    sigmas = sd3.sd3_sigmas(10, 3.0)
    torch.testing.assert_close(sigmas, flow.flow_sigmas(10, shift=3.0))
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0 and torch.all(sigmas[1:] < sigmas[:-1])
    assert torch.all(sigmas[1:-1] > flow.flow_sigmas(10, shift=1.0)[1:-1])  # shift > 1 spends more steps at high noise
    dyn = dict(base_image_seq_len=256, max_image_seq_len=4096, base_shift=0.5, max_shift=1.15)
    torch.testing.assert_close(sd3.sd3_sigmas(10, 1.0, dyn, 4096), flow.flow_sigmas(10, mu=1.15))


def test_bad_folders_and_settings_get_clear_errors(folder, tmp_path):
    path, cfg = folder
    with pytest.raises(ValueError, match="cannot drop"):
        sd3.load_diffusers_sd3_folder(path, drop=("t6",))
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    index = json.loads((broken / "model_index.json").read_text())
    del index["transformer"]
    (broken / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="not a StableDiffusion3Pipeline"):
        sd3.load_diffusers_sd3_folder(broken)
    pipe = sd3.load_diffusers_sd3_folder(path, t5_length=cfg["t5_length"], drop=("t5",))
    with pytest.raises(NotImplementedError, match="img2img"):
        pipe.sample_latents(["a red circle"], steps=2, init_latents=torch.zeros(1, 16, 8, 8))
    with pytest.raises(ValueError, match="shift must be"):
        pipe.sample_latents(["a red circle"], steps=2, shift=0.0)
    with pytest.raises(ValueError, match="multiple of 4"):
        pipe.sample_latents(["a red circle"], steps=2, size=(18, 16))
    with pytest.raises(ValueError, match="latents must have shape"):
        pipe.sample_latents(["a red circle"], steps=2, latents=torch.zeros(1, 4, 8, 8))
