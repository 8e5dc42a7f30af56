"""Chapter 08's exercise checkers (see `course.exercises.runner` for how a checker works)."""

from __future__ import annotations

import math

from course.exercises.runner import Case, ExerciseFailed, run_cases

SAMPLE_N = 200_000  # draws per statistical check: the standard error of the mean of logit(t) is s / 447
_SETTINGS = ((0.0, 1.0), (0.5, 0.6), (1.0, 0.6), (-0.5, 2.0))  # (m, s): SD3's three, and one that favours data


def check_logit_normal_sample(fn) -> bool:
    """Chapter 08: the learner's `logit_normal_sample(n, m, s, generator)`: t = sigmoid(u), u ~ N(m, s^2).

    A sampler cannot be compared draw for draw (there is more than one right way to draw), so the
    check is statistical: the draws must lie in (0, 1), repeat with the same generator, and their
    logits must have mean m and standard deviation s and follow the normal distribution (the
    Kolmogorov-Smirnov distance of t against `course.diffusion.timesteps`' logit-normal CDF).
    """
    import torch

    name = "logit_normal_sample"
    if not callable(fn):
        raise ExerciseFailed(f"{name}: expected a function, got {type(fn).__name__}: pass the function itself, without ()")
    for m, s in _SETTINGS:
        where = f"\n  (with n = {SAMPLE_N}, m = {m}, s = {s})"
        try:
            t = fn(SAMPLE_N, m, s, torch.Generator().manual_seed(8))
            again = fn(SAMPLE_N, m, s, torch.Generator().manual_seed(8))
        except NotImplementedError as err:
            raise ExerciseFailed(f"{name}: your function raised NotImplementedError: replace the `raise "
                                 f"NotImplementedError` with your solution{where}") from err
        except Exception as err:
            raise ExerciseFailed(f"{name}: your function raised {type(err).__name__}: {err}{where}") from err
        if not isinstance(t, torch.Tensor) or t.shape != (SAMPLE_N,) or not t.is_floating_point():
            got = f"a tensor of shape {tuple(t.shape)} and dtype {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ExerciseFailed(f"{name}: expected a float tensor of shape ({SAMPLE_N},), got {got}: draw "
                                 f"torch.randn(n, generator=generator){where}")
        if not torch.equal(t, again):
            raise ExerciseFailed(f"{name}: two calls with generators seeded alike gave different draws: draw from "
                                 f"the `generator` argument (torch.randn(n, generator=generator)){where}")
        if not bool(((t > 0) & (t < 1)).all()):
            raise ExerciseFailed(f"{name}: draws outside (0, 1) (min {float(t.min()):.3g}, max {float(t.max()):.3g}): "
                                 f"t is the sigmoid of a normal draw, t = sigmoid(m + s u){where}")
        logit = torch.log(t.double()) - torch.log1p(-t.double())
        mean, std = float(logit.mean()), float(logit.std())
        tol_mean, tol_std = 6 * s / math.sqrt(SAMPLE_N), 6 * s / math.sqrt(2 * SAMPLE_N)
        if abs(mean - m) > tol_mean:
            hint = (" (that is -m: did you draw sigmoid(-u), or 1 - t? In the course t = 1 is noise, and m > 0 "
                    "favours the noisy end)") if abs(mean + m) <= tol_mean and m != 0 else ": the location is m, t = sigmoid(m + s u)"
            raise ExerciseFailed(f"{name}: the logits of your draws have mean {mean:.3f}, expected {m}{hint}{where}")
        if abs(std - s) > tol_std:
            hint = " (did you use the variance s^2, or sqrt(s), as the scale?)" if s != 1 else ""
            raise ExerciseFailed(f"{name}: the logits of your draws have standard deviation {std:.3f}, expected {s}: "
                                 f"scale the normal draw by s{hint}{where}")
        z = torch.sort((logit - m) / s).values  # under the null hypothesis, standard normal
        cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
        k = torch.arange(1, SAMPLE_N + 1, dtype=torch.float64) / SAMPLE_N
        ks = float(torch.maximum(k - cdf, cdf - (k - 1 / SAMPLE_N)).max())
        if ks > 2.0 / math.sqrt(SAMPLE_N):  # the 1e-3-level critical value is ~1.95 / sqrt(n)
            raise ExerciseFailed(f"{name}: the mean and spread are right but the shape is not logit-normal (KS distance "
                                 f"{ks:.4f}): draw u from a normal distribution (torch.randn), not a uniform one{where}")
    print(f"✓ {name}: all {len(_SETTINGS)} settings passed (range, repeatability, mean and spread of the logits, KS test)")
    return True


def check_shift_sigmas(fn) -> bool:
    """Chapter 08: the learner's `shift_sigmas(sigmas, shift)` against `course.diffusion.flow.shift_sigmas` (SD3 Eq. 23)."""
    import torch

    from course.diffusion.flow import shift_sigmas

    grid = torch.linspace(1.0, 0.0, 11)
    cases = [
        Case(args=(grid, 3.0), label="SD3's default shift 3.0 on an 11-point grid from 1 to 0"),
        Case(args=(grid, 1.0), label="shift 1 changes nothing"),
        Case(args=(grid, 2.0), label="64x64 -> 128x128: alpha = sqrt(128^2 / 64^2) = 2"),
        Case(args=(torch.tensor([0.25, 0.5, 0.75]), 0.5), label="a shift below 1 moves t toward the data"),
        Case(args=(torch.rand(2, 5, generator=torch.Generator().manual_seed(3)), 4.0), label="any shape, elementwise"),
    ]
    return run_cases(fn, shift_sigmas, cases, name="shift_sigmas", hint={
        "values": "t_m = alpha t_n / (1 + (alpha - 1) t_n): the ends stay put (0 -> 0, 1 -> 1) and alpha > 1 pushes every "
                  "t in between toward the noise. Dividing by alpha, or writing (alpha - 1) without the t_n, gives the "
                  "right shape and wrong values",
        "shape": "the shift is elementwise: return a tensor shaped like sigmas",
    })
