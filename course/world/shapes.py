"""The Shapes world: a captioned image world that the course makes itself, deterministically.

Each image is 64×64 RGB with one or two solid, upright, axis-aligned shapes on a plain
background. A scene lists its objects (colour, shape, position, size); `render` draws it,
`caption` describes it in words from a small grammar with paraphrases, and `parse` reads a
caption back into the scene it describes. Nothing is downloaded: the same seed gives the same
images on every machine.

Geometry. The image is split into a 3×3 grid of cells; a position word names the cell that
holds the shape's centre ("top left" ... "bottom right"). A shape of size s is s pixels wide and
s pixels tall (a circle of diameter s, a square of side s, an upright isosceles triangle with
base s and height s); its centre is the centre of its bounding box. Two objects never share a
cell and, with the sizes and jitter below, never touch, so each stays a separate blob.

Also here: the variants that chapter 05 needs (random crops that cut shapes at the border, and
low-resolution originals upsampled, each with SDXL's size and crop conditioning) and the 2-D
toy sets (moons, checkerboard, rings) for the chapters that plot trajectories.

Shapes: images are numpy uint8 arrays (B, H, W, 3); `to_tensor` gives float (B, 3, H, W) in
[-1, 1] for the models.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SIZE = 64
GRID = 3  # the image is a GRID × GRID grid of cells

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45),
    "green": (45, 175, 70),
    "blue": (45, 95, 225),
    "yellow": (240, 205, 35),
    "purple": (150, 65, 205),
    "cyan": (40, 200, 215),
}
BACKGROUND: tuple[int, int, int] = (245, 243, 238)  # off-white
DARK_BACKGROUND: tuple[int, int, int] = (28, 30, 36)  # chapter 05's offset-noise variant

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # index i is grid cell (row, col) = divmod(i, 3)
SIZES: dict[str, int] = {"small": 10, "large": 18}  # side of the bounding box, in pixels at 64×64
JITTER = 1.5  # max offset of a shape's centre from its cell's centre, in pixels at 64×64
_SHAPE_SET = frozenset(SHAPES)
_POSITION_SET = frozenset(POSITIONS) | {None}
_SIZE_SET = frozenset(SIZES) | {None}
RELATIONS: dict[str, str] = {  # words -> relation of the first object to the second
    "to the left of": "left of",
    "to the right of": "right of",
    "above": "above",
    "below": "below",
}


@dataclass(frozen=True)
class SceneObject:
    """One shape. `position` and `size` may be None in a parsed caption that leaves them out."""

    color: str  # a key of PALETTE
    shape: str  # one of SHAPES
    position: str | None = None  # one of POSITIONS
    size: str | None = None  # "small" or "large"
    offset: tuple[float, float] = (0.0, 0.0)  # (dy, dx) jitter from the cell centre, pixels at 64×64

    def __post_init__(self):
        if self.color in PALETTE and self.shape in _SHAPE_SET and self.position in _POSITION_SET and self.size in _SIZE_SET:
            return  # the common case, checked in one go (sample_scenes makes thousands per batch)
        _check_word(self.color, PALETTE, "colour")
        _check_word(self.shape, SHAPES, "shape")
        if self.position is not None:
            _check_word(self.position, POSITIONS, "position")
        if self.size is not None:
            _check_word(self.size, SIZES, "size")


@dataclass(frozen=True)
class Scene:
    """A list of objects; `relation` (if any) says where objects[0] is relative to objects[1]."""

    objects: tuple[SceneObject, ...]
    relation: str | None = None  # one of RELATIONS' values, only with two objects

    def __post_init__(self):
        if not 1 <= len(self.objects) <= 2:
            raise ValueError(f"a scene holds one or two objects, got {len(self.objects)}")
        if self.relation is not None:
            _check_word(self.relation, tuple(RELATIONS.values()), "relation")
            if len(self.objects) != 2:
                raise ValueError("a relation needs exactly two objects")

    @property
    def is_complete(self) -> bool:
        """True when every object has a position and a size, so the scene can be rendered."""
        return all(o.position is not None and o.size is not None for o in self.objects)


def _check_word(word, allowed, kind):
    if word not in allowed:
        raise ValueError(f"unknown {kind} {word!r}; choose one of: {', '.join(allowed)}")


def cell_of(position: str) -> tuple[int, int]:
    """(row, col) of a position word's grid cell."""
    return divmod(POSITIONS.index(position), GRID)


