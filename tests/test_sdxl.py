"""course.pipelines.sdxl: SDXL's conditioning (time ids, two text encoders, pooled vector), pipeline, loader, parity."""

import json
import shutil

import pytest
import torch

from course.nn.clip_text import EOS_ID, from_transformers
from course.nn.unet import UNet, config_from_diffusers
from course.pipelines import sdxl
from course.pipelines.sd1 import PromptEncoder, schedule_from_folder

PROMPTS = ["a red circle in the top left", "a large blue square and a small green triangle"]


# ----------------------------------------------------------------------------- the U-Net


@pytest.mark.parametrize("config", [
    None,  # SDXL's shape: plain top level, then transformer depth 1 and 2, linear projections
    dict(sdxl.SDXL_UNET_PARITY_CONFIG, use_linear_projection=False, layers_per_block=(1, 2, 1),
         transformer_layers_per_block=(1, 3, 1), down_block_types=("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",),
         up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 2),
])
def test_sdxl_unet_parity(config):
    assert sdxl.parity_sdxl_unet(config, seed=1) <= 1e-4


def test_time_ids_change_the_unet_output():
    """The parity above covers the ids only if they matter: swapping h and w of the original size changes eps."""
    torch.manual_seed(0)
    unet = UNet(config_from_diffusers(sdxl.SDXL_UNET_PARITY_CONFIG)).eval()
    x, cond, pooled = torch.randn(1, 4, 16, 16), torch.randn(1, 5, 40), torch.randn(1, 24)
    ids = sdxl.time_ids((1024, 768), (0, 64), (512, 512))
    swapped = sdxl.time_ids((768, 1024), (0, 64), (512, 512))
    with torch.no_grad():
        a = unet(x, 500, cond, {"text_embeds": pooled, "time_ids": ids})
        b = unet(x, 500, cond, {"text_embeds": pooled, "time_ids": swapped})
    assert (a - b).abs().max() > 1e-4


# ----------------------------------------------------------------------------- micro-conditioning


def test_time_ids_order_shape_and_broadcast():
    ids = sdxl.time_ids((1024, 768), (16, 32), (512, 640))
    assert ids.dtype == torch.float32
    torch.testing.assert_close(ids, torch.tensor([[1024.0, 768, 16, 32, 512, 640]]))
    batch = sdxl.time_ids([(64, 64), (128, 96)], (0, 0), torch.tensor([32, 32]))  # one pair broadcasts to the batch
    torch.testing.assert_close(batch, torch.tensor([[64.0, 64, 0, 0, 32, 32], [128, 96, 0, 0, 32, 32]]))


@pytest.mark.parametrize("args, match", [
    (((1024, 1024), (-1, 0), (1024, 1024)), "crop_top_left must hold whole numbers of pixels >= 0"),
    (((0, 1024), (0, 0), (1024, 1024)), "original_size must hold whole numbers of pixels >= 1"),
    (((1024, 1024), (0, 0), (1024, 1024, 3)), "target_size must be a pair"),
    (((1024,), (0, 0), (1024, 1024)), "original_size must be a pair"),
    (((1024.5, 1024), (0, 0), (1024, 1024)), "whole numbers"),
    ((((8, 8), (8, 8)), ((0, 0),) * 3, (8, 8)), "batches of sizes and crops must agree"),
])
def test_time_ids_reject_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        sdxl.time_ids(*args)


# ----------------------------------------------------------------------------- two text encoders


