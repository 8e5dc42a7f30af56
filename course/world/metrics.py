"""Measuring quality on the Shapes world: ShapesEval (prompt adherence) and Shapes-FID.

ShapesEval is GenEval-style (Ghosh et al. 2023): parse the prompt into the scene it asks for,
find each object in the generated image, and score colour, shape, position, size, count and
attribute binding (each colour on the right shape). Because Shapes images are solid shapes on
a plain background, the detector needs no network: each pixel takes the nearest palette colour
(or background, or nothing if it is far from all of them), each colour's connected blobs are
objects, and a blob's shape is read from how it fills its bounding box.

Shapes-FID is the Fréchet distance (Heusel et al. 2017) between Gaussians fitted to the
features of a small Shapes classifier that the course trains and ships (`shapes-classifier`),
as FID uses Inception features. Always report the real-vs-real floor beside it: two sets of
real images of the same size never score 0.

Shapes: images are uint8 (B, H, W, 3).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import linalg, ndimage

from course.world import shapes
from course.world.classifiers import FeatureClassifier, load_shapes_classifier

# ----------------------------------------------------------------------------- the detector

COLOR_TOLERANCE = 90.0  # max RGB distance from a palette colour for a pixel to count as that colour
MIN_AREA = 12  # blobs smaller than this many pixels (at 64×64) are noise, not objects


@dataclass(frozen=True)
class Detection:
    """An object found in an image."""

    color: str
    shape: str
    position: str  # grid cell of its bounding-box centre
    size: str  # "small" or "large"
    area: int  # pixels
    box: tuple[int, int, int, int]  # (top, left, bottom, right), bottom/right exclusive


def _classify_blob(mask: np.ndarray) -> str:
    """circle, square or triangle from a blob's mask cropped to its bounding box.

    An upright triangle holds about a quarter of its area above mid-height. A square fills the
    corners of its bounding box, a disc leaves them empty: in box coordinates u, v in [-1, 1]
    the corners |u| + |v| > 1.3 lie almost wholly outside the unit disc. Both cues survive blur
    and noise, which round a square's corners and so fool a plain "fill of the box" test.
    """
    h, w = mask.shape
    if mask[: h // 2].sum() < 0.6 * mask[(h + 1) // 2 :].sum():
        return "triangle"
    v = (np.arange(h) + 0.5) / (h / 2) - 1
    u = (np.arange(w) + 0.5) / (w / 2) - 1
    corners = np.abs(v)[:, None] + np.abs(u)[None, :] > 1.3  # (h, w)
    if not corners.any():  # a blob too small to have corners
        return "circle"
    return "square" if mask[corners].mean() > 0.5 else "circle"


def label_pixels(images: np.ndarray) -> np.ndarray:
    """Each pixel's nearest colour: 0 background, k the k-th palette colour (1-based), -1 none.

    Args:
        images: uint8 (B, H, W, 3).

    Returns:
        int8 (B, H, W); a pixel farther than COLOR_TOLERANCE from every colour gets -1.
    """
    colors = np.array([shapes.BACKGROUND, *shapes.PALETTE.values()], dtype=np.float32)  # (K+1, 3)
    x = images.astype(np.float32)  # (B, H, W, 3); integer-valued, so the sums below are exact in float32
    # |x - c|² = |x|² - 2 x·c + |c|²: one small matrix product instead of a (B, H, W, K+1, 3) difference
    dist2 = (x * x).sum(-1, keepdims=True) - 2 * x @ colors.T + (colors * colors).sum(-1)  # (B, H, W, K+1)
    label = dist2.argmin(-1).astype(np.int8)
    label[dist2.min(-1) > COLOR_TOLERANCE**2] = -1  # far from every colour: belongs to nothing
    return label


def _check_images(images: np.ndarray, what: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(
            f"{what} expects square uint8 RGB images (B, H, H, 3), got {images.dtype} {images.shape}; "
            "convert model outputs with course.world.shapes.to_images"
        )


def detect(image: np.ndarray, label: np.ndarray | None = None) -> list[Detection]:
    """Find the objects in one Shapes-like image.

    Args:
        image: uint8 (H, W, 3), any square size (thresholds scale with H/64).
        label: its `label_pixels` map (H, W), if already computed for a batch.

    Returns:
        the detected objects, largest first.
    """
    image = np.asarray(image)
    _check_images(image[None], "detect")
    label = label_pixels(image[None])[0] if label is None else label
    resolution = image.shape[0]
    scale = resolution / shapes.IMAGE_SIZE
    min_area = MIN_AREA * scale**2
    counts = np.bincount(label.ravel().astype(np.int64) + 1, minlength=len(shapes.PALETTE) + 2)[2:]  # pixels per colour
    found = []
    for k, name in enumerate(shapes.PALETTE, start=1):
        if counts[k - 1] < min_area:  # most images hold one or two colours: skip the rest cheaply
            continue
        blobs, count = ndimage.label(label == k)
        for i, sl in enumerate(ndimage.find_objects(blobs), start=1):
            mask = blobs[sl] == i
            area = int(mask.sum())
            if area < min_area:
                continue
            (y0, y1), (x0, x1) = (sl[0].start, sl[0].stop), (sl[1].start, sl[1].stop)
            threshold = (shapes.SIZES["small"] + shapes.SIZES["large"]) / 2 * scale
            size = "large" if max(y1 - y0, x1 - x0) >= threshold else "small"
            position = shapes.position_at((y0 + y1) / 2, (x0 + x1) / 2, resolution)  # centre of the bounding box
            found.append(Detection(name, _classify_blob(mask), position, size, area, (y0, x0, y1, x1)))
    return sorted(found, key=lambda d: -d.area)


# ----------------------------------------------------------------------------- ShapesEval


@dataclass(frozen=True)
class ImageResult:
    """How one image matched its prompt."""

    prompt: str
    detections: tuple[Detection, ...]
    full_match: bool  # every object right (colour, shape, position, size as stated), nothing extra
    color: float  # share of the prompt's colours present
    shape: float  # share of the prompt's shapes present
    binding: float  # share of the prompt's objects present with the right colour on the right shape
    position: float  # share of the bound objects at the stated position (1.0 when none is stated)
    size: float  # share of the bound objects with the stated size (1.0 when none is stated)
    count: bool  # as many objects as the prompt asks for
    n_objects: int  # objects in the prompt

    def verdict(self) -> str:
        """"match", or what failed, in words: "count (3 found), colour, position"."""
        if self.full_match:
            return "match"
        failed = [] if self.count else [f"count ({len(self.detections)} found)"]
        failed += [word for attr, word in (("color", "colour"), ("shape", "shape"), ("binding", "binding"),
                                           ("position", "position"), ("size", "size")) if getattr(self, attr) < 1]
        return ", ".join(failed)


@dataclass(frozen=True)
class ShapesEvalReport:
    """Scores averaged over images, each in [0, 1]."""

    full_match: float
    color: float
    shape: float
    binding: float
    position: float
    size: float
    count: float
    n: int
    results: tuple[ImageResult, ...] = field(repr=False)

    def by_objects(self) -> dict[int, "ShapesEvalReport"]:
        """The same report split by the number of objects in the prompt (1 and 2)."""
        groups = {}
        for r in self.results:
            groups.setdefault(r.n_objects, []).append(r)
        return {k: _summarise(v) for k, v in sorted(groups.items())}

    def failures(self) -> list[ImageResult]:
        return [r for r in self.results if not r.full_match]

    def as_dict(self) -> dict[str, float]:
        return {k: round(getattr(self, k), 4) for k in ("full_match", "color", "shape", "binding", "position", "size", "count")} | {"n": self.n}


def _summarise(results: list[ImageResult]) -> ShapesEvalReport:
    mean = lambda key: float(np.mean([float(getattr(r, key)) for r in results])) if results else 0.0  # noqa: E731
    return ShapesEvalReport(
        mean("full_match"), mean("color"), mean("shape"), mean("binding"), mean("position"),
        mean("size"), mean("count"), len(results), tuple(results),
    )


def _matches(obj: shapes.SceneObject, det: Detection) -> bool:
    return (
        obj.color == det.color and obj.shape == det.shape
        and obj.position in (None, det.position) and obj.size in (None, det.size)
    )


def score_image(image: np.ndarray, prompt: str, label: np.ndarray | None = None) -> ImageResult:
    """Score one image against the prompt it was generated from (see `shapes_eval`)."""
    scene = shapes.parse(prompt)
    dets = detect(image, label)
    objs = scene.objects
    bound = [next((d for d in dets if d.color == o.color and d.shape == o.shape), None) for o in objs]
    positioned = [(o, d) for o, d in zip(objs, bound) if o.position is not None]
    sized = [(o, d) for o, d in zip(objs, bound) if o.size is not None]
    position = np.mean([d is not None and d.position == o.position for o, d in positioned]) if positioned else 1.0
    if scene.relation:
        ok = all(bound) and shapes.relation_holds(scene.relation, bound[0].position, bound[1].position)
        position = float(ok) if not positioned else (position + float(ok)) / 2
    full = len(dets) == len(objs) and any(
        all(_matches(o, d) for o, d in zip(objs, perm))
        and (scene.relation is None or shapes.relation_holds(scene.relation, perm[0].position, perm[1].position))
        for perm in itertools.permutations(dets)
    )
    return ImageResult(
        prompt=prompt, detections=tuple(dets), full_match=bool(full),
        color=float(np.mean([any(d.color == o.color for d in dets) for o in objs])),
        shape=float(np.mean([any(d.shape == o.shape for d in dets) for o in objs])),
        binding=float(np.mean([d is not None for d in bound])),
        position=float(position),
        size=float(np.mean([d is not None and d.size == o.size for o, d in sized])) if sized else 1.0,
        count=len(dets) == len(objs), n_objects=len(objs),
    )


def shapes_eval(images: np.ndarray, prompts: list[str]) -> ShapesEvalReport:
    """ShapesEval: how well images follow their prompts.

    Args:
        images: uint8 (B, H, W, 3), e.g. a text-to-image model's outputs.
        prompts: B captions in the Shapes grammar (`course.world.shapes.parse` must read them).

    Returns:
        a ShapesEvalReport: `full_match` is the share of images in which every object of the
        prompt is present with the right colour, shape, position and size (where the prompt
        states them) and nothing else is; `color`, `shape`, `binding`, `position`, `size`,
        `count` are partial scores; `.by_objects()` splits by one- and two-object prompts.

    Ref: GenEval (Ghosh et al. 2023) scores object, count, colour, position, attribute binding.
    """
    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; give one prompt per image")
    images = np.asarray(images)
    _check_images(images, "shapes_eval")
    results = []
    for i in range(0, len(images), 256):  # label pixels a chunk at a time: vectorised, bounded memory
        labels = label_pixels(images[i : i + 256])
        results += [score_image(im, p, lab) for im, p, lab in zip(images[i : i + 256], prompts[i : i + 256], labels)]
    return _summarise(results)


# ----------------------------------------------------------------------------- prompt styles

PROMPT_STYLES = ("canonical", "paraphrase", "short")  # see `style_prompts`
ATTRIBUTES = ("full_match", "color", "shape", "binding", "position", "size", "count")


def style_prompts(scenes: list[shapes.Scene], style: str, seed: int = 0) -> list[str]:
    """One prompt per scene in a prompt style.

    Args:
        scenes: held-out scenes (never the training bank's).
        style: "canonical" (`shapes.caption(scene)`: every size and position, the shipped evaluations'
            prompts), "paraphrase" (the world's random paraphrases and partial captions,
            `shapes.caption(scene, rng)` with rng seeded by `seed`: synonyms, prefixes, relations,
            sizes or positions left out) or "short" (`shapes.short_caption`: colour and shape only,
            "a red circle and a blue square", what a person types first).
        seed: seeds the paraphrases.

    Returns:
        len(scenes) prompts.
    """
    if style == "canonical":
        return [shapes.caption(sc) for sc in scenes]
    if style == "paraphrase":
        rng = np.random.default_rng(seed)
        return [shapes.caption(sc, rng) for sc in scenes]
    if style == "short":
        return [shapes.short_caption(sc) for sc in scenes]
    raise ValueError(f"unknown prompt style {style!r}; choose one of {PROMPT_STYLES}")


def prompt_style_eval(generate, scenes: list[shapes.Scene], styles=PROMPT_STYLES,
                      seed: int = 0) -> dict[str, ShapesEvalReport]:
    """ShapesEval of a text-to-image model on the same held-out scenes, prompted in each style.

    Args:
        generate: prompts (list of str) -> uint8 images (B, H, W, 3), e.g. a pipeline's `generate` at
            the model's recommended steps and guidance.
        scenes: the held-out scenes.
        styles: which of PROMPT_STYLES.
        seed: seeds the paraphrases.

    Returns:
        {style: ShapesEvalReport}; `.by_objects()` of each splits one- and two-object prompts.
    """
    return {style: shapes_eval(generate(style_prompts(scenes, style, seed)), style_prompts(scenes, style, seed))
            for style in styles}


def style_table(reports: dict[str, ShapesEvalReport], prefix: str = "") -> dict[str, float]:
    """Flat metrics of `prompt_style_eval`: {prefix}style_{style}_{one|two}_{attribute} for every ATTRIBUTES."""
    out = {}
    for style, report in reports.items():
        for k, part in report.by_objects().items():
            group = {1: "one", 2: "two"}[k]
            for attr in ATTRIBUTES:
                out[f"{prefix}style_{style}_{group}_{attr}"] = round(getattr(part, attr), 4)
            out[f"{prefix}style_{style}_{group}_n"] = part.n
    return out


def caption_shares(captions: list[str]) -> dict[str, float]:
    """How often captions are empty, short, partial or full (`shapes.caption_kind`), and what they leave out.

    Returns:
        shares of all captions: "empty", "short", "partial", "full", "no_size" (some object without a
        size), "no_position" (some object without a position), "relation"; and the same split by the
        number of objects ("short_one", "short_two", ...), each as a share of the captions with that many.
    """
    counts: dict[str, int] = {}
    per_objects: dict[int, int] = {}
    for text in captions:
        if text == "":
            counts["empty"] = counts.get("empty", 0) + 1
            continue
        scene = shapes.parse(text)
        k = len(scene.objects)
        per_objects[k] = per_objects.get(k, 0) + 1
        kind = shapes.caption_kind(text)
        group = {1: "one", 2: "two"}[k]
        for key in (kind, f"{kind}_{group}"):
            counts[key] = counts.get(key, 0) + 1
        for key, hit in (("no_size", any(o.size is None for o in scene.objects)),
                         ("no_position", any(o.position is None for o in scene.objects)),
                         ("relation", scene.relation is not None)):
            if hit:
                counts[key] = counts.get(key, 0) + 1
    n = len(captions)
    out = {key: round(counts.get(key, 0) / n, 4) for key in ("empty", "short", "partial", "full", "no_size",
                                                            "no_position", "relation")}
    for k, group in ((1, "one"), (2, "two")):
        for kind in ("short", "partial", "full"):
            out[f"{kind}_{group}"] = round(counts.get(f"{kind}_{group}", 0) / max(per_objects.get(k, 0), 1), 4)
    return out


# ----------------------------------------------------------------------------- FID


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½)  (Heusel et al. 2017, Eq. 6), in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # near-singular product: regularise, as the reference code does
        eps = 1e-6 * np.eye(len(mu1))
        covmean = linalg.sqrtm((sigma1 + eps) @ (sigma2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


@torch.no_grad()
def feature_stats(classifier: FeatureClassifier, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) of the classifier's scaled features over uint8 images (B, H, W, C)."""
    classifier.eval()
    device = next(classifier.parameters()).device
    feats = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).permute(0, 3, 1, 2).float() / 127.5 - 1
        feats.append(classifier.features(x.to(device)).double().cpu() / classifier.config.feature_scale)
    f = torch.cat(feats).numpy()  # (B, F)
    return f.mean(0), np.cov(f, rowvar=False)