def position_at(y: float, x: float, resolution: int = IMAGE_SIZE) -> str:
    """The position word of the grid cell that holds pixel coordinates (y, x) (0 = top / left edge)."""
    if not (0 <= y < resolution and 0 <= x < resolution):
        raise ValueError(f"({y}, {x}) lies outside a {resolution}×{resolution} image")
    cell = resolution / GRID
    return POSITIONS[int(y // cell) * GRID + int(x // cell)]


def relation_holds(relation: str, first: str, second: str) -> bool:
    """Whether `first` position is `relation` ("left of", ...) `second` position, by grid cell."""
    (r0, c0), (r1, c1) = cell_of(first), cell_of(second)
    return {"left of": c0 < c1, "right of": c0 > c1, "above": r0 < r1, "below": r0 > r1}[relation]


# ----------------------------------------------------------------------------- sampling scenes


def sample_scenes(n: int, seed: int = 0, *, max_objects: int = 2, p_two: float = 0.5) -> list[Scene]:
    """Draw `n` random complete scenes, deterministically from `seed`.

    Two-object scenes use two different colours and two different cells.

    Args:
        n: number of scenes.
        seed: the same seed gives the same scenes.
        max_objects: 1 or 2.
        p_two: probability of a two-object scene when max_objects == 2.

    Returns:
        a list of `n` Scenes with positions, sizes and jitter filled in.
    """
    if max_objects not in (1, 2):
        raise ValueError(f"max_objects must be 1 or 2, got {max_objects}")
    rng = np.random.default_rng(seed)
    two = rng.random(n) < (p_two if max_objects == 2 else 0.0)
    colors = np.argsort(rng.random((n, len(PALETTE))), axis=1)[:, :2]  # two distinct colours
    cells = np.argsort(rng.random((n, len(POSITIONS))), axis=1)[:, :2]  # two distinct cells
    shapes = rng.integers(0, len(SHAPES), (n, 2))
    sizes = rng.integers(0, len(SIZES), (n, 2))
    offsets = rng.uniform(-JITTER, JITTER, (n, 2, 2)).round(1)
    color_names, size_names = list(PALETTE), list(SIZES)
    scenes = []
    for i in range(n):
        objs = tuple(
            SceneObject(
                color_names[colors[i, k]], SHAPES[shapes[i, k]], POSITIONS[cells[i, k]],
                size_names[sizes[i, k]], (float(offsets[i, k, 0]), float(offsets[i, k, 1])),
            )
            for k in range(2 if two[i] else 1)
        )
        scenes.append(Scene(objs))
    return scenes


# ----------------------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=256)
def _stamp(shape: str, side: int) -> np.ndarray:
    """Boolean mask (side, side) of a shape filling its bounding box, sampled at pixel centres."""
    c = (np.arange(side) + 0.5) / side  # pixel centres in [0, 1]
    y, x = np.meshgrid(c, c, indexing="ij")
    if shape == "circle":
        return (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.25
    if shape == "square":
        return np.ones((side, side), dtype=bool)
    if shape == "triangle":  # apex at the top centre, base along the bottom
        return np.abs(x - 0.5) <= 0.5 * y
    raise ValueError(f"unknown shape {shape!r}; choose one of: {', '.join(SHAPES)}")


def _hw(resolution: int | tuple[int, int]) -> tuple[int, int]:
    """A side, or an (height, width) pair -> (H, W), checked."""
    hw = (resolution, resolution) if isinstance(resolution, (int, np.integer)) else tuple(resolution)
    if len(hw) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 8 for v in hw):
        raise ValueError(f"resolution must be a side or an (height, width) pair of ints >= 8, got {resolution!r}")
    return int(hw[0]), int(hw[1])


def _box(obj: SceneObject, height: int, width: int) -> tuple[int, int, int]:
    """Top-left corner (y0, x0) and side of `obj`'s bounding box in a height×width image.

    The 3×3 grid stretches with the image; shapes (and their jitter) scale with the shorter
    side, as an image resized to an aspect-ratio bucket keeps its shapes' proportions.
    """
    scale = min(height, width) / IMAGE_SIZE
    side = max(2, int(round(SIZES[obj.size] * scale)))
    row, col = cell_of(obj.position)
    cy = (row + 0.5) * height / GRID + obj.offset[0] * scale
    cx = (col + 0.5) * width / GRID + obj.offset[1] * scale
    return int(round(cy - side / 2)), int(round(cx - side / 2)), side


def render(scene: Scene, resolution: int | tuple[int, int] = IMAGE_SIZE, background=BACKGROUND) -> np.ndarray:
    """Draw a scene.

    Args:
        scene: a complete Scene (every object with position and size).
        resolution: side of the square image in pixels, or (height, width) for an aspect-ratio
            bucket (chapter 05); shapes scale with the shorter side, the grid with the image.
        background: RGB of the plain background.

    Returns:
        uint8 array (H, W, 3).
    """
    H, W = _hw(resolution)
    image = np.empty((H, W, 3), dtype=np.uint8)
    image[:] = background
    _draw(image, scene)
    return image


def _draw(image: np.ndarray, scene: Scene) -> None:
    if not scene.is_complete:
        raise ValueError(
            f"cannot render {scene}: every object needs a position and a size "
            "(a parsed caption may leave them out; use complete_scene(scene, seed) to fill them)"
        )
    H, W = image.shape[:2]
    for obj in scene.objects:
        y0, x0, side = _box(obj, H, W)
        mask = _stamp(obj.shape, side)
        # clip the box to the image (only crops of a larger canvas can reach outside)
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + side, H), min(x0 + side, W)
        if ys >= ye or xs >= xe:
            continue
        image[ys:ye, xs:xe][mask[ys - y0 : ye - y0, xs - x0 : xe - x0]] = PALETTE[obj.color]


def _blank(height: int, width: int, background) -> np.ndarray:
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = background
    return image


def render_batch(scenes: list[Scene], resolution: int | tuple[int, int] = IMAGE_SIZE, background=BACKGROUND) -> np.ndarray:
    """Draw many scenes at once: uint8 array (B, H, W, 3) (`resolution` as in `render`).

    The same pictures as `render`, drawn in bulk: objects are grouped by stamp (shape and
    pixel size), and each group is written with one fancy-indexing assignment.
    """
    H, W = _hw(resolution)
    images = np.empty((len(scenes), H, W, 3), dtype=np.uint8)
    images[:] = _blank(H, W, background)  # copying whole images is ~10× faster than broadcasting an RGB triple
    groups: dict[tuple[str, int], list[tuple[int, int, int, tuple]]] = {}
    for b, scene in enumerate(scenes):
        if not scene.is_complete:
            _draw(images[b], scene)  # raises the explanatory error
        for obj in scene.objects:
            y0, x0, side = _box(obj, H, W)
            groups.setdefault((obj.shape, side), []).append((b, y0, x0, PALETTE[obj.color]))
    flat = images.reshape(-1, 3)  # (B·H·W, 3) view
    for (shape, side), members in groups.items():
        dy, dx = np.nonzero(_stamp(shape, side))  # (P,) pixel offsets inside the stamp
        b, y0, x0, rgb = (np.array(v) for v in zip(*members))  # (N,), (N,), (N,), (N, 3)
        y, x = y0[:, None] + dy, x0[:, None] + dx  # (N, P)
        pixel = (b[:, None] * H + y) * W + x  # (N, P) index into the flattened batch
        colour = np.broadcast_to(rgb[:, None, :].astype(np.uint8), (*pixel.shape, 3))  # (N, P, 3)
        inside = (y >= 0) & (y < H) & (x >= 0) & (x < W)
        if inside.all():
            flat[pixel.ravel()] = colour.reshape(-1, 3)
        else:  # only shapes on a larger canvas than the image reach outside it
            flat[pixel[inside]] = colour[inside]
    return images


def complete_scene(scene: Scene, seed: int = 0) -> Scene:
    """Fill in what a caption left out (positions, sizes) at random, respecting the relation."""
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        cells = [POSITIONS[i] for i in rng.permutation(len(POSITIONS))[:2]]
        objs = tuple(
            SceneObject(o.color, o.shape, o.position or cells[k], o.size or str(rng.choice(list(SIZES))))
            for k, o in enumerate(scene.objects)
        )
        positions = [o.position for o in objs]
        if len(objs) == 2 and positions[0] == positions[1]:
            continue
        if scene.relation and not relation_holds(scene.relation, positions[0], positions[1]):
            continue
        return Scene(objs, scene.relation)
    raise ValueError(f"no layout satisfies {scene}: the positions contradict the relation")


def sample_batch(n: int, seed: int = 0, **kwargs) -> tuple[np.ndarray, list[str], list[Scene]]:
    """Scenes, their images (B, 64, 64, 3) uint8 and random paraphrased captions: training data."""
    scenes = sample_scenes(n, seed, **kwargs)
    rng = np.random.default_rng(seed + 1)
    return render_batch(scenes), [caption(s, rng) for s in scenes], scenes


def to_tensor(images: np.ndarray, size: int | None = None) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, size, size) in [-1, 1] (area-downsampled if size < H)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, 3, H, W)
    if size is not None and size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="area" if size < x.shape[-1] else "bilinear")
    return x


