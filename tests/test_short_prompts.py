"""course.recipes.short_prompts: the four measurements behind chapter 04's short-prompt diagnosis.

The generators here are renderers of the world itself (a perfect model and one that always draws the
wrong colour), so each measure is checked against an answer known in advance.
"""

import numpy as np
import pytest

from course.recipes import sd1_shapes
from course.recipes import short_prompts as S
from course.world import shapes


class Renderer:
    """A 'model' that draws what the prompt says (the rest completed at random), or recolours every object."""

    default_steps = 1

    def __init__(self, recolour: str | None = None):
        self.recolour = recolour

    def generate(self, prompts, *, steps=None, guidance=None, seed=0):
        scenes = []
        for i, p in enumerate(prompts):
            scene = shapes.sample_scenes(1, seed + i)[0] if p == "" else shapes.complete_scene(shapes.parse(p), seed + i)
            if self.recolour:
                scene = shapes.Scene(tuple(shapes.SceneObject(self.recolour, o.shape, o.position, o.size)
                                           for o in scene.objects), scene.relation)
            scenes.append(scene)
        return shapes.render_batch(scenes)


def test_caption_distribution_counts_the_short_captions_the_recipe_writes():
    plain = S.caption_distribution(lambda s, rng: sd1_shapes.training_caption(s, rng, 0.0), n=4000)
    raised = S.caption_distribution(lambda s, rng: sd1_shapes.training_caption(s, rng, 0.25), n=4000)
    assert 0.03 < plain["short"] < 0.08  # the paraphrases alone: 0.3 (no size) x 0.2 (no position) x (no relation)
    assert raised["short"] == pytest.approx(0.25 + 0.75 * plain["short"], abs=0.03)
    assert plain["empty"] == 0.0 and abs(plain["short"] + plain["partial"] + plain["full"] - 1) < 1e-3  # shares rounded to 4 digits


def test_guidance_sweep_scores_a_perfect_model_1_and_a_wrong_colour_0():
    perfect = S.guidance_sweep(Renderer(), n=12, guidances=(1.0, 3.0))
    assert set(perfect) == {"w1", "w3"}
    assert perfect["w3"]["short_full_match"] == perfect["w3"]["canonical_full_match"] == 1.0
    wrong = S.guidance_sweep(Renderer(recolour="red"), n=24, guidances=(1.0,))["w1"]
    assert wrong["short_color"] < 0.5 and wrong["short_shape"] == 1.0 and wrong["short_count"] == 1.0


def test_unconditional_draws_read_the_colours_of_what_the_empty_prompt_gives():
    out = S.unconditional_draws(Renderer(recolour="blue"), n=8)
    assert out["color_blue"] == 1.0 and out["color_red"] == 0.0
    assert 1.0 <= out["objects_per_image"] <= 2.0  # the world's scenes hold one or two objects
    assert sum(out[f"shape_{s}"] for s in shapes.SHAPES) == pytest.approx(1.0, abs=1e-3)


def test_text_neighbours_of_an_encoder_that_spells_the_colour_find_it_and_of_a_blind_one_do_not():
    colours = list(shapes.PALETTE)

    def spelling(texts):  # states that hold the colour word's index, and nothing else: (B, T=2, D=len(PALETTE))
        out = np.zeros((len(texts), 2, len(colours)), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, 0, colours.index(shapes.parse(t).objects[0].color)] = 1.0
            out[i, 1] = 0.01 * (i % 7)  # a little noise that says nothing
        import torch
        return torch.from_numpy(out)

    def blind(texts):
        import torch
        return torch.ones(len(texts), 2, 3) + torch.arange(len(texts)).view(-1, 1, 1) * 1e-3

    seeing = S.text_neighbours(spelling, k=3, n=64)
    assert seeing["short_color"] == 1.0 and seeing["paraphrase_color"] == 1.0
    assert S.text_neighbours(blind, k=3, n=64)["short_color"] < 0.5
    with_pooled = S.text_neighbours(lambda texts: (spelling(texts), blind(texts)[:, 0]), k=3, n=64)  # SDXL's encoders
    assert with_pooled == seeing  # the per-token states are compared, not the pooled vector
