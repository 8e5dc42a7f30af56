"""ShapesEval's detector and scores, and the Fréchet distance behind Shapes-FID."""

import numpy as np
import pytest
import torch

from course.world import metrics, shapes
from course.world.classifiers import ClassifierConfig, FeatureClassifier


def _image(*objects):
    return shapes.render(shapes.Scene(tuple(shapes.SceneObject(*o) for o in objects)))


def test_detect_finds_each_attribute():
    image = _image(("red", "triangle", "top left", "small"), ("cyan", "square", "bottom right", "large"))
    found = {(d.color, d.shape, d.position, d.size) for d in metrics.detect(image)}
    assert found == {("red", "triangle", "top left", "small"), ("cyan", "square", "bottom right", "large")}


def test_real_images_score_full_marks_and_shuffled_captions_fail():
    images, paraphrased, scenes = shapes.sample_batch(300, seed=11)
    canonical = [shapes.caption(s) for s in scenes]
    assert metrics.shapes_eval(images, canonical).full_match >= 0.99
    assert metrics.shapes_eval(images, paraphrased).full_match >= 0.99
    shuffled = [canonical[i] for i in np.random.default_rng(0).permutation(300)]
    assert metrics.shapes_eval(images, shuffled).full_match <= 0.25


def test_detector_survives_blur_and_noise():
    images, _, scenes = shapes.sample_batch(200, seed=12)
    x = shapes.to_tensor(images)
    x = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    x = x + 0.03 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    report = metrics.shapes_eval(shapes.to_images(x), [shapes.caption(s) for s in scenes])
    assert report.full_match >= 0.9  # a 3×3 box blur rounds a 10-pixel square; most must survive


def test_partial_scores_separate_the_failure_kinds():
    image = _image(("red", "square", "top left", "large"), ("blue", "circle", "bottom right", "large"))
    swapped = metrics.score_image(image, "a red circle and a blue square")  # colours on the wrong shapes
    assert (swapped.color, swapped.shape, swapped.binding, swapped.full_match) == (1.0, 1.0, 0.0, False)
    moved = metrics.score_image(image, "a red square in the center and a blue circle in the bottom right")
    assert (moved.binding, moved.position, moved.full_match) == (1.0, 0.5, False)
    missing = metrics.score_image(image, "a red square")
    assert not missing.count and not missing.full_match
    relation = metrics.score_image(image, "a red square above a blue circle")
    assert relation.full_match and relation.position == 1.0
    wrong_relation = metrics.score_image(image, "a red square below a blue circle")
    assert not wrong_relation.full_match and wrong_relation.position == 0.0


def test_verdict_names_what_failed():
    image = _image(("red", "square", "top left", "large"), ("blue", "circle", "bottom right", "large"))
    assert metrics.score_image(image, "a red square and a blue circle").verdict() == "match"
    assert metrics.score_image(image, "a red circle and a blue square").verdict() == "binding"
    assert metrics.score_image(image, "a red square").verdict() == "count (2 found)"
    assert metrics.score_image(image, "a green square in the center").verdict() == "count (2 found), colour, binding, position"


def test_report_splits_by_number_of_objects():
    images, _, scenes = shapes.sample_batch(60, seed=13)
    report = metrics.shapes_eval(images, [shapes.caption(s) for s in scenes])
    parts = report.by_objects()
    assert set(parts) == {1, 2} and parts[1].n + parts[2].n == 60


def test_shapes_eval_rejects_bad_input():
    images, captions, _ = shapes.sample_batch(3, seed=0)
    with pytest.raises(ValueError, match="one prompt per image"):
        metrics.shapes_eval(images, captions[:2])
    with pytest.raises(ValueError, match="uint8 RGB images"):
        metrics.shapes_eval(images.astype(np.float32), captions)


def test_frechet_distance_closed_forms():
    mu, sigma = np.zeros(3), np.eye(3)
    assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-9
    # 1-D: (m1 - m2)^2 + s1^2 + s2^2 - 2 s1 s2 = 1 + 1 + 4 - 4
    assert metrics.frechet_distance(np.zeros(1), np.eye(1), np.ones(1), 4 * np.eye(1)) == pytest.approx(2.0)


