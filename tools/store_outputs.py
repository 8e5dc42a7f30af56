"""Run chapter notebooks and store only the outputs that nbval compares.

    python tools/store_outputs.py notebooks/00_welcome.ipynb [...] [--figures DIR]

With --figures DIR, every image the run drew is also written to DIR/<notebook>/cell<N>_<k>.png,
and every cell's text output to DIR/<notebook>/cell<N>.txt, so that you can look at the
figures and the ignored outputs before committing (they are not stored in the notebook).

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
import figure_check  # noqa: E402
from figure_check import execute  # noqa: E402

KEEP = {"text/plain", "text/markdown", "text/html"}


def save_figures(nb, folder: Path) -> int:
    """Write every image/png of the executed notebook to folder/cell<N>_<k>.png (and text to cell<N>.txt)."""
    import base64

    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for index, cell in enumerate(nb.cells):
        text = "".join(o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", "") + "\n"
                       for o in cell.get("outputs", []) if o.output_type != "error")
        if text.strip():
            (folder / f"cell{index}.txt").write_text(text)
        for k, out in enumerate(o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})):
            (folder / f"cell{index}_{k}.png").write_bytes(base64.b64decode(out.data["image/png"]))
            n += 1
    return n


def store(path: Path, figures: Path | None = None) -> float:
    nb, problems, seconds = execute(path)
    if figures is not None:
        save_figures(nb, figures / path.stem)
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
    args = sys.argv[1:]
    figures = None
    if "--figures" in args:
        i = args.index("--figures")
        figures = Path(args[i + 1])
        del args[i : i + 2]
    for arg in args:
        seconds = store(Path(arg), figures)
        print(f"{arg}: ran in {seconds:.1f} s (kernel CPU {figure_check.last_kernel_cpu_s or 0:.1f} s), outputs stored")
