"""Execute a notebook and find the cells that drew a figure but show no image.

    python tools/figure_check.py notebooks/02_latent_space.ipynb [...]

A cell "draws" when it creates a matplotlib Figure (pyplot or not). In an executed notebook,
nbconvert, GitHub's viewer or an HTML export, such a cell must leave an `image/png` output;
otherwise the learner reads `<Figure size 1100x300 with 2 Axes>` or nothing at all.

How: a probe cell, run first, wraps `Figure.__init__` to count the figures each cell creates
(IPython's pre/post_run_cell events); a last cell prints the counts. Both cells are removed
again, so `execute` hands back the notebook as it ran. Used by `tests/test_figures.py` and
by `tools/store_outputs.py` when it refreshes stored outputs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

MARK = "__course_figure_probe__"
PROBE = f'''# {MARK}
import matplotlib.figure as _mf
from IPython import get_ipython as _gi
_probe = {{"current": 0, "cells": {{}}}}
_init = _mf.Figure.__init__
def _counting_init(self, *args, **kwargs):
    _probe["current"] += 1
    _init(self, *args, **kwargs)
_mf.Figure.__init__ = _counting_init
def _pre(info=None):
    _probe["current"] = 0
def _post(result):
    _probe["cells"][result.execution_count] = _probe["current"]
_gi().events.register("pre_run_cell", _pre)
_gi().events.register("post_run_cell", _post)
'''
REPORT = f'''# {MARK}
import json as _json, resource as _resource
_usage = _resource.getrusage(_resource.RUSAGE_SELF)
_probe["cells"]["cpu_s"] = _usage.ru_utime + _usage.ru_stime
print("{MARK}" + _json.dumps(_probe["cells"]))
'''
last_kernel_cpu_s: float | None = None  # CPU seconds the kernel used in the last `execute` (all its threads)


def _image_outputs(cell) -> int:
    return sum(1 for out in cell.get("outputs", []) if "image/png" in out.get("data", {}))


def execute(path: Path, timeout: int = 600) -> tuple[nbformat.NotebookNode, list[str], float]:
    """Run the notebook as nbval does (fresh kernel, its folder, COURSE_STATIC_WIDGETS=1).

    Returns:
        The executed notebook (probe cells removed, execution counts as a plain run gives them),
        the problems found (one line per cell that drew without showing an image, or raised),
        and the wall time in seconds.
    """
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(PROBE))
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    os.environ["COURSE_STATIC_WIDGETS"] = "1"
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(Path(path).parent)}}).execute()
    seconds = time.perf_counter() - start
    report = "".join(out.get("text", "") for out in nb.cells[-1].outputs if out.output_type == "stream")
    global last_kernel_cpu_s
    raw = json.loads(report.split(MARK, 1)[1]) if MARK in report else None
    last_kernel_cpu_s = raw.pop("cpu_s", None) if raw else None
    counts = {int(k): v for k, v in raw.items()} if raw is not None else None
    del nb.cells[0], nb.cells[-1]
    problems = [] if counts is not None else ["the figure probe did not report (the kernel died?)"]
    code_index = 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        code_index += 1
        errors = [out for out in cell.outputs if out.output_type == "error"]
        if errors:
            problems.append(f"cell {index} raised {errors[0].ename}: {errors[0].evalue}")
        drew = (counts or {}).get(cell.execution_count, 0)
        if drew and not _image_outputs(cell):
            first = cell.source.strip().splitlines()[-1][:70] if cell.source.strip() else ""
            problems.append(f"cell {index} made {drew} figure(s) but shows no image/png (last line: {first!r})")
        # the probe ran first: shift the counts back to what a plain run gives
        cell.execution_count = code_index
        for out in cell.outputs:
            if out.output_type == "execute_result":
                out.execution_count = code_index
    return nb, problems, seconds


def figure_cells(nb: nbformat.NotebookNode) -> int:
    """How many code cells show at least one image/png."""
    return sum(1 for cell in nb.cells if cell.cell_type == "code" and _image_outputs(cell))


if __name__ == "__main__":
    failed = False
    for arg in sys.argv[1:]:
        nb, problems, seconds = execute(Path(arg))
        print(f"{arg}: {seconds:.1f} s, {figure_cells(nb)} cells with images, {len(problems)} problems")
        for line in problems:
            print("  ", line)
        failed |= bool(problems)
    sys.exit(1 if failed else 0)
