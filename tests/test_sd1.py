"""course.recipes.sd1_shapes: the sd1-shapes parts and recipe (tiny random stand-ins), and the diffusers-folder loader."""

import json

import numpy as np
import pytest
import torch

from course.nn.clip_text import tokenize
from course.nn.codec import LatentCodec
from course.nn.mini_clip import MiniClip, MiniClipConfig
from course.nn.unet import UNet, UNetConfig
from course.nn.vae import VAE, VAEConfig
from course.pipelines import sd1
from course.recipes import sd1_shapes
from course.recipes.clip_shapes import shapes_vocabulary
from course.world import shapes


def tiny_unet(width: int = 16) -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1, num_heads=2,
                           cross_attention_dim=width, norm_num_groups=8, sample_size=8))


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return MiniClip(MiniClipConfig(image_width=8, embed_dim=16, text_width=16, text_layers=1, text_heads=2,
                                   vocab_ids=shapes_vocabulary())).eval()


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)  # f = 8 as vae-shapes: 64x64x3 -> 8x8x4
    return LatentCodec(VAE(VAEConfig(block_out_channels=(8, 8, 8, 8), norm_num_groups=4)), torch.zeros(4), torch.ones(4)).eval()


def test_prompt_encoder_reads_the_clip_tower_per_token(clip):
    enc = sd1.prompt_encoder_from_clip(clip)
    prompts = ["a red circle", "", "a big blue square in the top left and a small green triangle"]
    states = enc(prompts)
    assert states.shape == (3, clip.config.context_length, 16)
    ids = tokenize(prompts, max_length=clip.config.context_length)["input_ids"]
    torch.testing.assert_close(states, clip.text_encoder(clip.id_to_row[ids]).last_hidden_state)
    assert not any(p.requires_grad for p in enc.parameters())  # frozen


def test_sd1shapes_checks_text_width(clip, codec):
    enc = sd1.prompt_encoder_from_clip(clip)
    with pytest.raises(ValueError, match="cross_attention_dim 32 must equal the text width 16"):
        sd1_shapes.SD1Shapes(tiny_unet(32), enc, codec, sd1_shapes.SCHEDULE)


def test_recipe_unet_matches_clip_shapes_width():
    from course.recipes.clip_shapes import CLIP_SHAPES

    assert sd1_shapes.SD1_SHAPES_UNET.cross_attention_dim == CLIP_SHAPES.text_width
    assert sd1_shapes.SCHEDULE.beta_schedule == "scaled_linear" and sd1_shapes.SCHEDULE.prediction_type == "v_prediction"


def test_latent_bank_is_cached_and_keyed_by_the_codec(codec, tmp_path):
    cache = tmp_path / "bank.safetensors"
    scenes, z0 = sd1_shapes.latent_bank(codec, n=6, seed=3, cache=cache)
    assert len(scenes) == 6 and z0.shape == (6, 4, 8, 8) and cache.is_file()
    torch.testing.assert_close(z0, codec.encode(shapes.to_tensor(shapes.render_batch(scenes))))
    _, again = sd1_shapes.latent_bank(codec, n=6, seed=3, cache=cache)
    torch.testing.assert_close(again, z0)
    other = LatentCodec(codec.vae, torch.zeros(4), torch.full((4,), 2.0)).eval()
    assert len(sd1_shapes.latent_bank(other, n=6, seed=3, cache=cache)[1]) == 6
    # a different codec gives different latents: the cache must not be reused for it
    _, scaled = sd1_shapes.latent_bank(other, n=6, seed=3, cache=cache)
    torch.testing.assert_close(scaled, 2 * z0)


def test_batch_fn_paraphrases_and_drops_captions(clip, codec):
    enc = sd1.prompt_encoder_from_clip(clip)
    scenes, z0 = sd1_shapes.latent_bank(codec, n=8, seed=1)
    empty = enc([""])[0]
    g = torch.Generator().manual_seed(0)
    z, cond = sd1_shapes.make_batch_fn(scenes, z0, enc)(0, 5, g)
    assert z.shape == (5, 4, 8, 8) and cond.shape == (5, 32, 16)
    all_dropped = sd1_shapes.make_batch_fn(scenes, z0, enc, caption_dropout=1.0)(0, 4, g)[1]
    torch.testing.assert_close(all_dropped, empty.expand(4, -1, -1))
    none_dropped = sd1_shapes.make_batch_fn(scenes, z0, enc, caption_dropout=0.0)(0, 4, g)[1]
    assert all((none_dropped[i] - empty).abs().max() > 1e-4 for i in range(4))
    # the share of dropped captions is about 10%
    fn = sd1_shapes.make_batch_fn(scenes, z0, enc)
    g = torch.Generator().manual_seed(1)
    dropped = sum(int(((fn(s, 50, g)[1] - empty).abs().amax(dim=(1, 2)) < 1e-6).sum()) for s in range(4))
    assert 8 <= dropped <= 35, dropped


