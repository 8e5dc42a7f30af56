"""sd3-shapes: the three cached text streams, per-encoder dropout, the rectified-flow loss, the sampler,
the loader's checks, concept bleeding, and the shipped model when it exists."""

import dataclasses

import numpy as np
import pytest
import torch

from course import checkpoints
from course.nn.mmdit import MMDiT
from course.recipes import capstone as C
from course.recipes import sd3_shapes as S
from course.world import shapes

TINY = dataclasses.replace(S.SD3_SHAPES, depth=2, num_heads=2, head_dim=16)  # D = 32


@pytest.fixture(scope="module")
def parts():
    return S._frozen_parts()


@pytest.fixture(scope="module")
def bank(parts, tmp_path_factory):
    text, codec, _ = parts
    return S.build_bank(text, codec, n=64, seed=5, cache=tmp_path_factory.mktemp("bank") / "bank.safetensors")


def _shipped(name):
    try:
        checkpoints.manifest_entry(name)
    except KeyError:
        pytest.skip(f"{name} is not shipped yet")


# ----------------------------------------------------------------------------- text streams and the cache
def test_cached_streams_assemble_into_what_the_pipeline_encodes(parts):
    text = parts[0]
    prompts = ["a red circle", "a picture of a large blue square in the top left and a small green triangle in the "
                               "bottom right"]
    context, pooled = text(prompts)  # the pipeline's own layout (course.pipelines.sd3)
    assert context.shape == (2, S.CLIP_LENGTH + S.MINILM_LENGTH, S.E) and pooled.shape == (2, S.P1 + S.P2)
    c2, p2 = S.assemble(S.encode_streams(text, prompts))
    torch.testing.assert_close(c2, context, atol=0.02, rtol=2e-3)  # float16 cache
    torch.testing.assert_close(p2, pooled, atol=0.01, rtol=2e-3)
    assert (context[:, : S.CLIP_LENGTH, S.D1 + S.D2 :] == 0).all()  # the CLIP channels are zero-padded to E
    assert text.check_prompts(prompts) == []  # the longest captions fit the 24 tokens