def fid(classifier: FeatureClassifier, images_a: np.ndarray, images_b: np.ndarray) -> float:
    """Fréchet distance between two image sets in the classifier's feature space."""
    for name, images in (("images_a", images_a), ("images_b", images_b)):
        if len(images) < 2 * classifier.config.feature_dim:
            raise ValueError(
                f"{name} has {len(images)} images: FID needs at least {2 * classifier.config.feature_dim} "
                f"(twice the feature size) for a usable covariance estimate"
            )
    return frechet_distance(*feature_stats(classifier, images_a), *feature_stats(classifier, images_b))


def shapes_fid(images: np.ndarray, reference: np.ndarray | None = None, *, seed: int = 10_000, classifier=None) -> float:
    """Shapes-FID of `images` against real Shapes images (`reference`, or as many fresh ones)."""
    classifier = classifier or load_shapes_classifier()
    if reference is None:
        reference = shapes.render_batch(shapes.sample_scenes(len(images), seed))
    return fid(classifier, images, reference)


def shapes_fid_floor(n: int, *, seed: int = 20_000, classifier=None) -> float:
    """Shapes-FID between two independent sets of `n` real images: the best any model can score at n."""
    classifier = classifier or load_shapes_classifier()
    a = shapes.render_batch(shapes.sample_scenes(n, seed))
    b = shapes.render_batch(shapes.sample_scenes(n, seed + 1))
    return fid(classifier, a, b)


