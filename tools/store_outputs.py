"""Run chapter notebooks and store only the outputs that nbval compares.

    python tools/store_outputs.py notebooks/00_welcome.ipynb [...]

Cells marked `# NBVAL_IGNORE_OUTPUT` (figures, timings, machine-dependent text) are stored
empty; other cells keep their text outputs, with images dropped. Execution counts stay: nbval
treats a cell without one as never run.
The notebook runs as nbval runs it: in a fresh kernel, from the notebooks folder, with
COURSE_STATIC_WIDGETS=1, through `figure_check.execute`: a cell that raised, or that drew a
figure and shows no image, stops the refresh (nothing is written). Prints each notebook's wall
time.
"""

import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figure_check import execute  # noqa: E402

KEEP = {"text/plain", "text/markdown", "text/html"}


def store(path: Path) -> float:
    nb, problems, seconds = execute(path)
    if problems:
        raise RuntimeError(f"{path}: outputs not stored:\n  " + "\n  ".join(problems))
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "NBVAL_IGNORE_OUTPUT" in cell.source:
            cell.outputs = []
            continue
        kept = []
        for out in cell.outputs:
            if out.output_type in ("display_data", "execute_result"):
                out.data = {k: v for k, v in out.data.items() if k in KEEP}
                if not out.data:
                    continue
            kept.append(out)
        cell.outputs = kept
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    return seconds


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg}: ran in {store(Path(arg)):.1f} s, outputs stored")
