"""The student edition: copies of the notebooks with every exercise's solution taken out.

The notebooks in git carry the solutions between nbgrader's markers, each on a line of its own:

    ### BEGIN SOLUTION
    ...
    ### END SOLUTION

`make_student_edition(src_dir, out_dir)` writes a copy of each notebook in which every such block
(markers included) becomes, in a code cell, `raise NotImplementedError("Exercise: write your
solution here")` at the indentation of the BEGIN marker and, in a markdown cell, "_Your answer
here._". Outputs and execution counts are cleared; everything else (cell ids, cell metadata,
the other cells) is kept as it is. `solution_lines_left` proves that nothing of a solution
survived. `python -m course student-edition DIR` calls `make_student_edition(NOTEBOOK_DIR, DIR)`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from course.exercises.runner import STUB_MESSAGE
from course.paths import NOTEBOOK_DIR

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CODE_STUB = f'raise NotImplementedError("{STUB_MESSAGE}")'  # what replaces a code solution
MARKDOWN_STUB = "_Your answer here._"  # what replaces a written answer
_MARKER_LIKE = re.compile(r"^#+\s*(BEGIN|END)\s+SOLUTION\s*$", re.IGNORECASE)  # typos included


def _source_text(cell: dict) -> str:
    """A cell's source as one string (nbformat stores it as a string or a list of lines)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _marker(line: str, where: str) -> str | None:
    """'begin', 'end' or None for one line; a near-miss marker (## BEGIN SOLUTION) is refused."""
    text = line.strip()
    if text == BEGIN:
        return "begin"
    if text == END:
        return "end"
    if _MARKER_LIKE.match(text):
        raise ValueError(
            f"{where}: malformed solution marker {text!r}; write exactly {BEGIN!r} and {END!r} "
            "on lines of their own, so that the student edition can remove the solution"
        )
    return None


def _fenced(text: str, markdown: bool) -> list[bool]:
    """For each line, whether it sits in a markdown code fence (an example shown, not a marker)."""
    flags, fence = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        opener = stripped[:3] if stripped[:3] in ("```", "~~~") else None
        flags.append(markdown and (fence is not None or opener is not None))
        if markdown and opener is not None:
            fence = None if fence == opener else (fence or opener)
    return flags


def split_solutions(text: str, where: str, markdown: bool = False) -> list[tuple[bool, list[str]]]:
    """Split a cell's source into runs of kept lines and solution blocks.

    Args:
        text: the cell's source.
        where: "notebook.ipynb, cell 3", for error messages.
        markdown: a markdown cell, where lines inside ``` fences are examples, never markers
            (so chapter 00 can show what an exercise cell looks like).

    Returns:
        [(is_solution, lines)], lines with their line endings; a solution run includes both
        marker lines.

    Raises:
        ValueError: an END without a BEGIN, a BEGIN inside a block, or a BEGIN never closed.
    """
    runs: list[tuple[bool, list[str]]] = [(False, [])]
    inside = False
    fenced = _fenced(text, markdown)
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        kind = None if fenced[number - 1] else _marker(line, f"{where}, line {number}")
        if kind == "begin":
            if inside:
                raise ValueError(f"{where}, line {number}: nested {BEGIN!r}; close the first block with {END!r}")
            inside = True
            runs.append((True, []))
        runs[-1][1].append(line)
        if kind == "end":
            if not inside:
                raise ValueError(f"{where}, line {number}: {END!r} without a {BEGIN!r} before it")
            inside = False
            runs.append((False, []))
    if inside:
        raise ValueError(f"{where}: {BEGIN!r} is never closed; add a line {END!r} after the solution")
    return [run for run in runs if run[1]]