# ----------------------------------------------------------------------------- crops and blur (chapter 05)


def is_cut_off(det: Detection, resolution: int) -> bool:
    """Whether a detected object is cut by the image border, as a random crop cuts it.

    Every whole Shapes object fills a square box of one of the two sizes (`shapes.SIZES`), even when
    it touches the border; a cut one touches the border and its box is no longer such a square.
    """
    y0, x0, y1, x1 = det.box
    if not (y0 == 0 or x0 == 0 or y1 == resolution or x1 == resolution):
        return False
    h, w = y1 - y0, x1 - x0
    scale, tol = resolution / shapes.IMAGE_SIZE, 2 * resolution / shapes.IMAGE_SIZE
    whole_size = any(abs(max(h, w) - side * scale) <= tol for side in shapes.SIZES.values())
    return not (abs(h - w) <= tol and whole_size)


def cut_off_share(images: np.ndarray) -> float:
    """Share of the objects found in `images` (uint8 (B, H, W, 3)) that the image border cuts.

    SDXL's crop conditioning exists to bring this down: a model trained on random crops draws cut
    objects unless told crop (0, 0) (Podell et al. 2023, Sec. 2.2, Fig. 4).
    """
    _check_images(images, "cut_off_share")
    labels = label_pixels(images)  # (B, H, W)
    found = [is_cut_off(d, images.shape[1]) for image, label in zip(images, labels) for d in detect(image, label)]
    return float(np.mean(found)) if found else 0.0


def sharpness(images: np.ndarray) -> np.ndarray:
    """Per-image focus score: the variance of the Laplacian of the grey image (higher = sharper).

    Shapes images are flat colour regions with edges, so the score is all in the edges: an image
    upsampled from a low resolution has soft edges and scores several times lower than a sharp
    render of the same scene.

    Args:
        images: uint8 (B, H, W, 3).

    Returns:
        float (B,).

    Ref: Pech-Pacheco et al. 2000, "Diatom autofocusing in brightfield microscopy" (variance of the Laplacian).
    """
    _check_images(images, "sharpness")
    grey = images.astype(np.float32).mean(-1) / 255.0  # (B, H, W) in [0, 1]
    lap = (grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:]
           - 4 * grey[:, 1:-1, 1:-1])  # (B, H-2, W-2): the 5-point Laplacian of the interior
    return lap.reshape(len(images), -1).var(axis=1)
