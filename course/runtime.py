"""What every notebook's first cell does: seed everything, pick the device, show figures.

The device is chosen, never hard-coded: CUDA if present, then Apple's MPS, then the CPU, so
the same notebook runs on a laptop, on Colab and under nbval in CI.

Figures: a cell that ends in a bare `matplotlib.figure.Figure` shows it as a PNG only if
someone told IPython how to draw one. Importing pyplot does (its inline backend registers a
PNG formatter), but a chapter that builds `Figure(...)` objects without pyplot would print
`<Figure size 1100x300 with 2 Axes>` instead. `setup` registers the formatter itself.
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA, else MPS, else CPU; `prefer` (or the env var COURSE_DEVICE) forces one."""
    choice = prefer or os.environ.get("COURSE_DEVICE")
    if choice:
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _figure_png(fig) -> bytes:
    """A Figure as PNG bytes, drawn with Agg whatever the backend (as the inline backend draws it)."""
    from IPython.core.pylabtools import print_figure

    return print_figure(fig, "png", bbox_inches="tight")


def register_figure_formatter(shell=None) -> bool:
    """Make IPython show every matplotlib Figure as an image/png, with or without pyplot.

    Args:
        shell: the IPython shell; None takes the running one.

    Returns:
        True if a formatter was registered, False outside IPython (plain Python: nothing to do).
    """
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    if shell is None:
        return False
    from matplotlib.figure import Figure

    shell.display_formatter.formatters["image/png"].for_type(Figure, _figure_png)
    return True


def setup(seed: int = 0, quiet: bool = False) -> torch.device:
    """Seed everything, pick the device, show Figures as PNGs, print one line; returns the device."""
    seed_everything(seed)
    register_figure_formatter()
    device = pick_device()
    if not quiet:
        threads = f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else ""
        print(f"torch {torch.__version__.split('+')[0]} on {device.type}{threads}; seed {seed}")
    return device


def best_time(fn, repeat: int = 3) -> float:
    """Best wall time of `repeat` calls, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