def test_the_bank_cache_round_trips_and_is_keyed(parts, tmp_path, monkeypatch):
    text, codec, _ = parts
    cache = tmp_path / "bank.safetensors"
    first = S.build_bank(text, codec, n=16, seed=5, cache=cache)
    assert first.z0.shape == (16, 4, 8, 8) and first.streams["minilm"].dtype == torch.float16
    assert len(set(first.captions)) > 8 and first.captions == S.bank_captions(shapes.sample_scenes(16, 5), 5)
    calls = []
    real = S.encode_streams
    monkeypatch.setattr(S, "encode_streams", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = S.build_bank(text, codec, n=16, seed=5, cache=cache)
    assert calls == []  # read from the cache, nothing re-encoded
    for k in first.streams:
        assert torch.equal(again.streams[k], first.streams[k])
    assert torch.equal(again.z0, first.z0)
    S.build_bank(text, codec, n=8, seed=5, cache=cache)
    assert calls == [1]  # another bank: the cache's key does not match, so it is rebuilt


def test_each_stream_drops_independently_at_sd3s_rate():
    keep = S.drop_mask(200_000, torch.Generator().manual_seed(0)).float()  # (N, 3)
    np.testing.assert_allclose(keep.mean(0).numpy(), 1 - S.CAPTION_DROPOUT, atol=0.004)
    all_dropped = float((keep.sum(1) == 0).float().mean())
    assert abs(all_dropped - S.CAPTION_DROPOUT**3) < 0.003  # independent: CFG's unconditional share ~9.9%
    corr = np.corrcoef(keep.numpy().T)
    assert np.abs(corr - np.eye(3)).max() < 0.01


def test_batches_zero_exactly_the_dropped_streams(bank):
    z0, context, pooled = S.make_batch_fn(bank, caption_dropout=0.5)(0, 64, torch.Generator().manual_seed(3))
    assert z0.shape == (64, 4, 8, 8) and context.shape == (64, 48, S.E) and pooled.shape == (64, S.P1 + S.P2)
    clip_l = context[:, : S.CLIP_LENGTH, : S.D1].abs().sum((1, 2)) > 0
    clip_g = context[:, : S.CLIP_LENGTH, S.D1 : S.D1 + S.D2].abs().sum((1, 2)) > 0
    minilm = context[:, S.CLIP_LENGTH :].abs().sum((1, 2)) > 0
    assert torch.equal(clip_l, pooled[:, : S.P1].abs().sum(1) > 0)  # a stream's states and pooled drop together
    assert torch.equal(clip_g, pooled[:, S.P1 :].abs().sum(1) > 0)
    for kept in (clip_l, clip_g, minilm):
        assert 16 < int(kept.sum()) < 48
    assert not torch.equal(clip_l, minilm)  # not one mask for all three
    _, context, _ = S.make_batch_fn(bank, caption_dropout=0.0)(0, 8, torch.Generator().manual_seed(3))
    assert (context[:, S.CLIP_LENGTH :].abs().sum((1, 2)) > 0).all()


# ----------------------------------------------------------------------------- the loss and training
def test_the_loss_is_rectified_flow_with_logit_normal_t():
    torch.manual_seed(0)
    model = MMDiT(TINY)  # zero-initialised output: v = 0, so the loss is E||eps - x0||^2
    z0 = torch.randn(256, 4, 8, 8)
    batch = (z0, torch.zeros(256, 48, S.E), torch.zeros(256, S.P1 + S.P2))
    loss = S.sd3_loss(model, batch, torch.Generator().manual_seed(0))
    assert abs(float(loss.detach()) - 2.0) < 0.05  # E||eps - x0||^2 per element = 1 + 1 for independent unit Gaussians
    seen = []
    real = model.forward
    model.forward = lambda x, t, c, p, **k: seen.append(t) or real(x, t, c, p, **k)
    S.sd3_loss(model, batch, torch.Generator().manual_seed(1))
    t = seen[0] / S.T_SCALE
    logit = torch.log(t / (1 - t))
    assert abs(float(logit.mean())) < 0.2 and abs(float(logit.std()) - 1.0) < 0.15  # logit-normal(0, 1)


def test_a_tiny_model_learns_on_the_bank(bank):
    from course.train import TrainConfig, fit

    torch.manual_seed(0)
    model = MMDiT(TINY)
    result = fit(model, S.sd3_loss, S.make_batch_fn(bank), TrainConfig(steps=80, batch_size=32, lr=3e-3, warmup_steps=5,
                 ema_decay=None), progress=False)
    first, last = np.mean(result.losses[:10]), np.mean(result.losses[-10:])
    assert last < 0.85 * first, (first, last)


# ----------------------------------------------------------------------------- the sampler and the loader
def _tiny_model(parts, seed=0):
    torch.manual_seed(seed)
    model = MMDiT(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))  # away from the zero init, so text and guidance matter
    text, codec, _ = parts
    return S.SD3Shapes(model.eval(), text, codec)


def test_the_sampler_uses_cfg_against_all_streams_dropped_and_its_defaults(parts):
    pipe = _tiny_model(parts).pipeline()
    assert (pipe.default_steps, pipe.default_guidance) == (S.SAMPLE_STEPS, S.GUIDANCE)
    cond, uncond = pipe.encode_prompts(["a red circle"], None, 3.0)
    assert (uncond[0] == 0).all() and (uncond[1] == 0).all()  # the unconditional model is every stream dropped
    assert pipe.encode_prompts(["a red circle"], None, 1.0)[1] is None
    prompts = ["a red circle", "a blue square and a green triangle"]
    a = pipe.generate(prompts, steps=3, seed=1)  # defaults for the guidance
    assert a.shape == (2, 64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, pipe.generate(prompts, steps=3, seed=1))
    z = {w: pipe.sample_latents(prompts, steps=3, guidance=w, seed=1) for w in (1.0, 4.0)}
    assert not torch.allclose(z[1.0], z[4.0])
    no_minilm = _tiny_model(parts).pipeline(drop=("minilm",))
    assert no_minilm.text_encoder.present == ("clip_l", "clip_g")
    assert not torch.allclose(no_minilm.sample_latents(prompts, steps=3, seed=1), z[4.0])
    with pytest.raises(ValueError, match="streams are"):
        _tiny_model(parts).pipeline(drop=("t5",))


