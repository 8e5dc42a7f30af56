"""Widgets: controls validate, the static fallback draws the right panels, explore picks its mode."""

import numpy as np
import pytest
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from course.widgets import (
    MAX_PANELS,
    STATIC_ENV,
    Choice,
    Slider,
    Toggle,
    build_widget,
    explore,
    in_widget_frontend,
    render_static,
    sweep_values,
    to_image,
)


def noise_image(t: int, schedule: str = "linear", flip: bool = False) -> np.ndarray:
    """A pure toy explorer: a grey ramp whose brightness follows t."""
    level = t / 999 if schedule == "linear" else np.sin(t / 999 * np.pi / 2) ** 2
    image = np.full((8, 8, 3), int(255 * level), dtype=np.uint8)  # (H, W, 3)
    return image[::-1] if flip else image


def curve_figure(scale: float) -> Figure:
    """A pure toy explorer that draws with pyplot, as chapters will."""
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot(np.linspace(0, 1, 5) * scale)
    return fig


CONTROLS = {"t": Slider(0, 999, 1, 250), "schedule": Choice(("linear", "cosine")), "flip": Toggle(False)}


def test_slider_validates():
    assert Slider(0.0, 1.0, 0.1, 0.5).default == 0.5
    with pytest.raises(ValueError, match="lo < hi"):
        Slider(1.0, 1.0, 0.1, 1.0)
    with pytest.raises(ValueError, match="outside"):
        Slider(0, 10, 1, 11)
    with pytest.raises(ValueError, match="step"):
        Slider(0, 10, 0, 5)
    with pytest.raises(ValueError, match="finite number"):
        Slider(0, float("inf"), 1, 5)
    with pytest.raises(ValueError, match="outside"):
        Slider(0, 10, 1, 5).check(-1)


def test_choice_and_toggle_validate():
    assert Choice(["a", "b"]).value == "a" and Choice(["a", "b"]).options == ("a", "b")
    with pytest.raises(ValueError, match="not one of the options"):
        Choice(("linear", "cosine"), "sigmoid")
    with pytest.raises(ValueError, match="at least one option"):
        Choice(())
    with pytest.raises(ValueError, match="distinct"):
        Choice(("a", "a"))
    with pytest.raises(ValueError, match="True or False"):
        Toggle(1)


def test_sweep_values_default_and_given():
    panels = sweep_values(CONTROLS)
    assert [p["t"] for p in panels] == [0, 250, 500, 999]  # lo, default, mid, hi
    assert all(p["schedule"] == "linear" and p["flip"] is False for p in panels)
    grid = sweep_values(CONTROLS, {"t": [0, 999], "schedule": ["linear", "cosine"]})
    assert [(p["t"], p["schedule"]) for p in grid] == [(0, "linear"), (0, "cosine"), (999, "linear"), (999, "cosine")]
    assert Slider(0.0, 1.0, 0.25, 0.25).sweep() == [0.0, 0.25, 0.5, 1.0]
    assert Choice(("a", "b", "c"), "b").sweep() == ["b", "a", "c"]


def test_sweep_values_refuses_bad_sweeps():
    with pytest.raises(ValueError, match="not a control"):
        sweep_values(CONTROLS, {"guidance": [1.0]})
    with pytest.raises(ValueError, match="outside"):
        sweep_values(CONTROLS, {"t": [0, 5000]})
    with pytest.raises(ValueError, match="non-empty list"):
        sweep_values(CONTROLS, {"schedule": "linear"})
    with pytest.raises(ValueError, match=f"more than {MAX_PANELS}"):
        sweep_values(CONTROLS, {"t": list(range(9)), "schedule": ["linear", "cosine"]})


def panel_axes(fig):
    return [ax for ax in fig.axes if ax.get_images()]


def test_static_fallback_has_one_panel_per_setting():
    fig = render_static(noise_image, CONTROLS)
    axes = panel_axes(fig)
    assert len(axes) == 4
    assert [ax.get_title() for ax in axes] == ["t=0", "t=250", "t=500", "t=999"]
    # each panel shows what the pure function drew for its setting
    assert np.array_equal(axes[1].get_images()[0].get_array(), noise_image(250))
    fig = render_static(noise_image, CONTROLS, {"t": [0, 500, 999], "schedule": ["linear", "cosine"]})
    axes = panel_axes(fig)
    assert len(axes) == 6 and axes[0].get_subplotspec().get_gridspec().get_geometry() == (3, 2)
    assert axes[3].get_title() == "t=500, schedule=cosine"
    assert np.array_equal(axes[3].get_images()[0].get_array(), noise_image(500, "cosine"))


def test_static_fallback_takes_figures_and_closes_them():
    open_before = plt.get_fignums()
    fig = render_static(curve_figure, {"scale": Slider(0.0, 2.0, 0.5, 1.0)})
    assert [ax.get_title() for ax in panel_axes(fig)] == ["scale=0", "scale=1", "scale=2"]  # 1: default and mid
    assert panel_axes(fig)[0].get_images()[0].get_array().shape[2] == 4  # rendered RGBA
    assert plt.get_fignums() == open_before  # the pyplot figures were closed


