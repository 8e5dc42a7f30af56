"""What every notebook's first cell does: seed everything and pick the device.

The device is chosen, never hard-coded: CUDA if present, then Apple's MPS, then the CPU, so
the same notebook runs on a laptop, on Colab and under nbval in CI.
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


def setup(seed: int = 0, quiet: bool = False) -> torch.device:
    """Seed everything, pick the device and print one line about it; returns the device."""
    seed_everything(seed)
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
