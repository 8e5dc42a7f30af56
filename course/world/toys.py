"""The 2-D toy data sets (moons, checkerboard, rings) of the chapters that plot trajectories.

Shapes: N points, (N, 2) float32.
"""

from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------- 2-D toy sets

TOYS = ("moons", "checkerboard", "rings")


def toy_2d(name: str, n: int, seed: int = 0) -> np.ndarray:
    """Samples of a 2-D toy distribution, float32 (n, 2), roughly within [-3, 3]².

    Args:
        name: "moons" (two interleaved half circles), "checkerboard" (a 4×4 board's dark
            squares) or "rings" (two concentric circles).
        n: number of points.
        seed: the same seed gives the same points.
    """
    rng = np.random.default_rng(seed)
    if name == "moons":
        angle = rng.uniform(0, np.pi, n)
        upper = rng.random(n) < 0.5
        x = np.where(upper, np.cos(angle), 1 - np.cos(angle))
        y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
        points = np.stack([x - 0.5, y - 0.25], 1) * 2 + rng.normal(0, 0.08, (n, 2))
    elif name == "checkerboard":
        row = rng.integers(0, 4, n)
        col = 2 * rng.integers(0, 2, n) + row % 2  # (row + col) even: the dark squares only
        points = (np.stack([col, row], 1) + rng.random((n, 2)) - 2.0) * 1.5
    elif name == "rings":
        radius = np.where(rng.random(n) < 0.5, 1.0, 2.2) + rng.normal(0, 0.08, n)
        angle = rng.uniform(0, 2 * np.pi, n)
        points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
    else:
        raise ValueError(f"unknown toy data set {name!r}; choose one of: {', '.join(TOYS)}")
    return points.astype(np.float32)