def strip_solutions(text: str, cell_type: str, where: str) -> tuple[str, int]:
    """Replace every solution block of one cell's source by its stub.

    Args:
        text: the cell's source.
        cell_type: "code" (stub: raise NotImplementedError at the BEGIN marker's indentation) or
            "markdown" (stub: "_Your answer here._").
        where: "notebook.ipynb, cell 3", for error messages.

    Returns:
        (the new source, the number of blocks replaced).
    """
    out, blocks = [], 0
    for is_solution, lines in split_solutions(text, where, markdown=cell_type == "markdown"):
        if not is_solution:
            out.extend(lines)
            continue
        blocks += 1
        indent = lines[0][: len(lines[0]) - len(lines[0].lstrip())]
        ending = lines[-1][len(lines[-1].rstrip("\r\n")) :]  # keep the END line's newline, if any
        stub = CODE_STUB if cell_type == "code" else MARKDOWN_STUB
        out.append((indent if cell_type == "code" else "") + stub + ending)
    return "".join(out), blocks


def _runs(cell: dict, where: str) -> list[tuple[bool, list[str]]]:
    """split_solutions for one notebook cell."""
    return split_solutions(_source_text(cell), where, markdown=cell.get("cell_type") == "markdown")


def _student_notebook(notebook: dict, name: str) -> dict:
    """The student copy of one notebook (a new dict; the input is not changed)."""
    nb = json.loads(json.dumps(notebook))  # deep copy
    if nb.get("nbformat") != 4:
        raise ValueError(f"{name}: nbformat {nb.get('nbformat')} is not supported; save it as nbformat 4")
    nb.get("metadata", {}).pop("widgets", None)  # saved widget state is output too
    for index, cell in enumerate(nb.get("cells", [])):
        where = f"{name}, cell {index}"
        text = _source_text(cell)
        if cell.get("cell_type") in ("code", "markdown"):
            new_text, blocks = strip_solutions(text, cell["cell_type"], where)
            if blocks:
                cell["source"] = new_text.splitlines(keepends=True)
        elif any(_marker(line, where) for line in text.splitlines()):
            kind = cell.get("cell_type")
            raise ValueError(f"{where}: solution markers in a {kind} cell; use a code or markdown cell")
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