@pytest.fixture(scope="module")
def hf_text():
    """Tiny transformers CLIPTextModel (width 32) and CLIPTextModelWithProjection (width 48, P = 24), perturbed."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    first = CLIPTextModel(CLIPTextConfig(**sdxl.SDXL_PARITY_CONFIG["text_encoder"])).eval()
    second = CLIPTextModelWithProjection(CLIPTextConfig(**sdxl.SDXL_PARITY_CONFIG["text_encoder_2"])).eval()
    with torch.no_grad():
        for p in [*first.parameters(), *second.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
    return first, second


def test_openclip_padding_comes_after_the_eos():
    from course.nn.clip_text import tokenize

    ids = tokenize(["a red circle", ""], 8, pad_token_id=0)["input_ids"]
    assert ids.tolist() == [[49406, 320, 736, 7117, EOS_ID, 0, 0, 0], [49406, EOS_ID, 0, 0, 0, 0, 0, 0]]
    assert (tokenize(["a red circle"], 8)["input_ids"][0, 4:] == EOS_ID).all()  # SD 1.x's padding by default


def test_dual_prompt_encoder_matches_transformers(hf_text):
    import copy

    from course.nn.clip_text import clip_tokenizer

    first, second = hf_text
    t1, t2 = from_transformers(first), from_transformers(second)
    enc = sdxl.DualPromptEncoder(PromptEncoder(t1, 77), PromptEncoder(t2, 77, pad_token_id=0))
    prompts = PROMPTS + [""]
    cond, pooled = enc(prompts)
    assert cond.shape == (3, 77, 32 + 48) and enc.width == 80
    assert pooled.shape == (3, 24) and enc.pooled_width == 24
    assert not any(p.requires_grad for p in enc.parameters())
    # as diffusers' encode_prompt: each tokenizer, hidden_states[-2] of each, text_embeds of the second
    tok_2 = copy.deepcopy(clip_tokenizer())
    tok_2.pad_token = "!"
    kw = dict(padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out_1 = first(clip_tokenizer()(prompts, **kw).input_ids, output_hidden_states=True)
        out_2 = second(tok_2(prompts, **kw).input_ids, output_hidden_states=True)
    torch.testing.assert_close(cond, torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], dim=-1))
    torch.testing.assert_close(pooled, out_2.text_embeds)
    assert (out_1.hidden_states[-2] - out_1.last_hidden_state).abs().max() > 1e-3  # penultimate is not the last state


def test_dual_prompt_encoder_checks_its_parts(hf_text):
    first, second = hf_text
    t1, t2 = from_transformers(first), from_transformers(second)
    with pytest.raises(ValueError, match="text projection"):
        sdxl.DualPromptEncoder(PromptEncoder(t2, 77), PromptEncoder(t1, 77))
    with pytest.raises(ValueError, match="context lengths 77 and 32"):
        sdxl.DualPromptEncoder(PromptEncoder(t1, 77), PromptEncoder(t2, 32))


# ----------------------------------------------------------------------------- pipeline and loader


def test_sdxl_pipeline_parity_and_what_it_covers(tmp_path):
    """StableDiffusionXLPipeline saved and read back: the same images; each SDXL input changes them."""
    assert sdxl.parity_sdxl_pipeline(folder=tmp_path) <= 1e-4
    ours = sdxl.load_diffusers_sdxl_folder(tmp_path)
    assert ours.force_zeros_for_empty_prompt and [e.pad_token_id for e in ours.text_encoder.encoders] == [EOS_ID, 0]
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(steps=3, guidance=4.0, latents=z)

    def diff(a, b):
        return (ours.sample_latents(PROMPTS, **kw, **a) - ours.sample_latents(PROMPTS, **kw, **b)).abs().max()

    assert diff({}, dict(negative_prompts=["", ""])) > 1e-4  # force_zeros: no negatives = zeros, not ""
    assert diff(dict(original_size=(16, 16)), dict(original_size=(64, 48))) > 1e-4
    assert diff(dict(crop_top_left=(0, 0)), dict(crop_top_left=(8, 0))) > 1e-4
    ours.force_zeros_for_empty_prompt = False
    assert diff({}, dict(negative_prompts=["", ""])) == 0
    base = ours.sample_latents(PROMPTS, **kw)
    ours.text_encoder.encoders[1].pad_token_id = EOS_ID  # the second tokenizer's "!" padding matters
    assert (ours.sample_latents(PROMPTS, **kw) - base).abs().max() > 1e-4

    images = ours.generate(PROMPTS, steps=2, guidance=2.0, original_size=[(8, 8), (32, 16)], target_size=(16, 16))
    assert images.shape == (2, 16, 16, 3) and images.dtype.name == "uint8"
    with pytest.raises(ValueError, match="3 sizes/crops for 2 prompts"):
        ours.generate(PROMPTS, steps=2, original_size=[(8, 8)] * 3)

    shutil.rmtree(tmp_path / "text_encoder_2")
    with pytest.raises(FileNotFoundError, match="text_encoder_2"):
        sdxl.load_diffusers_sdxl_folder(tmp_path)


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        sdxl.load_diffusers_sdxl_folder(tmp_path)
    index = {p: ["diffusers", "X"] for p in sdxl.SDXL_PARTS} | {"text_encoder_2": [None, None]}  # as a refiner's
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="no 'text_encoder_2'"):
        sdxl.load_diffusers_sdxl_folder(tmp_path)


def test_sdxl_euler_scheduler_config_is_sampled_with_ddim(tmp_path):
    """SDXL ships an EulerDiscreteScheduler: the loader keeps its betas and SD's DDIM settings."""
    from diffusers import EulerDiscreteScheduler

    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                           timestep_spacing="leading").save_config(tmp_path)
    schedule, sampler = schedule_from_folder(tmp_path)
    assert (schedule.beta_schedule, schedule.beta_end, schedule.steps_offset, sampler) == ("scaled_linear", 0.012, 1, "euler")
    assert not schedule.clip_sample and not schedule.set_alpha_to_one
    EulerDiscreteScheduler(use_karras_sigmas=True).save_config(tmp_path)
    with pytest.raises(NotImplementedError, match="use_karras_sigmas"):
        schedule_from_folder(tmp_path)


