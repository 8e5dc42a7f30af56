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

How a chapter adds a checker (one function per exercise, in the chapter's module `course.exercises.chNN`,
which imports `Case` and `run_cases` from here):

    def check_q_sample(fn) -> bool:
        # docstring: "Check the learner's `q_sample` against `course.diffusion.ddpm.q_sample`."
        import torch
        from course.diffusion.ddpm import q_sample  # the reference: the package is the source of truth

        g = torch.Generator().manual_seed(0)
        cases = [
            Case(args=(torch.randn(4, 1, 32, 32, generator=g), torch.tensor([0, 10, 500, 999])),
                 kwargs={...}, label="batch of 4 images"),
            ...
        ]
        return run_cases(fn, q_sample, cases, name="q_sample",
                         hint={"shape": "did you broadcast alpha_bar over the image dimensions?"})

Rules for checkers: the reference is imported from the package inside the function (so that
`import course.exercises.chNN` stays light), cases are small and deterministic (seeded), and the
hint names the likely mistake for each kind of failure. `available_checks()` lists them.
"""

from __future__ import annotations

import copy
import importlib
import math
import pkgutil
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
    """The names of the `check_*` functions that the chapters' modules (`course.exercises.chNN`) define."""
    import course.exercises

    names = []
    for info in pkgutil.iter_modules(course.exercises.__path__):
        if info.name.startswith("ch"):
            module = importlib.import_module(f"course.exercises.{info.name}")
            names += [n for n in vars(module) if n.startswith("check_") and callable(getattr(module, n))]
    return sorted(names)
