"""The text-to-image sampler of `course.pipelines.base`: CFG, DDIM timesteps, SDEdit, seeds, errors.

Tiny random parts (a 2-level U-Net, a 1-layer CLIP text transformer, a 2-level VAE) keep it fast.
"""

import numpy as np
import pytest
import torch

from course.diffusion import ddpm
from course.exercises.ch04 import check_cfg
from course.exercises.runner import ExerciseFailed
from course.nn.clip_text import CLIPTextConfig, CLIPTextTransformer
from course.nn.codec import LatentCodec
from course.nn.unet import UNet, UNetConfig
from course.nn.vae import VAE, VAEConfig
from course.pipelines.base import TextToImage, cfg_combine, ddim_sample, ddim_timesteps, guided_eps, img2img_timesteps
from course.pipelines.sd1 import PromptEncoder

SD = ddpm.SCHEDULES["sd_scaled_linear"]


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    unet = UNet(UNetConfig(block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1, num_heads=2,
                           cross_attention_dim=16, norm_num_groups=8, sample_size=4)).eval()
    text = PromptEncoder(CLIPTextTransformer(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                            num_attention_heads=2, max_position_embeddings=16)), 16)
    vae = VAE(VAEConfig(block_out_channels=(8, 16), norm_num_groups=4))
    codec = LatentCodec(vae, torch.zeros(4), torch.ones(4)).eval()
    return TextToImage(unet, text.eval(), codec, SD, image_size=8)


def test_cfg_combine_identities():
    g = torch.Generator().manual_seed(0)
    u, c = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    torch.testing.assert_close(cfg_combine(u, c, 1.0), c)
    torch.testing.assert_close(cfg_combine(u, c, 0.0), u)
    torch.testing.assert_close(cfg_combine(u, c, 3.0) - c, 2.0 * (c - u))  # w > 1 extrapolates past eps_cond


def test_guided_eps_batches_uncond_first_in_one_forward():
    calls = []

    def unet(x, t, cond):
        calls.append(x.shape[0])
        return x * 0 + cond.mean(dim=(1, 2)).view(-1, 1, 1, 1)  # eps = mean of the text states

    x = torch.zeros(3, 4, 2, 2)
    cond, uncond = torch.full((3, 5, 6), 2.0), torch.full((3, 5, 6), -1.0)
    eps = guided_eps(unet, x, 10, cond, uncond, 4.0)
    assert calls == [6]  # one forward of the doubled batch
    torch.testing.assert_close(eps, torch.full_like(x, -1.0 + 4.0 * 3.0))
    calls.clear()
    torch.testing.assert_close(guided_eps(unet, x, 10, cond, None, 1.0), torch.full_like(x, 2.0))
    assert calls == [3]  # w = 1: no unconditional pass


def test_ddim_timesteps_match_diffusers():
    from diffusers import DDIMScheduler

    ref = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                        set_alpha_to_one=False, steps_offset=1)
    for steps in (1, 7, 50):
        ref.set_timesteps(steps)
        assert ddim_timesteps(SD, steps) == ref.timesteps.tolist()
    assert ddim_timesteps(SD, 50)[:2] == [981, 961] and ddim_timesteps(SD, 50)[-1] == 1


def test_img2img_timesteps_follow_strength():
    full = ddim_timesteps(SD, 10)
    assert img2img_timesteps(SD, 10, 1.0) == full
    assert img2img_timesteps(SD, 10, 0.3) == full[-3:]
    assert img2img_timesteps(SD, 10, 0.55) == full[-5:]  # int(5.5) steps, as diffusers
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="strength"):
            img2img_timesteps(SD, 10, bad)
    with pytest.raises(ValueError, match="no denoising step"):
        img2img_timesteps(SD, 10, 0.05)


def test_ddim_sample_with_oracle_eps_recovers_x0():
    """With the true eps of a fixed x0, DDIM lands on x0 (every step is exact)."""
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 4, 2, 2, generator=g), torch.randn(2, 4, 2, 2, generator=g)
    timesteps = ddim_timesteps(SD, 20)
    xt = ddpm.q_sample(x0, timesteps[0], eps, SD.alpha_bar)

    def oracle(x, t):
        ab = SD.alpha_bar[t]
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()

    # the last step goes to alpha_bar[0] (set_alpha_to_one=False), not to 1: x_prev = sqrt(ab0) x0 + sqrt(1 - ab0) eps_hat
    out = ddim_sample(oracle, xt, SD, 20, timesteps)
    ab0 = SD.alpha_bar[0]
    torch.testing.assert_close(out, ab0.sqrt() * x0 + (1 - ab0).sqrt() * eps, atol=1e-4, rtol=1e-4)


def test_generate_shape_dtype_and_seed_determinism(pipe):
    a = pipe.generate(["a red circle", "a blue square"], steps=3, guidance=3.0, seed=5)
    assert a.dtype == np.uint8 and a.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(a, pipe.generate(["a red circle", "a blue square"], steps=3, guidance=3.0, seed=5))
    assert not np.array_equal(a, pipe.generate(["a red circle", "a blue square"], steps=3, guidance=3.0, seed=6))


