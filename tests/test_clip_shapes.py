"""Tests for course.recipes.clip_shapes: the Shapes mini-CLIP, its loss, vocabulary and recipe functions."""

import math
from dataclasses import asdict

import pytest
import torch

from course import zoo
from course.nn import clip_text, mini_clip
from course.nn.clip_text import BOS_ID, EOS_ID
from course.recipes import clip_shapes
from course.world import shapes


def _tiny(**overrides) -> mini_clip.MiniClip:
    torch.manual_seed(0)
    config = mini_clip.MiniClipConfig(image_width=8, embed_dim=16, text_width=16, text_layers=1, text_heads=2,
                                 vocab_ids=clip_shapes.shapes_vocabulary(), **overrides)
    return mini_clip.MiniClip(config)


def test_shapes_vocabulary_covers_every_caption():
    vocab = clip_shapes.shapes_vocabulary()
    assert BOS_ID in vocab and EOS_ID in vocab and list(vocab) == sorted(vocab)
    _, captions, scenes = shapes.sample_batch(300, seed=5)
    ids = clip_text.tokenize(captions + [shapes.caption(s) for s in scenes], max_length=32)["input_ids"]
    assert set(ids.flatten().tolist()) <= set(vocab)
    assert (ids[:, -1] == EOS_ID).all()  # no caption is truncated at 32 tokens


def test_clip_loss_identities():
    e = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    same = torch.nn.functional.normalize(torch.randn(1, 16), dim=-1).expand(8, 16)
    # identical embeddings everywhere: every choice is a coin flip among B, loss = log B
    torch.testing.assert_close(mini_clip.clip_loss(same, same, torch.tensor(10.0)), torch.tensor(math.log(8)))
    # orthogonal matched pairs with a large scale: loss -> 0
    eye = torch.eye(8, 16)
    assert mini_clip.clip_loss(eye, eye, torch.tensor(100.0)) < 1e-6
    # symmetric: swapping images and texts gives the same loss
    f = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    torch.testing.assert_close(mini_clip.clip_loss(e, f, torch.tensor(5.0)), mini_clip.clip_loss(f, e, torch.tensor(5.0)))


def test_model_shapes_and_unit_embeddings():
    model = _tiny()
    x, ids = clip_shapes.clip_batch(0, 4, torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 64, 64) and ids.shape == (4, 32)
    img, txt = model.encode_image(x), model.encode_text(ids)
    assert img.shape == txt.shape == (4, 16)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(txt.norm(dim=1), torch.ones(4))
    loss = model(x, ids)
    loss.backward()
    assert loss.ndim == 0 and model.logit_scale.grad is not None
    torch.testing.assert_close(model.scale(), torch.tensor(1 / 0.07))


def test_unknown_words_share_one_row():
    model = _tiny().eval()
    rows = model.id_to_row[clip_text.tokenize(["a red circle", "a zebra circle"], 8)["input_ids"]]
    assert rows[1, 2] == 0 and rows[0, 2] > 0  # "zebra" is not a Shapes word
    assert model.text_encoder.token_embedding.num_embeddings == len(model.config.vocab_ids) + 1


def test_a_few_steps_learn_and_reload():
    model = _tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    batch = clip_shapes.clip_batch(0, 16, g)
    first = model(*batch).item()
    for _ in range(15):  # fit one batch: the loss must fall
        opt.zero_grad()
        model(*batch).backward()
        opt.step()
    assert model(*batch).item() < first - 0.5
    reloaded = clip_shapes.load_clip_shapes_from(model.state_dict(), asdict(model.config))
    x, ids = batch
    torch.testing.assert_close(reloaded.encode_text(ids), model.eval().encode_text(ids))


def test_retrieval_metric_range_and_card():
    model = _tiny().eval()
    scenes = shapes.sample_scenes(20, seed=1)
    score = clip_shapes.retrieval_top1(model, scenes)
    assert 0.0 <= score <= 1.0
    card = zoo.card("clip-shapes")
    assert card.chapter == "03" and zoo.resolve(card.train) is clip_shapes.train_clip_shapes
    assert zoo.resolve(card.evaluate) is clip_shapes.evaluate_clip_shapes


def test_bad_config():
    with pytest.raises(ValueError, match="BOS"):
        mini_clip.MiniClipConfig(vocab_ids=(1, 2, 3))
    with pytest.raises(ValueError, match="multiple of 8"):
        mini_clip.MiniClipConfig(image_width=12)


def test_binding_captions_and_test():
    scenes = clip_shapes.binding_scenes(12)
    assert len(scenes) == 12 and all(len(s.objects) == 2 and len({o.shape for o in s.objects}) == 2 for s in scenes)
    o1, o2 = scenes[0].objects
    right, swapped, wrong = clip_shapes.binding_captions(scenes[0])
    assert right == f"a {o1.color} {o1.shape} and a {o2.color} {o2.shape}"
    assert swapped == f"a {o2.color} {o1.shape} and a {o1.color} {o2.shape}"
    assert sorted(right.split()) == sorted(swapped.split()) and wrong != right  # a bag of words cannot tell them apart
    assert shapes.parse(right).objects[0].color == o1.color and shapes.parse(swapped).objects[0].color == o2.color
    result = clip_shapes.binding_test(_tiny().eval(), scenes)
    assert set(result) == {"vs_swapped", "vs_wrong_colour"} and all(0.0 <= v <= 1.0 for v in result.values())
    with pytest.raises(ValueError, match="two-object"):
        clip_shapes.binding_captions(shapes.sample_scenes(20, seed=0, max_objects=1)[0])


def test_check_clip_loss_passes_the_solution_and_fails_mistakes():
    from course.exercises.ch03 import check_clip_loss
    from course.exercises.runner import ExerciseFailed

    def solution(image_embeds, text_embeds, logit_scale):
        logits = logit_scale * image_embeds @ text_embeds.T
        labels = torch.arange(len(logits))
        return (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2

    def one_sided(image_embeds, text_embeds, logit_scale):  # images pick captions, never the other way
        logits = logit_scale * image_embeds @ text_embeds.T
        return torch.nn.functional.cross_entropy(logits, torch.arange(len(logits)))

    def no_scale(image_embeds, text_embeds, logit_scale):
        return solution(image_embeds, text_embeds, torch.tensor(1.0))

    def stub(image_embeds, text_embeds, logit_scale):
        raise NotImplementedError("write clip_loss")

    assert check_clip_loss(solution)
    for wrong in (one_sided, no_scale, stub):
        with pytest.raises(ExerciseFailed):
            check_clip_loss(wrong)


def test_retrieval_explorer_draws_a_static_figure(monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.setenv("COURSE_STATIC_WIDGETS", "1")
    fig = clip_shapes.retrieval_explorer(_tiny().eval(), n=8)
    assert isinstance(fig, Figure) and len(fig.axes) >= 4