def test_the_loader_rebuilds_and_refuses_parts_it_was_not_trained_with(parts):
    model = _tiny_model(parts)
    tensors = {k: v.clone() for k, v in model.transformer.state_dict().items()}
    config = {"mmdit": dataclasses.asdict(TINY), "parts": parts[2], "sample_steps": 12, "guidance": 2.5}
    loaded = S.load_sd3_shapes_from(tensors, config)
    for k, v in loaded.transformer.state_dict().items():
        assert torch.equal(v, tensors[k])
    pipe = S.sd3_shapes_pipeline(loaded, config)
    assert (pipe.default_steps, pipe.default_guidance) == (12, 2.5)
    for part in (S.CLIP_L, S.MINILM, S.VAE):
        wrong = dict(config, parts={**parts[2], part: "0" * 64})
        with pytest.raises(ValueError, match=f"trained on {part}.*retrain"):
            S.load_sd3_shapes_from(tensors, wrong)
    with pytest.raises(Exception, match="expects"):
        S.load_sd3_shapes_from(tensors, dict(config, mmdit=dataclasses.asdict(dataclasses.replace(TINY, depth=3))))


# ----------------------------------------------------------------------------- concept bleeding
def _two_object_scenes(n=40):
    scenes = [s for s in shapes.sample_scenes(400, 11) if len(s.objects) == 2
              and s.objects[0].color != s.objects[1].color and s.objects[0].shape != s.objects[1].shape]
    return scenes[:n]


def test_concept_bleeding_tells_swapped_and_merged_colours_from_bound_ones():
    scenes = _two_object_scenes()
    prompts = [shapes.caption(s) for s in scenes]
    right = C.concept_bleeding(shapes.render_batch(scenes), prompts)
    assert right["n"] == len(scenes) and right["bound"] >= 0.95 and right["bleeding"] <= 0.05

    def recolour(scene, first, second):
        a, b = scene.objects
        return dataclasses.replace(scene, objects=(dataclasses.replace(a, color=first), dataclasses.replace(b, color=second)))

    swapped = [recolour(s, s.objects[1].color, s.objects[0].color) for s in scenes]
    merged = [recolour(s, s.objects[0].color, s.objects[0].color) for s in scenes]
    out = C.concept_bleeding(shapes.render_batch(swapped), prompts)
    assert out["swapped"] >= 0.95 and out["bound"] <= 0.05 and out["bleeding"] >= 0.95
    out = C.concept_bleeding(shapes.render_batch(merged), prompts)
    assert out["merged"] >= 0.95 and out["swapped"] <= 0.05
    one = C.concept_bleeding(shapes.render_batch(scenes[:2]), ["a red circle", "a blue square"])
    assert one["n"] == 0  # one-object prompts are not eligible
    with pytest.raises(ValueError, match="one prompt per image"):
        C.concept_bleeding(shapes.render_batch(scenes[:2]), prompts[:1])


