"""The Shapes world: determinism, geometry, the caption grammar and its parser, variants, toys."""

import numpy as np
import pytest

from course.world import shapes, toys


def test_public_surface():
    assert len(shapes.PALETTE) >= 6 and all(len(rgb) == 3 for rgb in shapes.PALETTE.values())
    assert {"circle", "square", "triangle"} <= set(shapes.SHAPES)
    assert shapes.POSITIONS == ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
    assert set(shapes.SIZES) == {"small", "large"}
    assert len(shapes.BACKGROUND) == 3


def test_palette_colours_are_well_separated():
    colours = np.array([*shapes.PALETTE.values(), shapes.BACKGROUND], dtype=float)
    dist = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert dist[~np.eye(len(colours), dtype=bool)].min() > 100


def test_scenes_are_deterministic_and_seed_dependent():
    assert shapes.sample_scenes(50, seed=3) == shapes.sample_scenes(50, seed=3)
    assert shapes.sample_scenes(50, seed=3) != shapes.sample_scenes(50, seed=4)
    a = shapes.render_batch(shapes.sample_scenes(20, seed=3))
    assert np.array_equal(a, shapes.render_batch(shapes.sample_scenes(20, seed=3)))


def test_render_shape_dtype_and_colours():
    scene = shapes.Scene((shapes.SceneObject("red", "circle", "center", "large"),))
    image = shapes.render(scene)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert tuple(image[0, 0]) == shapes.BACKGROUND and tuple(image[32, 32]) == shapes.PALETTE["red"]
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert colours == {shapes.BACKGROUND, shapes.PALETTE["red"]}


@pytest.mark.parametrize("shape, fill", [("square", 1.0), ("circle", np.pi / 4), ("triangle", 0.5)])
def test_shape_areas_match_geometry(shape, fill):
    image = shapes.render(shapes.Scene((shapes.SceneObject("blue", shape, "center", "large"),)))
    area = (image == shapes.PALETTE["blue"]).all(-1).sum()
    assert abs(area / shapes.SIZES["large"] ** 2 - fill) < 0.06