def _notebook_text(nb: dict) -> str:
    """nbformat 4 JSON as Jupyter writes it: indent 1, sorted keys, a trailing newline."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def _write_notebook(nb: dict, path: Path) -> None:
    path.write_text(_notebook_text(nb), encoding="utf-8")


RECORD = ".student-edition.json"  # in the edition's folder: notebook name -> sha256 of what was written there last


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _backup_path(path: Path) -> Path:
    """NAME.ipynb.bak, or .bak2, .bak3 ... : a backup never replaces an earlier one."""
    candidate, n = path.with_name(path.name + ".bak"), 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.bak{n}")
    return candidate


def make_student_edition(src_dir: Path, out_dir: Path, force: bool = False) -> list[Path]:
    """Write the learner's copy of every notebook in `src_dir` to `out_dir`.

    All notebooks are checked before any is written, so a malformed one leaves no partial
    edition behind. Only `*.ipynb` files are written; nothing else is copied.

    A learner's work is never lost: `out_dir/.student-edition.json` records what was written
    there, and a notebook that differs from it (edited since, or not written by this function)
    is overwritten only with `force`, after a copy to `NAME.ipynb.bak` (`.bak2`, ... if taken).

    Args:
        src_dir: the folder of solution notebooks (the course's `notebooks/`).
        out_dir: where to write the copies; created if needed; must not be `src_dir` or inside it.
        force: overwrite edited notebooks too, each backed up first.

    Returns:
        The paths written, in the sorted order of the source notebooks.

    Raises:
        FileExistsError: without `force`, notebooks in out_dir differ from what was written there
            last (the message names them and the flag that overwrites them with a backup).
        ValueError: out_dir is src_dir or inside it (that would overwrite or mix in the
            solutions), src_dir is not a folder, or a notebook has an unmatched or nested
            marker (the message names the notebook and the cell index).
    """
    src_dir, out_dir = Path(src_dir).resolve(), Path(out_dir).resolve()
    if not src_dir.is_dir():
        raise ValueError(f"source folder {src_dir} does not exist or is not a folder")
    if out_dir == src_dir or src_dir in out_dir.parents:
        raise ValueError(
            f"out_dir {out_dir} is the source folder {src_dir} or inside it; the student edition "
            "would overwrite or sit beside the solutions. Choose a folder outside it, e.g. student/"
        )
    editions = []
    for path in sorted(src_dir.glob("*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        editions.append((out_dir / path.name, _student_notebook(notebook, path.name)))
    record_path = out_dir / RECORD
    try:
        record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    except json.JSONDecodeError:
        record = {}
    texts = [(path, _notebook_text(nb)) for path, nb in editions]
    edited = [path for path, text in texts if path.exists()
              and _sha(path.read_bytes()) not in (record.get(path.name), _sha(text.encode("utf-8")))]
    if edited and not force:
        names = ", ".join(str(p) for p in edited)
        raise FileExistsError(
            f"{len(edited)} notebook(s) in {out_dir} differ from what student-edition wrote there last (a learner's "
            f"edits): {names}. Nothing was written. To replace them anyway, each kept first as NAME.ipynb.bak, add "
            "--force (in Python: force=True); or write the edition into another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in edited:
        path.replace(_backup_path(path))
    for path, text in texts:
        path.write_text(text, encoding="utf-8")
        record[path.name] = _sha(text.encode("utf-8"))
    record_path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return [path for path, _ in editions]


def solution_cells(notebook_path: Path) -> list[int]:
    """Indices of the cells of a notebook that hold at least one solution block."""
    nb = json.loads(Path(notebook_path).read_text(encoding="utf-8"))
    name = Path(notebook_path).name
    return [
        i
        for i, cell in enumerate(nb["cells"])
        if any(is_sol for is_sol, _ in _runs(cell, f"{name}, cell {i}"))
    ]


def _line_counts(nb: dict, name: str, solution: bool) -> Counter:
    """How often each non-blank stripped line occurs inside (solution=True) or outside solution blocks."""
    counts: Counter = Counter()
    for i, cell in enumerate(nb["cells"]):
        for is_sol, lines in _runs(cell, f"{name}, cell {i}"):
            if is_sol == solution:
                counts.update(line.strip() for line in lines if line.strip())
    return counts


def solution_lines_left(notebook_path: Path, solution_path: Path | None = None) -> int:
    """Count what survives of the solutions in a student notebook; 0 means nothing leaked.

    Counts every solution marker left in `notebook_path`, plus every occurrence of a solution
    line of `solution_path` (compared stripped, blank lines ignored) beyond the number of times
    the same line appears outside the solutions in the source (so that a line such as
    `x = x0.clone()`, shared by a solution and an ordinary cell, is not counted).

    Args:
        notebook_path: a student-edition notebook.
        solution_path: the solution notebook it was made from; default the notebook of the
            same name in the course's notebooks/ folder.

    Returns:
        The number of leaked marker and solution lines.
    """
    notebook_path = Path(notebook_path)
    solution_path = Path(solution_path) if solution_path is not None else NOTEBOOK_DIR / notebook_path.name
    if not solution_path.is_file():
        raise FileNotFoundError(f"solution notebook {solution_path} not found; pass solution_path=")
    student: dict[str, Any] = json.loads(notebook_path.read_text(encoding="utf-8"))
    source: dict[str, Any] = json.loads(solution_path.read_text(encoding="utf-8"))
    student_lines: Counter = Counter()
    markers = 0
    for cell in student["cells"]:
        text = _source_text(cell)
        fenced = _fenced(text, markdown=cell.get("cell_type") == "markdown")
        for line, in_fence in zip(text.splitlines(), fenced):
            student_lines.update([line.strip()] if line.strip() else [])
            markers += not in_fence and _MARKER_LIKE.match(line.strip()) is not None
    solution = _line_counts(source, solution_path.name, solution=True)
    kept = _line_counts(source, solution_path.name, solution=False)
    leaked = sum(max(0, student_lines[line] - kept[line]) for line in solution if line not in (BEGIN, END))
    return markers + leaked