def test_loss_trains_the_unet_on_a_fixed_batch(clip, codec):
    enc = sd1.prompt_encoder_from_clip(clip)
    scenes, z0 = sd1_shapes.latent_bank(codec, n=4, seed=2)
    batch = sd1_shapes.make_batch_fn(scenes, z0, enc, caption_dropout=0.0)(0, 4, torch.Generator().manual_seed(0))
    unet = tiny_unet()
    opt = torch.optim.AdamW(unet.parameters(), lr=5e-3)

    def loss_at(seed):
        return sd1_shapes.sd1_loss(unet, batch, torch.Generator().manual_seed(seed))

    with torch.no_grad():
        before = sum(float(loss_at(s)) for s in range(4))
    for step in range(12):
        opt.zero_grad()
        loss = loss_at(step % 4)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = sum(float(loss_at(s)) for s in range(4))
    assert after < 0.8 * before, (before, after)


def test_config_round_trips_through_json():
    cfg = json.loads(json.dumps(sd1_shapes.sd1_config(sd1_shapes.SD1_SHAPES_UNET, {"clip-shapes": "ab", "vae-shapes": "cd"})))
    assert sd1_shapes._unet_config(cfg["unet"]) == sd1_shapes.SD1_SHAPES_UNET
    assert cfg["parts"] == {"clip-shapes": "ab", "vae-shapes": "cd"}


def test_pipeline_and_quick_evaluation_run_on_an_untrained_model(clip, codec):
    model = sd1_shapes.SD1Shapes(tiny_unet().eval(), sd1.prompt_encoder_from_clip(clip), codec, sd1_shapes.SCHEDULE)
    images = sd1_shapes.sd1_shapes_pipeline(model, {}).generate(["a red circle", "a blue square"], steps=2, guidance=3.0, seed=0)
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    metrics = sd1_shapes.evaluate_sd1_shapes(model, quick=True)
    for w in ("1", "3", "5", "7.5"):
        assert 0.0 <= metrics[f"shapes_eval_full_match_w{w}"] <= 1.0
        assert f"shapes_eval_full_match_two_objects_w{w}" in metrics


def test_pipeline_defaults_are_the_recommended_settings_and_never_override_a_call(clip, codec):
    model = sd1_shapes.SD1Shapes(tiny_unet().eval(), sd1.prompt_encoder_from_clip(clip), codec, sd1_shapes.SCHEDULE)
    pipe = sd1_shapes.sd1_shapes_pipeline(model, {})
    assert (pipe.default_steps, pipe.default_guidance) == (sd1_shapes.SAMPLE_STEPS, sd1_shapes.GUIDANCE) == (25, 3.0)
    cfg = sd1_shapes.sd1_config(sd1_shapes.SD1_SHAPES_UNET, {})
    assert (cfg["sample_steps"], cfg["guidance"]) == (25, 3.0)
    pipe = sd1_shapes.sd1_shapes_pipeline(model, {"sample_steps": 3, "guidance": 5.0})  # the config's own
    assert (pipe.default_steps, pipe.default_guidance) == (3, 5.0)
    assert np.array_equal(pipe.generate(["a red circle"], seed=0), pipe.generate(["a red circle"], steps=3, guidance=5.0, seed=0))
    assert not np.array_equal(pipe.generate(["a red circle"], guidance=1.0, seed=0),
                              pipe.generate(["a red circle"], seed=0))


def test_prompt_style_metrics_cover_three_styles_per_attribute(clip, codec):
    model = sd1_shapes.SD1Shapes(tiny_unet().eval(), sd1.prompt_encoder_from_clip(clip), codec, sd1_shapes.SCHEDULE)
    out = sd1_shapes.prompt_style_metrics(model, 6, steps=2)
    assert out["style_held_out_prompts"] == 6 and out["style_guidance"] == 3.0
    for style in ("canonical", "paraphrase", "short"):
        for group in ("one", "two"):
            for attr in ("full_match", "color", "shape", "binding", "position", "size", "count"):
                assert 0.0 <= out[f"style_{style}_{group}_{attr}"] <= 1.0
    assert out["style_short_one_position"] == out["style_short_one_size"] == 1.0  # short prompts state neither


