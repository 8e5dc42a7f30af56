"""The notebooks' setup cell and the PNG writer behind `python -m course generate`."""

import numpy as np
import pytest
import torch
from PIL import Image

from course import runtime
from course.pipelines import base


def test_seed_everything_repeats_draws():
    runtime.seed_everything(3)
    a = (torch.randn(4), np.random.rand(4))
    runtime.seed_everything(3)
    b = (torch.randn(4), np.random.rand(4))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_device_can_be_forced(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert runtime.pick_device() == torch.device("cpu")
    assert runtime.setup(seed=0, quiet=True) == torch.device("cpu")


def test_save_images_writes_pngs(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    paths = base.save_images(images, tmp_path / "out", prefix="x")
    assert [p.name for p in paths] == ["x-0000.png", "x-0001.png", "x-0002.png"]
    assert np.array_equal(np.asarray(Image.open(paths[1])), images[1])
    with pytest.raises(ValueError, match="uint8"):
        base.save_images(images.astype(np.float32), tmp_path)


def _run_cells(tmp_path, *sources):
    """Execute code cells in a fresh kernel through nbclient, as nbval and nbconvert do."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


CHAPTER_02_FIGURE = """\
from matplotlib.figure import Figure
fig = Figure(figsize=(4, 2), layout="constrained")
ax1, ax2 = fig.subplots(1, 2)
ax1.plot([0, 1]); ax2.hist([0, 1, 1, 2])
fig"""


def test_setup_shows_a_bare_figure_as_png(tmp_path):
    """Chapter 02 builds Figures without pyplot and ends the cell with `fig`: it must come out as a PNG."""
    nb = _run_cells(tmp_path, "from course.runtime import setup\ndevice = setup(seed=0, quiet=True)", CHAPTER_02_FIGURE)
    (out,) = nb.cells[1].outputs
    assert out.output_type == "execute_result" and "image/png" in out.data
    assert out.data["image/png"]  # base64 PNG text
    control = _run_cells(tmp_path, CHAPTER_02_FIGURE)  # without setup: the bug setup fixes
    assert "image/png" not in control.cells[0].outputs[0].data


def test_register_figure_formatter_outside_ipython_is_a_no_op():
    assert runtime.register_figure_formatter() is False