def to_images(x: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3), clipping out-of-range values."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)


# ----------------------------------------------------------------------------- captions

_PREFIXES = ("", "", "", "a picture of ", "an image of ", "a drawing of ")
_POSITION_PHRASES = {  # position -> the ways a caption can say it
    "center": ("in the center", "in the middle"),
    "top": ("at the top",), "bottom": ("at the bottom",),
    "left": ("on the left",), "right": ("on the right",),
}
_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}


def _pick(options, u: float | None):
    """options[0] when u is None (the canonical wording), else the option that u in [0, 1) falls on."""
    return options[0] if u is None else options[int(u * len(options))]


def _object_phrase(obj: SceneObject, u, with_size: bool, with_position: bool) -> str:
    words = ["a"]
    if with_size and obj.size:
        words.append(_pick(_SIZE_WORDS[obj.size], None if u is None else u[0]))
    words += [obj.color, obj.shape]
    if with_position and obj.position:
        words.append(_pick(_POSITION_PHRASES.get(obj.position, (f"in the {obj.position}",)), None if u is None else u[1]))
    return " ".join(words)


def caption(scene: Scene, rng: np.random.Generator | None = None) -> str:
    """Describe a scene in words.

    Args:
        scene: the scene to describe.
        rng: None gives the canonical caption, which states everything ("a large red circle in
            the top left and a small blue square in the center"); a Generator draws a random
            paraphrase that may leave out sizes or positions, use synonyms, a prefix, or a
            relation ("a red circle to the left of a blue square") where one holds.

    Returns:
        the caption; `parse(caption(scene, rng))` gives back what it states.
    """
    objs = scene.objects
    if rng is None:
        return " and ".join(_object_phrase(o, None, True, True) for o in objs)
    u = rng.random(9)  # one draw per caption: numpy's per-call cost dominates otherwise
    with_size, with_position, prefix = u[0] < 0.7, u[1] < 0.8, _pick(_PREFIXES, u[2])
    first, second = u[5:7], u[7:9]  # the wording choices of each object
    if len(objs) == 2 and u[3] < 0.3 and all(o.position for o in objs):
        holding = [r for r in RELATIONS if relation_holds(RELATIONS[r], objs[0].position, objs[1].position)]
        if holding:
            words = _pick(holding, u[4])
            return f"{prefix}{_object_phrase(objs[0], first, with_size, False)} {words} {_object_phrase(objs[1], second, with_size, False)}"
    phrases = [_object_phrase(o, w, with_size, with_position) for o, w in zip(objs, (first, second))]
    return prefix + " and ".join(phrases)


