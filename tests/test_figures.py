"""Every cell that draws shows an image: each chapter notebook is executed once and checked.

A cell that creates a matplotlib Figure must leave an `image/png` output, so that an executed
notebook (nbconvert, GitHub's viewer, an HTML export) shows what the text talks about. The
mechanism is `tools/figure_check.py`, which `tools/store_outputs.py` also runs.
"""

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from figure_check import execute  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_the_check_finds_a_figure_that_is_not_shown(tmp_path):
    cells = ["from matplotlib.figure import Figure\nfig = Figure()\nfig.subplots().plot([0, 1])",  # drawn, never shown
             "from course.runtime import setup\nsetup(quiet=True)\nfig",  # shown
             "print('no figure here')"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in cells])
    path = tmp_path / "probe.ipynb"
    nbformat.write(nb, path)
    executed, problems, _ = execute(path)
    assert len(problems) == 1 and problems[0].startswith("cell 0 made 1 figure(s)")
    assert [c.execution_count for c in executed.cells] == [1, 2, 3]  # the probe cells are gone


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_cell_shows_an_image(path):
    _, problems, _ = execute(path)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_unet_diagram_is_drawn_from_the_config():
    from course.nn import unet
    from course.recipes.unet_diagram import unet_diagram

    preset = unet.get_preset("shapes-latent")
    texts = [t.get_text() for t in unet_diagram(preset).axes[0].texts]
    assert sum(t.startswith("down ") for t in texts) == sum(t.startswith("up ") for t in texts) == preset.levels
    assert any("128 ch @ 2x2" in t and t.startswith("mid") for t in texts)
    assert sum("attn" in t for t in texts if t.startswith(("down", "up"))) == 4  # no attention in the lowest level
    small = unet.get_preset("fashion-32")
    assert sum(t.startswith("down ") for t in (x.get_text() for x in unet_diagram(small).axes[0].texts)) == 4