def test_geneval_categories_read_shapeseval_the_way_geneval_scores():
    from course.world import metrics

    scenes = shapes.sample_scenes(64, 5)
    prompts = [shapes.caption(s) for s in scenes]
    real = C.geneval_categories(metrics.shapes_eval(shapes.render_batch(scenes), prompts))
    assert set(real) == set(C.GENEVAL_CATEGORIES) | {"overall"}
    assert all(v >= 0.95 for v in real.values()), real  # the world's own renders pass every category
    swapped = [dataclasses.replace(s, objects=tuple(dataclasses.replace(o, color=s.objects[1 - i].color)
                                                    for i, o in enumerate(s.objects))) if len(s.objects) == 2 else s
               for s in scenes]
    out = C.geneval_categories(metrics.shapes_eval(shapes.render_batch(swapped), prompts))
    differ = [s for s in scenes if len(s.objects) == 2 and s.objects[0].color != s.objects[1].color
              and s.objects[0].shape != s.objects[1].shape]
    share = len(differ) / sum(len(s.objects) == 2 for s in scenes)
    assert out["color_attribution"] <= 1 - share + 0.05 and out["two_objects"] >= 0.95 and out["colors"] >= 0.95
    short = [metrics.style_prompts([s], "short")[0] for s in scenes]
    assert np.isnan(C.geneval_categories(metrics.shapes_eval(shapes.render_batch(scenes), short))["position"])


def test_the_capstone_cell_scores_every_style_and_counts_parameters():
    pytest.importorskip("safetensors")
    _shipped("sd3-shapes")
    rows = C.capstone_rows("sd3-shapes", 1)
    (cell,) = rows.values()
    assert set(cell) == {"canonical", "paraphrase", "short", "fid", "s_per_image"}
    assert cell["canonical"]["one"]["n"] + cell["canonical"]["two"]["n"] == C.CAPSTONE_N
    assert cell["fid"] > 0 and 0 <= cell["short"]["overall"] <= 1
    assert C.parameter_count("sd3-shapes") == sum(p.numel() for p in S.load().transformer.parameters())


# ----------------------------------------------------------------------------- the shipped model
def test_the_card_and_the_shipped_model():
    from course import zoo

    card = zoo.card("sd3-shapes")
    assert card.storage_dtype == "float16" and card.pipeline.endswith("sd3_shapes_pipeline")
    _shipped("sd3-shapes")
    from course.pipelines.base import load

    pipe = load("sd3-shapes")
    config = checkpoints.manifest_entry("sd3-shapes")["config"]  # the guidance the training run chose on its sweep
    assert (pipe.default_steps, pipe.default_guidance) == (config["sample_steps"], config["guidance"])
    sweep = config["guidance_sweep"]
    assert config["guidance"] == float(max(sweep, key=sweep.get))  # the best full match of the sweep
    images = pipe.generate(["a red circle", "a large blue square in the center"], seed=0)
    from course.world import metrics

    assert metrics.shapes_eval(images, ["a red circle", "a large blue square in the center"]).color >= 0.5


def test_the_prompt_upsampler_keeps_what_the_prompt_says_and_fills_the_rest():
    for i, prompt in enumerate(["a red circle", "a blue square to the left of a green triangle",
                                "a small yellow triangle and a cyan circle in the top left"]):
        long = C.upsample_prompt(prompt, seed=i)
        scene, asked = shapes.parse(long), shapes.parse(prompt)
        assert scene.is_complete and shapes.caption_kind(long) == "full"
        for o, a in zip(scene.objects, asked.objects):
            assert (o.color, o.shape) == (a.color, a.shape)
            assert a.size in (None, o.size) and a.position in (None, o.position)
        if asked.relation:
            assert shapes.relation_holds(asked.relation, scene.objects[0].position, scene.objects[1].position)
    assert len({C.upsample_prompt("a red circle", seed=s) for s in range(20)}) > 5  # the missing parts are sampled


def test_web_captions_leave_out_and_get_wrong_what_alt_text_does():
    scenes = shapes.sample_scenes(2000, 3)
    rng = np.random.default_rng(0)
    captions = [C.web_caption(s, rng) for s in scenes]
    two = [c for c, s in zip(captions, scenes) if len(s.objects) == 2]
    assert 0.25 < np.mean([" and " not in c for c in two]) < 0.45  # the second object left out ~35%
    sized = np.mean([any(w in c.split() for w in shapes.SIZES) for c in captions])
    assert 0.3 < sized < 0.6
    first_colour_right = np.mean([s.objects[0].color in c.split()[:3] for c, s in zip(captions, scenes)])
    assert 0.7 < first_colour_right < 0.85  # left out 15%, wrong 8% of the time
    vocabulary = set(shapes.VOCABULARY)
    assert all(w in vocabulary for c in captions for w in c.split())