def test_sdxl_pipeline_parity_with_its_own_euler_scheduler(tmp_path):
    euler = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading")
    assert sdxl.parity_sdxl_pipeline(dict(scheduler_class="EulerDiscreteScheduler", scheduler=euler), folder=tmp_path) <= 1e-4
    assert sdxl.load_diffusers_sdxl_folder(tmp_path).sampler == "euler"


def test_pipeline_rejects_a_unet_without_text_time(hf_text):
    from course.nn.codec import LatentCodec
    from course.nn.vae import VAE, VAEConfig

    first, second = hf_text
    t1, t2 = from_transformers(first), from_transformers(second)
    enc = sdxl.DualPromptEncoder(PromptEncoder(t1, 77), PromptEncoder(t2, 77))
    codec = LatentCodec(VAE(VAEConfig(block_out_channels=(8, 8), norm_num_groups=4)), torch.zeros(4), torch.ones(4))
    cfg = dict(sdxl.SDXL_PARITY_CONFIG["unet"])
    with pytest.raises(ValueError, match="text_time"):
        sdxl.SDXLTextToImage(UNet(config_from_diffusers({**cfg, "addition_embed_type": None})), enc, codec, None, 16)
    with pytest.raises(ValueError, match="cross_attention_dim 64 must equal D1 \\+ D2 = 80"):
        sdxl.SDXLTextToImage(UNet(config_from_diffusers({**cfg, "cross_attention_dim": 64})), enc, codec, None, 16)
    with pytest.raises(ValueError, match="P \\+ 6 \\* addition_time_embed_dim = 72"):
        sdxl.SDXLTextToImage(UNet(config_from_diffusers({**cfg, "projection_class_embeddings_input_dim": 80})),
                             enc, codec, None, 16)


# ----------------------------------------------------------------------------- the real models' sizes


def test_meta_parameter_counts():
    counts = sdxl.count_parameters_meta()
    assert 2.5e9 < counts["sdxl_unet"] < 2.7e9  # "2.6B" (Podell et al. 2023, Tab. 1)
    assert abs(counts["sdxl_text_encoders"] / 817e6 - 1) < 0.02  # "817M" for both text encoders
    assert abs(counts["sd15_unet"] / 860e6 - 1) < 0.01
    assert 2.8 < counts["sdxl_over_sd15_unet"] < 3.2
    for name in ("sdxl_unet", "sd15_unet", "sdxl_text_encoder", "sdxl_text_encoder_2"):
        assert counts[f"course_{name}"] == counts[name], name  # the course's modules have the same parameters
