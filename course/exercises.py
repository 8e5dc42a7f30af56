"""Exercise checkers: run the learner's function on a few cases and say, in plain words, what is wrong.

Exercises follow nbgrader's convention. In the notebooks in git (which carry the solutions and
are what nbval runs) an exercise cell looks like:

    def q_sample(x0, t, eps, alpha_bar):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

    check_q_sample(q_sample)

`python -m course student-edition DIR` (see `course.student`) replaces each solution block by
`raise NotImplementedError(...)`; the checker then tells the learner to write the solution.

How a chapter adds a checker (one function per exercise, defined in this module):

    def check_q_sample(fn) -> bool:
        # docstring: "Check the learner's `q_sample` against `course.ddpm.q_sample`."
        import torch
        from course.ddpm import q_sample  # the reference: the package is the source of truth

        g = torch.Generator().manual_seed(0)
        cases = [
            Case(args=(torch.randn(4, 1, 32, 32, generator=g), torch.tensor([0, 10, 500, 999])),
                 kwargs={...}, label="batch of 4 images"),
            ...
        ]
        return run_cases(fn, q_sample, cases, name="q_sample",
                         hint={"shape": "did you broadcast alpha_bar over the image dimensions?"})

Rules for checkers: the reference is imported from the package inside the function (so that
`import course.exercises` stays light), cases are small and deterministic (seeded), and the
hint names the likely mistake for each kind of failure. `available_checks()` lists them.
"""

from __future__ import annotations

import copy
import math
import random
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STUB_MESSAGE = "Exercise: write your solution here"  # what the student edition's stub raises
FAILURE_KINDS = ("type", "shape", "dtype", "device", "nonfinite", "values", "error", "inplace")


class ExerciseFailed(AssertionError):
    """The learner's function gave a wrong answer, or raised; the message says what and where."""


@dataclass(frozen=True)
class Case:
    """One call of the function under test."""

    args: tuple = ()  # positional arguments
    kwargs: dict = field(default_factory=dict)  # keyword arguments
    label: str = ""  # what this case tests, shown when it fails ("t = 0 returns x0")


# ---------------------------------------------------------------------------------------------
# helpers: describe values, compare outputs
# ---------------------------------------------------------------------------------------------


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.number)) and not isinstance(x, (bool, np.bool_))


def _kind(x: Any) -> str:
    """A short name for the type of x, as a learner would say it."""
    if _is_tensor(x):
        return "a torch.Tensor"
    if isinstance(x, np.ndarray):
        return "a numpy array"
    if x is None:
        return "None"
    return f"a {type(x).__name__}"


def describe(x: Any) -> str:
    """One short line about x: 'tensor (4, 1, 32, 32) float32', '0.5', 'tuple of 2'."""
    if _is_tensor(x):
        return f"tensor {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}"
    if isinstance(x, np.ndarray):
        return f"array {x.shape} {x.dtype}"
    if isinstance(x, (tuple, list)):
        return f"{type(x).__name__} of {len(x)}"
    text = repr(x)
    return text if len(text) <= 40 else text[:37] + "..."


def _fmt_index(flat: int, shape: tuple) -> str:
    return str(tuple(int(i) for i in np.unravel_index(flat, shape))) if shape else "()"


def _compare_arrays(got: np.ndarray, exp: np.ndarray, atol: float, rtol: float, loc: str) -> tuple[str, str] | None:
    """Compare two same-shape numeric arrays; returns (kind, problem) or None when close."""
    wide = np.complex128 if np.iscomplexobj(got) or np.iscomplexobj(exp) else np.float64
    got64, exp64 = got.astype(wide), exp.astype(wide)
    bad_got = ~np.isfinite(got64) & np.isfinite(exp64)
    if bad_got.any():
        flat = int(np.flatnonzero(bad_got)[0])
        return "nonfinite", (
            f"returned {got64.flat[flat]}{loc} at index {_fmt_index(flat, got.shape)} where "
            f"{exp64.flat[flat]:.6g} was expected ({int(bad_got.sum())} non-finite values in all)"
        )
    close = np.isclose(got64, exp64, atol=atol, rtol=rtol, equal_nan=True)
    if close.all():
        return None
    flat = int(np.flatnonzero(~close)[0])
    diff = np.abs(got64 - exp64)
    finite = diff[np.isfinite(diff)]
    max_diff = float(finite.max()) if finite.size else math.inf
    return "values", (
        f"values differ{loc} at index {_fmt_index(flat, got.shape)}: got {got64.flat[flat]:.6g} "
        f"expected {exp64.flat[flat]:.6g} ({int((~close).sum())} of {close.size} values differ "
        f"beyond atol={atol:g}, rtol={rtol:g}; largest difference {max_diff:.3g})"
    )