def test_the_classifier_recaptions_real_images_mostly_right():
    from course.world import metrics

    scenes = shapes.sample_scenes(96, 8)
    images = shapes.render_batch(scenes)
    captions = C.classifier_captions(images)
    report = metrics.shapes_eval(images, captions)  # do the synthetic captions describe the images?
    assert report.color > 0.9 and report.count > 0.9
    assert report.full_match > 0.5  # the pairing of cells to objects is the recaptioner's own error


def test_capstone_restore_puts_the_record_back_without_the_models_to_re_measure(tmp_path, monkeypatch):
    import json

    record = {"table": {"sd1-shapes@5": {"fid": 1.0}, "sdxl-shapes@5": {"fid": 2.0}},
              "bleeding": {"sd1-shapes": {"n": 1}, "sdxl-shapes": {"n": 2}}, "upsample": {"x": 1}}
    monkeypatch.setattr(C, "RECORD", tmp_path / "capstone.json")
    monkeypatch.setattr(C, "RUN_DIR", tmp_path / "runs" / "capstone")
    monkeypatch.setattr(C.paths, "RUNS_DIR", tmp_path / "runs")
    C.RECORD.write_text(json.dumps(record))
    (tmp_path / "runs" / "capstone").mkdir(parents=True)
    (C.RUN_DIR / "upsample.json").write_text('{"x": 2}')  # a newer run here: kept
    C.restore(("sd1-shapes",))
    assert json.loads((C.RUN_DIR / "table.json").read_text()) == {"sdxl-shapes@5": {"fid": 2.0}}
    assert json.loads((C.RUN_DIR / "bleeding.json").read_text()) == {"sdxl-shapes": {"n": 2}}
    assert json.loads((C.RUN_DIR / "upsample.json").read_text()) == {"x": 2}
    assert not (C.RUN_DIR / "t5drop.json").exists() and not (tmp_path / "runs" / "sd3-shapes-recaption").exists()


def test_capstone_keep_moves_a_models_rows_to_its_variant_label_and_refuses_what_would_lose_rows(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(C, "RUN_DIR", tmp_path)
    label = "sdxl-shapes, paraphrases only"
    (tmp_path / "table.json").write_text(json.dumps({"sdxl-shapes@5": {"fid": 2.0}, "sdxl-shapes@20": {"fid": 1.0},
                                                     "sdxl-shapes+refiner@5": {"fid": 3.0}}))
    (tmp_path / "bleeding.json").write_text(json.dumps({"sdxl-shapes": {"n": 2}}))
    with pytest.raises(KeyError, match="VARIANTS"):
        C.keep("sd1-shapes", label)  # the label is another model's variant
    C.keep("sdxl-shapes", label)
    assert json.loads((tmp_path / "table.json").read_text()) == {
        f"{label}@5": {"fid": 2.0}, f"{label}@20": {"fid": 1.0}, "sdxl-shapes+refiner@5": {"fid": 3.0}}
    assert json.loads((tmp_path / "bleeding.json").read_text()) == {label: {"n": 2}}
    with pytest.raises(ValueError, match="no rows"):
        C.keep("sdxl-shapes", label)  # moved already: nothing of sdxl-shapes left
    (tmp_path / "table.json").write_text(json.dumps({"sdxl-shapes@5": {"fid": 9.0}, f"{label}@5": {"fid": 2.0}}))
    with pytest.raises(ValueError, match="already holds"):
        C.keep("sdxl-shapes", label)  # would overwrite the kept rows
    assert json.loads((tmp_path / "table.json").read_text())[f"{label}@5"] == {"fid": 2.0}