def test_fid_is_smaller_between_like_sets():
    torch.manual_seed(0)
    classifier = FeatureClassifier(ClassifierConfig(feature_dim=16))
    real_a = shapes.render_batch(shapes.sample_scenes(64, seed=1))
    real_b = shapes.render_batch(shapes.sample_scenes(64, seed=2))
    one_colour = shapes.render_batch([shapes.Scene((shapes.SceneObject("red", "circle", "center", "large"),))] * 64)
    assert metrics.fid(classifier, real_a, real_b) < metrics.fid(classifier, real_a, one_colour)
    with pytest.raises(ValueError, match="at least 32"):
        metrics.fid(classifier, real_a[:10], real_b)


def test_cut_off_share_and_sharpness_separate_crops_and_blur_from_plain_renders():
    variants = shapes.sample_variants(300, 3)
    plain = np.stack([v.image for v in variants if v.original_size == (64, 64)])
    cropped = np.stack([v.image for v in variants if v.original_size[0] > 64])
    lowres = np.stack([v.image for v in variants if v.original_size[0] < 64])
    assert metrics.cut_off_share(plain) == 0.0  # whole shapes, even those touching the border
    assert metrics.cut_off_share(cropped) > 0.5
    assert np.median(metrics.sharpness(lowres)) < 0.3 * np.median(metrics.sharpness(plain))
    assert metrics.sharpness(plain).shape == (len(plain),)


def test_is_cut_off_reads_the_box():
    whole = metrics.Detection("red", "square", "top left", "large", 324, (0, 0, 18, 18))
    cut = metrics.Detection("red", "square", "top left", "large", 180, (0, 0, 10, 18))
    inner = metrics.Detection("red", "square", "center", "large", 180, (20, 20, 30, 38))
    assert not metrics.is_cut_off(whole, 64) and metrics.is_cut_off(cut, 64) and not metrics.is_cut_off(inner, 64)
    with pytest.raises(ValueError, match="square uint8 RGB"):
        metrics.sharpness(np.zeros((2, 64, 64, 3), dtype=np.float32))


def test_prompt_styles_describe_the_same_scenes():
    scenes = shapes.sample_scenes(64, 11)
    canonical, paraphrase, short = (metrics.style_prompts(scenes, s) for s in metrics.PROMPT_STYLES)
    assert canonical == [shapes.caption(s) for s in scenes]
    assert paraphrase == metrics.style_prompts(scenes, "paraphrase")  # seeded
    assert paraphrase != metrics.style_prompts(scenes, "paraphrase", seed=1)
    assert paraphrase != canonical and {shapes.caption_kind(p) for p in paraphrase} >= {"partial", "full"}
    for scene, p in zip(scenes, short):
        assert [(o.color, o.shape) for o in shapes.parse(p).objects] == [(o.color, o.shape) for o in scene.objects]
    with pytest.raises(ValueError, match="prompt style"):
        metrics.style_prompts(scenes, "long")


def test_prompt_style_eval_scores_real_renders_fully_and_fails_wrong_colours():
    scenes = shapes.sample_scenes(48, 12)
    render = lambda prompts: shapes.render_batch(scenes)  # noqa: E731 - a perfect model of these scenes
    table = metrics.style_table(metrics.prompt_style_eval(render, scenes))
    for style in metrics.PROMPT_STYLES:
        for group in ("one", "two"):
            assert table[f"style_{style}_{group}_full_match"] >= 0.99 and table[f"style_{style}_{group}_n"] > 0
    recoloured = [shapes.Scene(tuple(shapes.SceneObject("red" if o.color != "red" else "blue", o.shape, o.position,
                                                        o.size, o.offset) for o in s.objects)) for s in scenes]
    wrong = metrics.style_table(metrics.prompt_style_eval(lambda p: shapes.render_batch(recoloured), scenes, ("short",)))
    assert wrong["style_short_one_full_match"] == 0.0 and wrong["style_short_one_color"] == 0.0
    assert wrong["style_short_one_shape"] == 1.0  # the shapes are right: the attribute breakdown says what failed


def test_caption_shares_count_what_captions_leave_out():
    caps = ["", "a red circle", "a large red circle in the center", "a red circle in the center",
            "a red circle to the left of a blue square", "a blue square and a red circle"]
    shares = metrics.caption_shares(caps)
    assert shares["empty"] == round(1 / 6, 4) and shares["short"] == round(2 / 6, 4)
    assert shares["full"] == round(1 / 6, 4) and shares["partial"] == round(2 / 6, 4)
    assert shares["relation"] == round(1 / 6, 4) and shares["short_one"] == round(1 / 3, 4)
    assert shares["short_two"] == 0.5