def test_to_image_refuses_what_it_cannot_draw():
    assert to_image(np.zeros((4, 4), dtype=np.float32)).dtype == np.uint8
    with pytest.raises(TypeError, match=r"numpy image \(H, W, 3\) uint8, got ndarray of shape \(3, 8, 8\)"):
        to_image(np.zeros((3, 8, 8), dtype=np.uint8))
    with pytest.raises(TypeError, match=r"float in \[0, 1\]"):
        to_image(np.full((4, 4, 3), 2.0))
    with pytest.raises(TypeError, match="got list"):
        to_image([1, 2, 3])


def test_explore_validates_its_arguments():
    with pytest.raises(TypeError, match="must be a Slider, Choice or Toggle"):
        explore(noise_image, t=(0, 999))
    with pytest.raises(TypeError, match="cannot take the controls"):
        explore(noise_image, t=Slider(0, 999, 1, 250), guidance=Slider(1.0, 9.0, 0.5, 3.0))
    with pytest.raises(ValueError, match="at least one control"):
        explore(noise_image)


def test_explore_static_with_env_var(monkeypatch):
    monkeypatch.setenv(STATIC_ENV, "1")
    assert in_widget_frontend() is False
    fig = explore(noise_image, static={"flip": [False, True]}, **CONTROLS)
    assert isinstance(fig, Figure) and len(panel_axes(fig)) == 2
    assert fig._repr_png_().startswith(b"\x89PNG")  # a notebook shows it as an image by itself
    assert np.array_equal(panel_axes(fig)[1].get_images()[0].get_array(), noise_image(250, flip=True))


def test_plain_python_is_not_a_widget_frontend(monkeypatch):
    monkeypatch.delenv(STATIC_ENV, raising=False)
    assert in_widget_frontend() is False  # pytest runs no IPython kernel
    assert isinstance(explore(noise_image, t=Slider(0, 999, 1, 250)), Figure)


def test_widget_front_builds_matching_widgets():
    ipywidgets = pytest.importorskip("ipywidgets")
    widget = build_widget(noise_image, CONTROLS)
    assert isinstance(widget, ipywidgets.interactive)
    controls = {w.description: w for w in widget.kwargs_widgets}
    assert isinstance(controls["t"], ipywidgets.IntSlider) and (controls["t"].min, controls["t"].max) == (0, 999)
    assert controls["t"].value == 250
    assert isinstance(controls["schedule"], ipywidgets.Dropdown) and controls["schedule"].value == "linear"
    assert isinstance(controls["flip"], ipywidgets.Checkbox) and controls["flip"].value is False
    assert isinstance(build_widget(curve_figure, {"scale": Slider(0.5, 2.0, 0.5, 1.0)}).kwargs_widgets[0],
                      ipywidgets.FloatSlider)


def test_explore_in_a_widget_frontend_leaves_the_static_figure_first(monkeypatch):
    pytest.importorskip("ipywidgets")
    import IPython.display

    import course.widgets as widgets

    shown = []
    monkeypatch.setattr(widgets, "in_widget_frontend", lambda: True)
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    widget = explore(noise_image, static={"t": [0, 999]}, **CONTROLS)
    import ipywidgets

    assert isinstance(widget, ipywidgets.interactive)  # the live widget comes back, to show below
    figure = shown[0]  # the static sweep was displayed first, as an ordinary image (then the widget's own draw)
    assert isinstance(figure, Figure) and len(panel_axes(figure)) == 2
    assert figure._repr_png_().startswith(b"\x89PNG")


def test_static_panels_keep_the_size_they_were_drawn_at():
    def wide(scale: float) -> Figure:
        fig = Figure(figsize=(8, 2))
        fig.subplots().plot([0, scale])
        return fig

    fig = render_static(wide, {"scale": Slider(0.0, 2.0, 1.0, 1.0)})
    width, height = fig.get_size_inches()
    assert width >= 12 and height < width / 3  # three 8x2-inch panels side by side, not squeezed into squares


def _overlaps(fig) -> list:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    boxes += [ax.get_window_extent(renderer) for ax in fig.axes if ax.get_images()]
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b) and
            a.intersection(a, b).width > 1 and a.intersection(a, b).height > 1]


def test_image_grid_captions_wrap_and_never_overlap():
    from course.widgets import image_grid

    images = np.zeros((6, 64, 64, 3), dtype=np.uint8)
    long = "a large yellow circle at the top and a large red square on the right"
    fig = image_grid(images, [long] * 6, ncols=3, suptitle="one seed, six prompts")
    assert len(panel_axes(fig)) == 6 and "\n" in panel_axes(fig)[0].get_title()
    assert not _overlaps(fig)
    rows = image_grid([images[:4], images[:4]], row_titles=["w = 1", "w = 3"], col_titles=[long] * 4)
    assert len(panel_axes(rows)) == 8 and not _overlaps(rows)
    assert rows.axes[4].get_ylabel() == "w = 3"
