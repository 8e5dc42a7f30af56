"""Text (or nothing) in, images out: the course's sampling pipelines behind one interface.

`load(NAME)` gives the pipeline of a named generator (`python -m course list` shows them), its
weights verified against the manifest; `pipe.generate(prompts, steps=..., guidance=..., seed=...)`
returns uint8 images (N, H, W, 3), one per prompt. `python -m course generate` is the same
call, writing PNG files. Chapter 04 adds the text-to-image pipeline (DDIM / Euler, classifier-
free guidance, negative prompts, img2img) and the loader for diffusers-format folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from course import checkpoints, zoo


class Pipeline(Protocol):
    def generate(self, prompts: list[str], *, steps: int = 50, guidance: float = 1.0, seed: int = 0) -> np.ndarray:
        """One uint8 image (H, W, 3) per prompt, stacked (N, H, W, 3); deterministic for a seed."""
        ...


def generators() -> list[str]:
    """Names of the zoo models that generate images."""
    return [c.name for c in zoo.MODELS.values() if c.pipeline is not None]


def load(name: str, checkpoint: str | Path | None = None) -> Pipeline:
    """The pipeline of generator `name`, with the shipped weights or those in `checkpoint`.

    Raises:
        KeyError: unknown name (the message lists the models), or a model that does not
            generate images (the message lists those that do).
    """
    card = zoo.card(name)
    if card.pipeline is None:
        raise KeyError(
            f"{name!r} does not generate images (it is a {card.summary}); "
            f"generators: {', '.join(generators()) or 'none yet'}"
        )
    tensors, entry = checkpoints.load_checkpoint(None if checkpoint else name, checkpoint)
    model = zoo.resolve(card.load)(tensors, entry["config"])
    return zoo.resolve(card.pipeline)(model, entry["config"])


def save_images(images: np.ndarray, out_dir: str | Path, prefix: str = "image") -> list[Path]:
    """Write uint8 images (N, H, W, C) as PNG files `out_dir/prefix-0000.png`, ... ."""
    from PIL import Image

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"save_images expects uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, image in enumerate(images):
        path = out_dir / f"{prefix}-{i:04d}.png"
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(path)
        written.append(path)
    return written