def test_position_word_is_the_cell_of_the_centre():
    for position in shapes.POSITIONS:
        image = shapes.render(shapes.Scene((shapes.SceneObject("green", "square", position, "small"),)))
        ys, xs = np.nonzero((image == shapes.PALETTE["green"]).all(-1))
        cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
        assert shapes.POSITIONS[int(cy // (64 / 3)) * 3 + int(cx // (64 / 3))] == position


def test_two_objects_never_touch():
    for scene, image in zip(shapes.sample_scenes(300, seed=7, p_two=1.0), shapes.render_batch(shapes.sample_scenes(300, seed=7, p_two=1.0))):
        a, b = (np.nonzero((image == shapes.PALETTE[o.color]).all(-1)) for o in scene.objects)
        gap = np.abs(a[0][:, None] - b[0][None]) + np.abs(a[1][:, None] - b[1][None])
        assert gap.min() > 1
        assert scene.objects[0].color != scene.objects[1].color


def test_canonical_caption_round_trips():
    for scene in shapes.sample_scenes(200, seed=1):
        parsed = shapes.parse(shapes.caption(scene))
        assert [(o.color, o.shape, o.position, o.size) for o in parsed.objects] == [
            (o.color, o.shape, o.position, o.size) for o in scene.objects
        ]


def test_paraphrases_parse_to_what_they_state():
    rng = np.random.default_rng(0)
    seen = set()
    for scene in shapes.sample_scenes(1000, seed=2):
        text = shapes.caption(scene, rng)
        seen.add(text.split()[0] + (" relation" if shapes.parse(text).relation else ""))
        parsed = shapes.parse(text)
        for p, o in zip(parsed.objects, scene.objects):
            assert (p.color, p.shape) == (o.color, o.shape)
            assert p.position in (None, o.position) and p.size in (None, o.size)
        if parsed.relation:
            assert shapes.relation_holds(parsed.relation, scene.objects[0].position, scene.objects[1].position)
    assert {"a", "an", "a relation"} <= seen  # prefixes ("an image of") and relations both occur


@pytest.mark.parametrize("text, expected", [
    ("a red circle", [("red", "circle", None, None)]),
    ("A big Blue square in the middle.", [("blue", "square", "center", "large")]),
    ("an image of a little cyan triangle at the top", [("cyan", "triangle", "top", "small")]),
    ("a yellow triangle to the left of a green circle", [("yellow", "triangle", None, None), ("green", "circle", None, None)]),
    ("a small purple square on the right and a large red circle in the bottom left",
     [("purple", "square", "right", "small"), ("red", "circle", "bottom left", "large")]),
])
def test_parse_examples(text, expected):
    scene = shapes.parse(text)
    assert [(o.color, o.shape, o.position, o.size) for o in scene.objects] == expected


def test_parse_names_the_unknown_word_and_lists_the_vocabulary():
    with pytest.raises(ValueError, match=r"unknown word 'pink'.*vocabulary is: .*red"):
        shapes.parse("a pink circle")
    with pytest.raises(ValueError, match="COLOUR SHAPE"):
        shapes.parse("a circle red")
    with pytest.raises(ValueError, match="at most two objects"):
        shapes.parse("a red circle and a blue square and a green triangle")


def test_unknown_attribute_is_refused():
    with pytest.raises(ValueError, match="unknown colour 'pink'"):
        shapes.SceneObject("pink", "circle")
    with pytest.raises(ValueError, match="needs a position and a size"):
        shapes.render(shapes.parse("a red circle"))


def test_complete_scene_respects_the_relation():
    scene = shapes.parse("a red circle above a blue square")
    for seed in range(20):
        full = shapes.complete_scene(scene, seed)
        assert full.is_complete
        assert shapes.relation_holds("above", full.objects[0].position, full.objects[1].position)


def test_tensor_round_trip():
    images = shapes.render_batch(shapes.sample_scenes(4, seed=0))
    x = shapes.to_tensor(images)
    assert x.shape == (4, 3, 64, 64) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(shapes.to_images(x), images)
    assert shapes.to_tensor(images, size=32).shape == (4, 3, 32, 32)


def test_variants_record_sdxl_conditioning():
    variants = shapes.sample_variants(200, seed=0)
    kinds = {("crop" if v.crop_top_left != (0, 0) or v.original_size[0] > 64 else "low" if v.original_size[0] < 64 else "plain") for v in variants}
    assert kinds == {"crop", "low", "plain"}
    for v in variants:
        assert v.image.shape == (64, 64, 3) and v.image.dtype == np.uint8
        top, left = v.crop_top_left
        assert 0 <= top <= v.original_size[0] - 64 or v.original_size[0] < 64
    cropped = [v for v in variants if v.original_size[0] > 64]
    plain_pixels = [(v.image != shapes.BACKGROUND).any(-1).sum() for v in cropped]
    assert min(plain_pixels) >= 0  # a crop may miss every shape; it must still be a valid image


@pytest.mark.parametrize("name", toys.TOYS)
def test_toys(name):
    points = toys.toy_2d(name, 500, seed=0)
    assert points.shape == (500, 2) and points.dtype == np.float32
    assert np.abs(points).max() < 4
    assert np.array_equal(points, toys.toy_2d(name, 500, seed=0))


def test_checkerboard_only_dark_squares():
    points = toys.toy_2d("checkerboard", 2000) / 1.5 + 2.0  # back to board coordinates [0, 4)
    cells = np.floor(points).astype(int)
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()


def test_unknown_toy():
    with pytest.raises(ValueError, match="choose one of: moons, checkerboard, rings"):
        toys.toy_2d("spirals", 10)


@pytest.mark.parametrize("resolution", [32, 64, 96, (48, 80), (128, 32)])
def test_render_batch_draws_what_render_draws(resolution):
    scenes = shapes.sample_scenes(100, seed=9)
    scenes.append(shapes.Scene((shapes.SceneObject("red", "triangle", "top left", "large", (-12.0, -12.0)),)))  # partly outside
    expected = np.stack([shapes.render(s, resolution) for s in scenes])
    assert np.array_equal(shapes.render_batch(scenes, resolution), expected)


@pytest.mark.parametrize("size", [(48, 80), (80, 48), (32, 128)])
def test_buckets_stretch_the_grid_and_scale_shapes_by_the_shorter_side(size):
    H, W = size
    for position in shapes.POSITIONS:
        image = shapes.render(shapes.Scene((shapes.SceneObject("green", "square", position, "large"),)), size)
        assert image.shape == (H, W, 3)
        ys, xs = np.nonzero((image == shapes.PALETTE["green"]).all(-1))
        cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
        assert shapes.POSITIONS[int(cy // (H / 3)) * 3 + int(cx // (W / 3))] == position
        assert ys.max() - ys.min() + 1 == round(shapes.SIZES["large"] * min(H, W) / 64)  # side scales with the short side
    with pytest.raises(ValueError, match="height, width"):
        shapes.render(shapes.sample_scenes(1)[0], (48, 80, 3))


def test_variants_at_a_bucket():
    variants = shapes.sample_variants(120, seed=1, size=(48, 80))
    assert all(v.image.shape == (48, 80, 3) for v in variants)
    for v in variants:
        h, w = v.original_size
        assert abs(w / h - 80 / 48) < 0.05  # the original keeps the bucket's aspect ratio
        assert 0 <= v.crop_top_left[0] <= max(h - 48, 0) and 0 <= v.crop_top_left[1] <= max(w - 80, 0)
    assert {v.original_size[0] > 48 for v in variants} == {True, False}
    with pytest.raises(ValueError, match="shares"):
        shapes.sample_variants(4, p_crop=0.8, p_lowres=0.5)


def test_short_captions_state_colour_and_shape_only():
    scenes = shapes.sample_scenes(200, 3)
    for scene in scenes:
        text = shapes.short_caption(scene)
        parsed = shapes.parse(text)
        assert [(o.color, o.shape) for o in parsed.objects] == [(o.color, o.shape) for o in scene.objects]
        assert all(o.size is None and o.position is None for o in parsed.objects) and parsed.relation is None
        assert shapes.caption_kind(text) == "short"
        assert shapes.caption_kind(shapes.caption(scene)) == "full"
    assert shapes.short_caption(shapes.parse("a large red circle in the center and a blue square")) == \
        "a red circle and a blue square"


@pytest.mark.parametrize("text, kind", [
    ("a red circle", "short"), ("an image of a red circle and a blue square", "short"),
    ("a large red circle", "partial"), ("a red circle in the center", "partial"),
    ("a red circle to the left of a blue square", "partial"), ("a small red circle to the left of a big blue square", "partial"),
    ("a big red circle at the top and a little blue square in the middle", "full"),
])
def test_caption_kind(text, kind):
    assert shapes.caption_kind(text) == kind