def short_caption(scene: Scene) -> str:
    """Colour and shape only, what a person types first: "a red circle", "a red circle and a blue square"."""
    return " and ".join(f"a {o.color} {o.shape}" for o in scene.objects)


def caption_kind(text: str) -> str:
    """Which of a caption's optional parts it states, by what `parse` reads from it: "full" (every
    object's size and position), "short" (no size, no position, no relation: colour and shape only)
    or "partial" (anything between, e.g. sizes without positions, or a relation instead of positions)."""
    scene = parse(text)
    sized = [o.size is not None for o in scene.objects]
    placed = [o.position is not None for o in scene.objects]
    if all(sized) and all(placed):
        return "full"
    if not any(sized) and not any(placed) and scene.relation is None:
        return "short"
    return "partial"


def _vocabulary() -> list[str]:
    words = {"a", "an", "one", "and", "in", "at", "on", "the", "of", "to", "picture", "image", "drawing"}
    words |= set(PALETTE) | set(SHAPES) | {w for p in POSITIONS for w in p.split()} | {"middle", "centre"}
    words |= {w for ws in _SIZE_WORDS.values() for w in ws} | {w for r in RELATIONS for w in r.split()}
    return sorted(words)


VOCABULARY: tuple[str, ...] = tuple(_vocabulary())
_SIZE_OF = {w: size for size, ws in _SIZE_WORDS.items() for w in ws}
_PREFIX_RE = re.compile(r"^(a|an) (picture|image|drawing) of ")
_RELATION_RE = re.compile(r" (to the left of|to the right of|above|below) ")
_POSITION_RE = re.compile(r" (?:in|at|on) the (top left|top right|bottom left|bottom right|top|bottom|left|right|center|centre|middle)$")


