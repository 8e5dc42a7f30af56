"""Chapter 00's exercise checkers (see `course.exercises.runner` for how a checker works)."""

from __future__ import annotations

from course.exercises.runner import Case, run_cases


def check_position_at(fn) -> bool:
    """Chapter 00: the learner's `position_at(y, x)` against `course.world.shapes.position_at` (64×64 image)."""
    from course.world.shapes import position_at

    points = [(0, 0), (5, 30), (10.6, 60), (21.3, 0), (21.4, 21.4), (32, 32), (42.6, 42.7), (42.7, 42.6), (63.9, 63.9), (50, 10), (63, 32), (30, 63)]
    cases = [Case(args=p, label=f"(y, x) = {p}") for p in points]
    return run_cases(fn, position_at, cases, name="position_at", hint=(
        "the grid has 3 rows and 3 columns of 64/3 pixels each; row = y // (64/3) picks "
        "top / middle / bottom, col = x // (64/3) picks left / centre / right, and the position "
        "word is POSITIONS[3 * row + col]"
    ))
