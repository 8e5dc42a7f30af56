"""The student edition: solutions out, stubs in, outputs cleared, everything else as it was."""

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from course.exercises.runner import ExerciseFailed, run_cases
from course.paths import NOTEBOOK_DIR
from course.student import (
    CODE_STUB,
    MARKDOWN_STUB,
    RECORD,
    make_student_edition,
    solution_cells,
    solution_lines_left,
    strip_solutions,
)

FIXTURE = Path(__file__).parent / "fixtures" / "mini_chapter.ipynb"
STUB = 'raise NotImplementedError("Exercise: write your solution here")'


def check_double(fn):
    """A toy checker, as a chapter would write one in course.exercises."""
    return run_cases(fn, lambda x: x * 2, [0, 3, -2.5], name="double")


def cell_text(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.fixture()
def edition(tmp_path):
    """(source notebook, student notebook): the fixture in a folder with a stray file, converted."""
    src = tmp_path / "notebooks"
    src.mkdir()
    shutil.copy(FIXTURE, src / FIXTURE.name)
    (src / "notes.txt").write_text("not a notebook")
    written = make_student_edition(src, tmp_path / "student")
    assert written == [tmp_path / "student" / FIXTURE.name]
    # nothing else copied; beside the notebook only the record of what was written (it protects a learner's edits)
    assert sorted(p.name for p in (tmp_path / "student").iterdir()) == sorted([FIXTURE.name, RECORD])
    return src / FIXTURE.name, written[0]


def load(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def test_no_solution_survives(edition):
    src, out = edition
    assert solution_cells(src) == [2, 3, 4]
    assert solution_lines_left(out, src) == 0
    assert solution_lines_left(src, src) > 0  # the counter does find solutions where they are
    text = out.read_text(encoding="utf-8")
    for leaked in ("y = x * 2", "return y", "total = sum(range(5))", "closed form"):
        assert leaked in src.read_text(encoding="utf-8") and leaked not in text


def test_stubs_raise_and_checker_fails_on_stub_passes_on_solution(edition, capsys):
    src, out = edition
    solution, student = load(src)["cells"], load(out)["cells"]
    # the function exercise: the stub sits at the marker's indentation, inside the function
    assert f"    {STUB}\n" in cell_text(student[2])
    with pytest.raises(ExerciseFailed, match="raised NotImplementedError: replace the `raise NotImplementedError`"):
        exec(cell_text(student[2]), {"check_double": check_double})
    namespace = {}
    exec(cell_text(student[2]).split("check_double")[0], namespace)  # just the definition
    with pytest.raises(NotImplementedError, match="Exercise: write your solution here"):
        namespace["double"](3)
    exec(cell_text(solution[2]), {"check_double": check_double})
    assert "✓ double: all 3 checks passed" in capsys.readouterr().out
    # the top-level exercise raises as soon as the cell runs
    assert cell_text(student[4]).startswith(STUB + "\n")
    with pytest.raises(NotImplementedError):
        exec(cell_text(student[4]), {})


def test_outputs_cleared_rest_unchanged(edition):
    src, out = edition
    solution, student = load(src), load(out)
    nbformat.validate(nbformat.reads(out.read_text(encoding="utf-8"), as_version=4))
    assert student["metadata"] == solution["metadata"]
    assert len(student["cells"]) == len(solution["cells"])
    for i, (a, b) in enumerate(zip(solution["cells"], student["cells"])):
        assert (b["id"], b["cell_type"], b["metadata"]) == (a["id"], a["cell_type"], a["metadata"]), i
        if b["cell_type"] == "code":
            assert b["outputs"] == [] and b["execution_count"] is None, i
        if i not in (2, 3, 4):
            assert b["source"] == a["source"], i
    assert solution["cells"][1]["outputs"] and solution["cells"][5]["outputs"]  # the fixture had outputs
    written = out.read_text(encoding="utf-8")
    assert written.endswith("}\n") and written.startswith('{\n "cells": [\n  {')  # indent 1


def test_markdown_answer_replaced_and_fenced_example_kept(edition):
    _, out = edition
    text = cell_text(load(out)["cells"][3])
    assert MARKDOWN_STUB in text and "**Question.**" in text
    assert "```python\n### BEGIN SOLUTION\n```" in text  # an example of the markers, not a block


def test_strip_solutions_on_plain_strings():
    source = "def f(x):\n        ### BEGIN SOLUTION\n        return x\n        ### END SOLUTION"
    text, n = strip_solutions(source, "code", "nb, cell 0")
    assert (text, n) == (f"def f(x):\n        {CODE_STUB}", 1)
    text, n = strip_solutions("a\n### BEGIN SOLUTION\nb\n### END SOLUTION\nc\n### BEGIN SOLUTION\nd\n### END SOLUTION\n",
                              "code", "nb, cell 0")
    assert (text, n) == (f"a\n{CODE_STUB}\nc\n{CODE_STUB}\n", 2)
    assert strip_solutions("no exercise here\n", "code", "nb, cell 0") == ("no exercise here\n", 0)


def test_edition_is_deterministic_and_idempotent(edition, tmp_path):
    src, out = edition
    again = make_student_edition(src.parent, tmp_path / "again")[0]
    assert again.read_bytes() == out.read_bytes()
    twice = make_student_edition(out.parent, tmp_path / "twice")[0]
    assert twice.read_bytes() == out.read_bytes()  # nothing left to strip


def write_notebook(folder: Path, name: str, sources: list[str]) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    path = folder / name
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1\n### BEGIN SOLUTION\nx = 2\n", r"bad\.ipynb, cell 1: '### BEGIN SOLUTION' is never closed"),
        ("x = 2\n### END SOLUTION\n", r"bad\.ipynb, cell 1, line 2: '### END SOLUTION' without"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", r"bad\.ipynb, cell 1, line 2: nested"),
        ("## BEGIN SOLUTION\nx = 2\n### END SOLUTION\n", r"bad\.ipynb, cell 1, line 1: malformed solution marker"),
    ],
)
def test_malformed_markers_are_refused(tmp_path, source, message):
    src = tmp_path / "nb"
    src.mkdir()
    write_notebook(src, "a_good.ipynb", ["### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n"])
    write_notebook(src, "bad.ipynb", ["print('fine')", source])
    with pytest.raises(ValueError, match=message):
        make_student_edition(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_out_dir_must_be_outside_the_solutions(tmp_path):
    src = tmp_path / "nb"
    src.mkdir()
    path = write_notebook(src, "a.ipynb", ["### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n"])
    before = path.read_bytes()
    for out in (src, src / "student", tmp_path / "nb" / ".." / "nb"):
        with pytest.raises(ValueError, match="source folder .* or inside it"):
            make_student_edition(src, out)
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match="does not exist"):
        make_student_edition(tmp_path / "missing", tmp_path / "out")


def test_leak_counter_sees_leaks_and_ignores_shared_lines(tmp_path):
    src_dir, out_dir = tmp_path / "src", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    shared = "y = x.clone()"
    src = write_notebook(src_dir, "a.ipynb", [f"{shared}\n", f"### BEGIN SOLUTION\n{shared}\nz = y + 1\n### END SOLUTION\n"])
    clean = write_notebook(out_dir, "a.ipynb", [f"{shared}\n", f"{CODE_STUB}\n"])
    assert solution_lines_left(clean, src) == 0  # the shared line is the ordinary cell's
    leaky = write_notebook(out_dir, "b.ipynb", [f"{shared}\n", f"{CODE_STUB}\nz = y + 1\n{shared}\n"])
    assert solution_lines_left(leaky, src) == 2
    marked = write_notebook(out_dir, "c.ipynb", [f"{shared}\n", "### BEGIN SOLUTION\n"])
    assert solution_lines_left(marked, src) == 1
    with pytest.raises(FileNotFoundError, match="solution_path"):
        solution_lines_left(leaky)  # no notebooks/b.ipynb to compare with


def test_every_course_notebook(tmp_path):
    """The same proof over the real chapters in notebooks/ (skipped until there are some)."""
    sources = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    if not sources:
        pytest.skip("no notebooks in notebooks/ yet")
    written = make_student_edition(NOTEBOOK_DIR, tmp_path / "student")
    assert [p.name for p in written] == [p.name for p in sources]
    for src, out in zip(sources, written):
        assert solution_lines_left(out, src) == 0, src.name
        for cell in load(out)["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, src.name