def parse(text: str) -> Scene:
    """Read a caption back into the scene it describes (what it leaves out stays None).

    Args:
        text: a caption of the Shapes grammar, e.g. "a small red circle in the top left and a
            blue square", "an image of a green triangle to the left of a cyan circle".

    Returns:
        the Scene it states.

    Raises:
        ValueError: naming the unknown word and listing the vocabulary, or saying what part of
            the grammar is missing.
    """
    clean = " ".join(re.sub(r"[.,!]", " ", text.lower()).split())
    for word in clean.split():
        if word not in VOCABULARY:
            raise ValueError(
                f"cannot parse caption {text!r}: unknown word {word!r}. "
                f"The Shapes vocabulary is: {', '.join(VOCABULARY)}"
            )
    clean = _PREFIX_RE.sub("", clean)
    relation = None
    match = _RELATION_RE.search(clean)
    if match:
        relation = RELATIONS[match.group(1)]
        clauses = [clean[: match.start()], clean[match.end() :]]
    else:
        clauses = clean.split(" and ")
    if len(clauses) > 2:
        raise ValueError(f"cannot parse caption {text!r}: a Shapes scene has at most two objects")
    return Scene(tuple(_parse_object(c, text) for c in clauses), relation)


def _parse_object(clause: str, text: str) -> SceneObject:
    position = None
    match = _POSITION_RE.search(clause)
    if match:
        word = match.group(1)
        position = {"centre": "center", "middle": "center"}.get(word, word)
        clause = clause[: match.start()]
    words = clause.split()
    if words and words[0] in ("a", "an", "one"):
        words = words[1:]
    size = _SIZE_OF.get(words[0]) if words else None
    if size:
        words = words[1:]
    if len(words) != 2 or words[0] not in PALETTE or words[1] not in SHAPES:
        raise ValueError(
            f"cannot parse {clause!r} in caption {text!r}: an object is written "
            f"'a [size] COLOUR SHAPE [in the POSITION]', with COLOUR one of {', '.join(PALETTE)} "
            f"and SHAPE one of {', '.join(SHAPES)}"
        )
    return SceneObject(words[0], words[1], position, size)


# ----------------------------------------------------------------------------- chapter 05 variants


@dataclass(frozen=True)
class Variant:
    """A training image with the conditioning SDXL records for it (Podell et al. 2023, Sec. 2.2)."""

    scene: Scene
    image: np.ndarray = field(repr=False)  # uint8 (H, W, 3), what the model sees (64×64, or a bucket's size)
    original_size: tuple[int, int]  # (height, width) of the image before resizing / cropping
    crop_top_left: tuple[int, int]  # (top, left) of the crop in the original


def sample_variants(n: int, seed: int = 0, *, p_crop: float = 0.4, p_lowres: float = 0.3,
                    size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> list[Variant]:
    """Shapes images as a web-scraped data set would give them: some cropped, some upsampled.

    A cropped variant renders the scene on a larger canvas (1.25 to 2 times the image: 80 to
    128 px for 64) and cuts a random window of the image's size out of it, which can cut shapes
    at the border; a low-resolution variant renders it at 1/4 to 5/8 of the size (16 to 40 px)
    and upsamples it (bilinear), which blurs it. The rest are plain.

    Args:
        n, seed: how many, and the seed of their scenes and of the choices.
        p_crop, p_lowres: shares of cropped and of upsampled images.
        size: (height, width) of the images: 64×64, or an aspect-ratio bucket.

    Returns:
        `n` Variants with their original size and crop top-left, as SDXL conditions on them.
    """
    if not (0 <= p_crop and 0 <= p_lowres and p_crop + p_lowres <= 1):
        raise ValueError(f"p_crop and p_lowres must be shares that sum to at most 1, got {p_crop}, {p_lowres}")
    H, W = _hw(size)
    rng = np.random.default_rng(seed)
    variants = []
    for scene in sample_scenes(n, seed):
        u = rng.random()
        if u < p_crop:
            h = int(rng.integers(round(1.25 * H), 2 * H + 1))
            w = round(h * W / H)
            big = render(scene, (h, w))
            top, left = (int(v) for v in rng.integers(0, [h - H + 1, w - W + 1]))
            image = big[top : top + H, left : left + W].copy()
            variants.append(Variant(scene, image, (h, w), (top, left)))
        elif u < p_crop + p_lowres:
            h = int(rng.integers(H // 4, round(0.625 * H) + 1))
            w = round(h * W / H)
            small = to_tensor(render(scene, (h, w))[None])
            image = to_images(F.interpolate(small, size=(H, W), mode="bilinear"))[0]
            variants.append(Variant(scene, image, (h, w), (0, 0)))
        else:
            variants.append(Variant(scene, render(scene, (H, W)), (H, W), (0, 0)))
    return variants