def compare(got: Any, exp: Any, *, atol: float = 1e-5, rtol: float = 1e-4, where: str = "") -> tuple[str, str] | None:
    """Compare the learner's output with the reference's.

    Args:
        got: what the learner's function returned.
        exp: what the reference returned (tensor, numpy array, number, tuple/list, dict, other).
        atol, rtol: tolerance for numbers, as `torch.isclose` uses them.
        where: the position inside nested outputs ("[1]", "['mean']"), for the message.

    Returns:
        None when they match, else (kind, problem): kind is one of `FAILURE_KINDS`; problem
        reads after the function's name: "returned shape (4, 3) but expected (4, 1, 32, 32)",
        or "values differ at index (0, 2): got 0.1 expected 0.3 (...)".
    """
    loc = f" in output{where}" if where else ""
    if _is_tensor(exp) or isinstance(exp, np.ndarray):
        if type(got) is not type(exp) and not (_is_tensor(got) and _is_tensor(exp)):
            return "type", f"returned {_kind(got)}{loc} but expected {_kind(exp)}"
        if tuple(got.shape) != tuple(exp.shape):
            return "shape", f"returned shape {tuple(got.shape)}{loc} but expected {tuple(exp.shape)}"
        if got.dtype != exp.dtype:
            return "dtype", f"returned dtype {got.dtype}{loc} but expected {exp.dtype}"
        if _is_tensor(exp):
            if got.device != exp.device:
                return "device", f"returned a tensor on {got.device}{loc} but expected one on {exp.device}"
            got, exp = got.detach().cpu().numpy(), exp.detach().cpu().numpy()
        if exp.dtype.kind not in "biufc":  # strings, objects: exact equality
            return None if np.array_equal(got, exp) else ("values", f"values differ{loc}")
        return _compare_arrays(got, exp, atol, rtol, loc)
    if isinstance(exp, (bool, np.bool_)):
        if not isinstance(got, (bool, np.bool_)) or bool(got) != bool(exp):
            return "values", f"returned {describe(got)}{loc} but expected {bool(exp)!r}"
        return None
    if _is_number(exp):
        if _is_tensor(got) and got.numel() == 1 or isinstance(got, np.ndarray) and got.size == 1:
            got = got.item()  # a 0-d tensor where a number is expected is fine
        if not _is_number(got):
            return "type", f"returned {_kind(got)}{loc} but expected a number"
        if not math.isfinite(float(got)) and math.isfinite(float(exp)):
            return "nonfinite", f"returned {got}{loc} but expected {exp:.6g}"
        if not math.isclose(float(got), float(exp), rel_tol=rtol, abs_tol=atol):
            return "values", f"returned {got:.6g}{loc} but expected {exp:.6g}"
        return None
    if isinstance(exp, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return "type", f"returned {_kind(got)}{loc} but expected a {type(exp).__name__} of {len(exp)}"
        if len(got) != len(exp):
            return "shape", f"returned a {type(got).__name__} of {len(got)}{loc} but expected {len(exp)} items"
        for i, (g, e) in enumerate(zip(got, exp)):
            found = compare(g, e, atol=atol, rtol=rtol, where=f"{where}[{i}]")
            if found is not None:
                return found
        return None
    if isinstance(exp, Mapping):
        if not isinstance(got, Mapping):
            return "type", f"returned {_kind(got)}{loc} but expected a dict"
        if set(got) != set(exp):
            return "shape", f"returned keys {sorted(map(str, got))}{loc} but expected {sorted(map(str, exp))}"
        for key in exp:
            found = compare(got[key], exp[key], atol=atol, rtol=rtol, where=f"{where}[{key!r}]")
            if found is not None:
                return found
        return None
    try:
        same = bool(got == exp)
    except Exception:  # e.g. a tensor where a string was expected
        same = False
    return None if same else ("values", f"returned {describe(got)}{loc} but expected {describe(exp)}")


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def _as_case(case: Any) -> Case:
    """A Case as given; a tuple is positional arguments, a dict keywords, anything else one argument."""
    if isinstance(case, Case):
        return case
    if isinstance(case, tuple):
        return Case(args=case)
    if isinstance(case, dict):
        return Case(kwargs=case)
    return Case(args=(case,))


def _array_inputs(case: Case, args: tuple, kwargs: dict) -> list[tuple[str, Any, Any]]:
    """(label, original, the copy the learner got) for each tensor or array input."""
    pairs = [(f"argument {i + 1}", a, b) for i, (a, b) in enumerate(zip(case.args, args))]
    pairs += [(f"`{k}`", v, kwargs[k]) for k, v in case.kwargs.items()]
    return [p for p in pairs if _is_tensor(p[1]) or isinstance(p[1], np.ndarray)]


def _inputs(case: Case) -> str:
    parts = [describe(a) for a in case.args] + [f"{k}={describe(v)}" for k, v in case.kwargs.items()]
    return ", ".join(parts) if parts else "no arguments"


# ---------------------------------------------------------------------------------------------
# the runner every check_* uses
# ---------------------------------------------------------------------------------------------


def run_cases(
    fn: Callable,
    reference: Callable,
    cases: Iterable[Any],
    *,
    name: str,
    hint: str | Mapping[str, str] | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int | None = 0,
) -> bool:
    """Call the learner's `fn` and the `reference` on each case and compare what they return.

    Every call gets its own deep copy of the inputs (so an in-place edit cannot leak into the
    reference), and both calls of a case start from the same random seed, so functions that
    draw noise can be compared too.

    Args:
        fn: the learner's function.
        reference: the package's implementation with the same signature.
        cases: each a `Case`, a tuple (positional arguments), a dict (keyword arguments) or a
            single argument.
        name: the exercise's name as the learner sees it ("q_sample").
        hint: a sentence appended to every wrong-answer message, or a dict from failure kind
            (one of `FAILURE_KINDS`: "shape", "dtype", "values", ...) to a sentence.
        atol, rtol: tolerance of the value comparison.
        seed: seed for random, numpy and torch before each call (`seed + case index`); None
            leaves the generators alone.

    Returns:
        True when every case matches; also prints "✓ name: all N checks passed".

    Raises:
        ExerciseFailed: at the first wrong case, saying what is wrong, on which inputs, and
            what to look at; also when `fn` raised (NotImplementedError: the stub is still there).
        ValueError: no cases were given.
    """
    cases = [_as_case(c) for c in cases]
    if not cases:
        raise ValueError(f"check for {name!r} has no cases: give at least one")
    if not callable(fn):
        raise ExerciseFailed(f"{name}: expected a function, got {_kind(fn)}: pass the function itself, without ()")

    def hint_for(kind: str) -> str:
        text = hint.get(kind) if isinstance(hint, Mapping) else hint
        return f": {text}" if text else ""

    n = len(cases)
    for k, case in enumerate(cases):
        where = f"\n  (check {k + 1} of {n}{'; ' + case.label if case.label else ''}; inputs: {_inputs(case)})"
        if seed is not None:
            _seed(seed + k)
        try:
            expected = reference(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
        except Exception as err:  # a broken case is the course's bug, not the learner's
            raise RuntimeError(f"the reference for {name} failed on check {k + 1}: {err!r}") from err
        args, kwargs = copy.deepcopy(case.args), copy.deepcopy(case.kwargs)
        if seed is not None:
            _seed(seed + k)
        try:
            got = fn(*args, **kwargs)
        except NotImplementedError as err:
            raise ExerciseFailed(
                f"{name}: your function raised NotImplementedError: replace the "
                f"`raise NotImplementedError` with your solution{where}"
            ) from err
        except Exception as err:
            raise ExerciseFailed(
                f"{name}: your function raised {type(err).__name__}: {err}{hint_for('error')}{where}"
            ) from err
        found = compare(got, expected, atol=atol, rtol=rtol)
        if found is not None:
            kind, problem = found
            sep = " " if problem.startswith("returned") else ": "
            raise ExerciseFailed(f"{name}{sep}{problem}{hint_for(kind)}{where}")
        for label, before, after in _array_inputs(case, args, kwargs):
            if compare(after, before, atol=0.0, rtol=0.0) is not None:
                raise ExerciseFailed(
                    f"{name} changed its input {label} in place: work on a copy "
                    f"(x = x.clone(), or out-of-place operations such as x * 2 instead of x.mul_(2))"
                    f"{hint_for('inplace')}{where}"
                )
    print(f"✓ {name}: all {n} checks passed")
    return True


def available_checks() -> list[str]:
    """The names of the `check_*` functions the chapters have defined in this module."""
    module = sys.modules[__name__]
    return sorted(n for n in dir(module) if n.startswith("check_") and callable(getattr(module, n)))


# ---------------------------------------------------------------------------------------------
# chapter checkers: one `check_<exercise>(fn)` per exercise, in course order, below this line.
# ---------------------------------------------------------------------------------------------


def check_position_at(fn) -> bool:
    """Chapter 00: the learner's `position_at(y, x)` against `course.data.position_at` (64×64 image)."""
    from course.data import position_at

    points = [(0, 0), (5, 30), (10.6, 60), (21.3, 0), (21.4, 21.4), (32, 32), (42.6, 42.7), (42.7, 42.6), (63.9, 63.9), (50, 10), (63, 32), (30, 63)]
    cases = [Case(args=p, label=f"(y, x) = {p}") for p in points]
    return run_cases(fn, position_at, cases, name="position_at", hint=(
        "the grid has 3 rows and 3 columns of 64/3 pixels each; row = y // (64/3) picks "
        "top / middle / bottom, col = x // (64/3) picks left / centre / right, and the position "
        "word is POSITIONS[3 * row + col]"
    ))


def check_reparameterize(fn) -> bool:
    """Chapter 02: the learner's `reparameterize(mean, logvar, eps)` against `course.vae.reparameterize`."""
    import torch

    from course.vae import reparameterize

    g = torch.Generator().manual_seed(2)
    mean, logvar, eps = (torch.randn(2, 4, 3, 3, generator=g) for _ in range(3))
    cases = [
        Case(args=(mean, torch.zeros_like(mean), eps), label="logvar = 0: std = 1, so z = mean + eps"),
        Case(args=(mean, logvar, eps), label="a batch of 2 latents (B, C, h, w) = (2, 4, 3, 3)"),
        Case(args=(mean, torch.full_like(mean, -4.0), torch.ones_like(mean)), label="logvar = -4: std = exp(-2)"),
        Case(args=(torch.zeros(1, 4, 2, 2), 2.0 * logvar[:1, :, :2, :2], eps[:1, :, :2, :2]), label="mean = 0"),
    ]
    return run_cases(fn, reparameterize, cases, name="reparameterize", hint=(
        "z = mean + std * eps with std = exp(logvar / 2): logvar is the log of the VARIANCE, so "
        "exp(logvar) is the variance, not the standard deviation; use the eps you are given "
        "(do not draw a new one)"
    ))


def check_kl(fn) -> bool:
    """Chapter 02: the learner's `gaussian_kl(mean, logvar)` against `course.vae.gaussian_kl`."""
    import torch

    from course.vae import gaussian_kl

    g = torch.Generator().manual_seed(3)
    mean, logvar = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    cases = [
        Case(args=(torch.zeros(2, 4, 2, 2), torch.zeros(2, 4, 2, 2)), label="q = N(0, I): the KL is 0"),
        Case(args=(mean, torch.zeros_like(mean)), label="unit variance: KL = sum(mean^2) / 2"),
        Case(args=(mean, logvar), label="a batch of 3 posteriors (B, C, h, w) = (3, 4, 2, 2)"),
        Case(args=(torch.zeros(1, 4, 8, 8), torch.full((1, 4, 8, 8), -6.0)), label="a narrow posterior at 0"),
    ]
    return run_cases(fn, gaussian_kl, cases, name="gaussian_kl", hint={
        "shape": "return one KL per sample, shape (B,): sum over every dimension but the batch",
        "values": "KL(N(mean, var) || N(0, 1)) = 0.5 * (mean^2 + var - 1 - logvar) per value, summed "
                  "(not averaged) over the latent's values; var = exp(logvar)",
    })


def check_q_sample(fn) -> bool:
    """Chapter 01: the learner's `q_sample(x0, t, eps, alpha_bar)` against `course.ddpm.q_sample`."""
    import torch

    from course.ddpm import SCHEDULES, q_sample

    g = torch.Generator().manual_seed(0)
    linear, cosine = SCHEDULES["ddpm_linear"].alpha_bar, SCHEDULES["cosine"].alpha_bar
    images = torch.randn(4, 1, 32, 32, generator=g)
    points = torch.randn(6, 2, generator=g)
    cases = [
        Case(args=(images, 0, torch.randn(4, 1, 32, 32, generator=g), linear), label="t = 0 keeps almost all of x0"),
        Case(args=(images, torch.tensor([0, 10, 500, 999]), torch.randn(4, 1, 32, 32, generator=g), linear),
             label="a batch of images, one t per image"),
        Case(args=(points, torch.tensor([1, 100, 300, 600, 900, 999]), torch.randn(6, 2, generator=g), cosine),
             label="2-D points, cosine schedule"),
        Case(args=(images, 250, torch.randn(4, 1, 32, 32, generator=g), cosine), label="one int t for the batch"),
    ]
    return run_cases(fn, q_sample, cases, name="q_sample", hint={
        "values": "xt = sqrt(alpha_bar[t]) * x0 + sqrt(1 - alpha_bar[t]) * eps: both coefficients are square "
                  "roots, and alpha_bar is indexed at t (not t - 1, not the betas)",
        "shape": "index alpha_bar[t] and reshape it to (B, 1, 1, 1) (one value per sample) so that it "
                 "broadcasts over the other dimensions of x0",
        "error": "t is either one int or a (B,) tensor: alpha_bar[t] then has shape () or (B,); reshape "
                 "the (B,) case to (B, 1, ..., 1) before multiplying",
    })


def _ddim_step_reference(eps, t, xt, alpha_bar, prev_t, eta=0.0, noise=None):
    """`course.ddpm.ddim_step` for an eps-prediction model, no clipping, alpha_bar past the end = 1."""
    from course.ddpm import Schedule, ddim_step

    schedule = Schedule(num_train_timesteps=len(alpha_bar), clip_sample=False)
    schedule.__dict__["alpha_bar"] = alpha_bar  # the cached property, set to the learner's alpha_bar
    return ddim_step(eps, t, xt, schedule, prev_t, eta, noise).x_prev


def check_ddim_step(fn) -> bool:
    """Chapter 01: the learner's `ddim_step(eps, t, xt, alpha_bar, prev_t, eta=0.0, noise=None)` -> x_prev."""
    import torch

    from course.ddpm import SCHEDULES

    g = torch.Generator().manual_seed(1)
    cosine, linear = SCHEDULES["cosine"].alpha_bar, SCHEDULES["ddpm_linear"].alpha_bar

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    cases = [
        Case(args=(randn(3, 1, 8, 8), 999, randn(3, 1, 8, 8), linear, 899), label="eta = 0, t = 999 -> 899"),
        Case(args=(randn(3, 1, 8, 8), 500, randn(3, 1, 8, 8), cosine, 450), label="eta = 0, cosine schedule"),
        Case(args=(randn(3, 1, 8, 8), 40, randn(3, 1, 8, 8), cosine, -1),
             label="the last step: prev_t = -1 means alpha_bar_prev = 1 (clean data)"),
        Case(args=(randn(5, 2), 700, randn(5, 2), linear, 600), kwargs={"eta": 0.5, "noise": randn(5, 2)},
             label="eta = 0.5 adds sigma * noise"),
        Case(args=(randn(5, 2), 300, randn(5, 2), cosine, 200), kwargs={"eta": 1.0, "noise": randn(5, 2)},
             label="eta = 1: DDPM's posterior noise"),
    ]
    return run_cases(fn, _ddim_step_reference, cases, name="ddim_step", atol=1e-5, hint={
        "values": "x0_hat = (xt - sqrt(1 - ab_t) eps) / sqrt(ab_t); sigma = eta * sqrt((1 - ab_prev) / (1 - ab_t)) "
                  "* sqrt(1 - ab_t / ab_prev); x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps "
                  "+ sigma * noise. At prev_t = -1 use ab_prev = 1: alpha_bar[-1] is the noisiest value, not 1",
        "shape": "x_prev has the shape of xt",
    })


def check_causal_mask(fn) -> bool:
    """Chapter 03: the learner's `causal_mask(T, attention_mask=None)` against `course.text.causal_mask`."""
    import torch

    from course.text import causal_mask

    padding = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    cases = [
        Case(args=(1,), label="a single token sees itself"),
        Case(args=(4,), label="T = 4, no padding: (1, 1, 4, 4)"),
        Case(args=(7,), label="T = 7"),
        Case(args=(6, padding), label="T = 6 with a padding mask of 2 rows: (2, 1, 6, 6), no query may see a padding key"),
    ]
    return run_cases(fn, lambda T, attention_mask=None: causal_mask(T, attention_mask), cases, name="causal_mask", hint={
        "values": "True means 'may attend': query i (row) sees keys j <= i (columns), so the mask is lower "
                  "triangular (torch.tril), diagonal included; with a padding mask, also set False every "
                  "column j whose attention_mask is 0",
        "shape": "return (1, 1, T, T) without a padding mask and (B, 1, T, T) with one, so it broadcasts over heads",
        "dtype": "return a boolean mask (torch.bool), True = attend",
    })


def check_clip_loss(fn) -> bool:
    """Chapter 03: the learner's `clip_loss(image_embeds, text_embeds, logit_scale)` against `course.clip.clip_loss`."""
    import torch
    import torch.nn.functional as F

    from course.clip import clip_loss

    g = torch.Generator().manual_seed(3)

    def unit(*shape):
        return F.normalize(torch.randn(*shape, generator=g), dim=-1)

    img, txt = unit(6, 8), unit(6, 8)
    near = F.normalize(img + 0.3 * unit(6, 8), dim=-1)
    cases = [
        Case(args=(img, txt, torch.tensor(1.0)), label="B = 6 random pairs, scale 1"),
        Case(args=(img, near, torch.tensor(14.3)), label="captions close to their images, scale 1/0.07"),
        Case(args=(img[:3], img[:3].flip(0), torch.tensor(10.0)), label="every caption matches another pair's image"),
        Case(args=(unit(2, 4), unit(2, 4), torch.tensor(100.0)), label="B = 2, the largest scale CLIP allows"),
    ]
    return run_cases(fn, clip_loss, cases, name="clip_loss", atol=1e-5, hint={
        "values": "logits = logit_scale * image_embeds @ text_embeds.T is (B, B) and the right match of row i is "
                  "column i; average the cross-entropy over images (rows) and the one over captions (the "
                  "transpose): a one-sided loss, a missing scale or the wrong labels give other numbers",
        "shape": "return one scalar, the mean over the batch",
    })


def check_cfg(fn) -> bool:
    """Chapter 04: the learner's `cfg(eps_uncond, eps_cond, guidance)` against `course.pipeline.cfg_combine`."""
    import torch

    from course.pipeline import cfg_combine

    g = torch.Generator().manual_seed(4)
    uncond, cond = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    cases = [
        Case(args=(uncond, cond, 1.0), label="w = 1: the conditional prediction alone"),
        Case(args=(uncond, cond, 7.5), label="w = 7.5, SD's default"),
        Case(args=(uncond[:1], cond[:1], 3.0), label="one image, w = 3"),
        Case(args=(uncond, uncond + 0.1, 5.0), label="a prompt that changes eps a little, w = 5"),
    ]
    return run_cases(fn, cfg_combine, cases, name="cfg", atol=1e-5, hint={
        "values": "eps = eps_uncond + w * (eps_cond - eps_uncond): start from the unconditional prediction and "
                  "move w times the difference towards the conditional one (swapping the two runs away from the prompt; "
                  "w = 1 must give eps_cond exactly)",
        "shape": "the guided eps has the shape of each input",
    })


def _cross_attention_reference(q, k, v):
    from course.attention import attention

    return attention(q, k, v, heads=1)  # (B, N, d): one head, softmax(q k^T / sqrt(d)) v


def check_cross_attention(fn) -> bool:
    """Chapter 04: the learner's `cross_attention(q, k, v)` (one head) against `course.attention.attention`.

    q (B, N, d) comes from the N image tokens, k and v (B, T, d) from the T text tokens; the answer
    is softmax(q k^T / sqrt(d)) v, (B, N, d), the softmax over the text tokens.
    """
    import torch

    g = torch.Generator().manual_seed(5)

    def qkv(B, N, T, d):
        return (torch.randn(B, N, d, generator=g), torch.randn(B, T, d, generator=g) * 2,
                torch.randn(B, T, d, generator=g))

    cases = [
        Case(args=qkv(2, 16, 5, 8), label="2 images of 4x4 tokens attending to 5 text tokens, d = 8"),
        Case(args=qkv(1, 64, 32, 64), label="an 8x8 latent, 32 text tokens, d = 64 (sd1-shapes' cross-attention)"),
        Case(args=qkv(3, 4, 4, 16), label="as many image tokens as text tokens, d = 16"),
        Case(args=qkv(1, 9, 1, 4), label="a single text token: every image token gets its value"),
    ]
    return run_cases(fn, _cross_attention_reference, cases, name="cross_attention", atol=1e-5, hint={
        "values": "scores = q @ k.transpose(-1, -2) / sqrt(d) is (B, N, T); softmax over the LAST axis (the text tokens, "
                  "so each image token's weights sum to 1), then @ v. Forgetting 1/sqrt(d) or taking the softmax over "
                  "the image tokens gives the right shape but wrong values",
        "shape": "the output has one row per image token: (B, N, d), the shape of q",
    })


def check_text_time(fn) -> bool:
    """Chapter 05: the learner's `text_time(pooled, time_ids, dim)` against `course.unet.text_time_vector`."""
    import torch

    from course.unet import text_time_vector

    g = torch.Generator().manual_seed(5)
    pooled = torch.randn(3, 12, generator=g)
    ids = torch.tensor([[64.0, 64, 0, 0, 64, 64], [128, 128, 32, 16, 64, 64], [24, 40, 0, 0, 48, 80]])
    cases = [
        Case(args=(pooled[:1], ids[:1], 8), label="one image, default conditioning (64, 64), (0, 0), (64, 64)"),
        Case(args=(pooled, ids, 8), label="three images with different sizes and crops"),
        Case(args=(pooled, ids, 16), label="a wider sinusoid per id (dim 16)"),
    ]
    return run_cases(fn, lambda p, i, d: text_time_vector(p, i, d), cases, name="text_time", hint={
        "shape": "the result is (B, P + 6 * dim): the pooled vector, then the six ids' embeddings flattened per image",
        "values": "embed EACH id with the timestep embedding (cos first, as SD: flip_sin_to_cos=True), flatten the "
                  "(B, 6, dim) embeddings to (B, 6 * dim) in id order, and put the pooled text FIRST",
    })