def test_zoo_card_resolves():
    from course import zoo

    card = zoo.card("sd1-shapes")
    assert card.chapter == "04" and card.pipeline is not None
    for target in (card.train, card.load, card.evaluate, card.pipeline):
        assert callable(zoo.resolve(target))


def test_load_diffusers_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        sd1.load_diffusers_folder(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(ValueError, match="no 'vae'"):
        sd1.load_diffusers_folder(tmp_path)


def test_diffusers_folder_pipeline_parity(tmp_path):
    """StableDiffusionPipeline saved to a folder and read back by the course: the same images (w = 4, negatives)."""
    diff = sd1.parity_sd1_pipeline(folder=tmp_path)
    assert diff <= 1e-4, diff
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tmp_path / part).is_dir()
    # the comparison can fail: a different guidance formula on the course side gives other images
    ours = sd1.load_diffusers_folder(tmp_path)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(steps=3, latents=z, negative_prompts=["a", "b"])
    assert (ours.sample(["x", "y"], guidance=4.0, **kw) - ours.sample(["x", "y"], guidance=2.0, **kw)).abs().max() > 1e-3



def test_sd2_style_v_prediction_folder_parity(tmp_path):
    """An SD 2.x-style folder: v-prediction and OpenCLIP's "!" padding, read from the folder's configs."""
    scheduler = dict(sd1.PARITY_DEFAULT_CONFIG["scheduler"], prediction_type="v_prediction")
    assert sd1.parity_sd1_pipeline(dict(scheduler=scheduler), folder=tmp_path) <= 1e-4
    ours = sd1.load_diffusers_folder(tmp_path)
    assert ours.schedule.prediction_type == "v_prediction"
    tok = json.loads((tmp_path / "tokenizer" / "tokenizer_config.json").read_text())
    tok["pad_token"] = "!"
    (tmp_path / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(tok))
    assert sd1.load_diffusers_folder(tmp_path).text_encoder.pad_token_id == 0


def test_euler_folder_pipeline_parity_and_sampler_choice(tmp_path):
    """A folder with an EulerDiscreteScheduler is sampled with Euler, as diffusers does; DDIM stays available."""
    euler = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading")
    assert sd1.parity_sd1_pipeline(dict(scheduler_class="EulerDiscreteScheduler", scheduler=euler), folder=tmp_path) <= 1e-4
    ours = sd1.load_diffusers_folder(tmp_path)
    assert ours.sampler == "euler"
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(steps=4, guidance=3.0, latents=z)
    assert (ours.sample_latents(["x", "y"], **kw) - ours.sample_latents(["x", "y"], sampler="ddim", **kw)).abs().max() > 1e-3
    init = torch.zeros(2, 3, 16, 16)
    edits = ours.generate(["x", "y"], steps=4, init_images=init, strength=0.5, seed=0)  # SDEdit with Euler
    assert edits.shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="deterministic"):
        ours.generate(["x", "y"], steps=4, eta=0.5)
    with pytest.raises(ValueError, match="unknown sampler 'heun'"):
        ours.generate(["x", "y"], steps=4, sampler="heun")

def test_check_cross_attention_catches_typical_mistakes(capsys):
    import math

    from course.exercises import ch04, runner

    def solution(q, k, v):
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)  # (B, N, T)
        return w @ v  # (B, N, d)

    def wrong_axis(q, k, v):
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-2) @ v  # softmax over image tokens

    def no_scale(q, k, v):
        return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v

    def stub(q, k, v):
        raise NotImplementedError(runner.STUB_MESSAGE)

    assert ch04.check_cross_attention(solution)
    for bad in (wrong_axis, no_scale, stub):
        with pytest.raises(runner.ExerciseFailed):
            ch04.check_cross_attention(bad)


def test_training_captions_include_the_short_prompts_people_type():
    from course.world import metrics

    scenes = shapes.sample_scenes(2000, 3)
    rng = np.random.default_rng(0)
    shares = metrics.caption_shares([sd1_shapes.training_caption(s, rng, short_share=0.25) for s in scenes])
    rng = np.random.default_rng(0)
    world = metrics.caption_shares([sd1_shapes.training_caption(s, rng, short_share=0.0) for s in scenes])
    assert world["short"] < 0.1  # the world's paraphrases alone: ~6% short
    assert abs(shares["short"] - (0.25 + 0.75 * world["short"])) < 0.04
    assert shares["short_two"] > 0.2  # two-object scenes get short prompts too