def test_negative_prompt_replaces_the_empty_prompt(pipe):
    kw = dict(steps=3, guidance=5.0, seed=0)
    plain = pipe.sample(["a red circle"], **kw)
    empty_negative = pipe.sample(["a red circle"], negative_prompts=[""], **kw)
    negative = pipe.sample(["a red circle"], negative_prompts=["a blue square"], **kw)
    torch.testing.assert_close(plain, empty_negative)
    assert (plain - negative).abs().max() > 1e-4
    # at w = 1 there is no unconditional branch, so the negative prompt cannot matter
    torch.testing.assert_close(pipe.sample(["a red circle"], steps=3, seed=0),
                               pipe.sample(["a red circle"], steps=3, seed=0, negative_prompts=["a blue square"]))


def test_guidance_changes_the_sample(pipe):
    one = pipe.sample(["a red circle"], steps=3, guidance=1.0, seed=0)
    seven = pipe.sample(["a red circle"], steps=3, guidance=7.5, seed=0)
    assert (one - seven).abs().max() > 1e-4


def test_img2img_small_strength_stays_near_the_init_latents(pipe):
    g = torch.Generator().manual_seed(2)
    init = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
    z_init = pipe.codec.encode(init)
    near = pipe.sample_latents(["a red circle"], steps=10, strength=0.1, init_images=init, seed=0)
    far = pipe.sample_latents(["a red circle"], steps=10, strength=1.0, init_images=init, seed=0)
    assert (near - z_init).abs().mean() < (far - z_init).abs().mean()
    images = pipe.generate(["a red circle"], steps=10, strength=0.5, init_images=np.zeros((1, 8, 8, 3), np.uint8))
    assert images.shape == (1, 8, 8, 3)


def test_defaults_apply_only_to_what_a_call_leaves_out(pipe):
    fresh = TextToImage(pipe.unet, pipe.text_encoder, pipe.codec, SD, image_size=8)
    assert (fresh.default_steps, fresh.default_guidance) == (50, 1.0)  # a real SD folder's: diffusers' defaults
    fresh.set_defaults(3, 5.0)
    assert (fresh.default_steps, fresh.default_guidance) == (3, 5.0)
    given = fresh.sample(["a red circle"], steps=3, guidance=5.0, seed=0)
    torch.testing.assert_close(fresh.sample(["a red circle"], seed=0), given)  # left out: the defaults
    torch.testing.assert_close(fresh.sample(["a red circle"], steps=3, guidance=1.0, seed=0),  # given: used as is
                               pipe.sample(["a red circle"], steps=3, guidance=1.0, seed=0))
    assert (fresh.sample(["a red circle"], guidance=1.0, seed=0) - given).abs().max() > 1e-4
    assert (fresh.sample(["a red circle"], steps=2, seed=0) - given).abs().max() > 1e-4
    fresh.set_defaults(guidance=1.0)
    assert fresh.default_steps == 3  # None keeps the other one
    with pytest.raises(ValueError, match="default steps"):
        fresh.set_defaults(steps=0)
    with pytest.raises(ValueError, match="guidance must be in"):
        fresh.set_defaults(guidance=0.5)


def test_given_latents_are_used(pipe):
    z = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    a = pipe.sample_latents(["x"], steps=2, latents=z, seed=0)
    b = pipe.sample_latents(["x"], steps=2, latents=z, seed=99)  # the seed draws nothing when latents are given
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompts="a red circle"), "list of strings"),
    (dict(steps=0), "steps"),
    (dict(guidance=0.5), "guidance must be in 1 ... 100"),
    (dict(negative_prompts=["a", "b"]), "negative prompts for 1 prompts"),
    (dict(latents=torch.zeros(1, 4, 8, 8)), "latents must have shape"),
    (dict(init_images=torch.zeros(1, 3, 8, 8), strength=0.0), "strength"),
    (dict(init_images=torch.zeros(1, 3, 16, 16)), "init_images must be"),
    (dict(steps=5000), "steps must be in"),
])
def test_impossible_settings_raise(pipe, kwargs, match):
    prompts = kwargs.pop("prompts", ["a red circle"])
    with pytest.raises(ValueError, match=match):
        pipe.generate(prompts, **{"steps": 2, **kwargs})


def test_check_cfg_passes_solution_fails_stub_and_swap(capsys):
    assert check_cfg(lambda u, c, w: u + w * (c - u))
    assert "all 4 checks passed" in capsys.readouterr().out

    def stub(u, c, w):
        raise NotImplementedError("Exercise: write your solution here")

    with pytest.raises(ExerciseFailed, match="NotImplementedError"):
        check_cfg(stub)
    with pytest.raises(ExerciseFailed, match="eps_uncond \\+ w"):
        check_cfg(lambda u, c, w: c + w * (u - c))  # conditional and unconditional swapped
    with pytest.raises(ExerciseFailed):
        check_cfg(lambda u, c, w: c + w * (c - u))  # w = 1 would not give eps_cond
