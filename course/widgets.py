"""Interactive explorers on pure functions; a static figure where there is no widget front end.

A chapter writes the picture as a pure function of a few settings and hands it to `explore`:

    def noise_panel(t: int, schedule: str) -> Figure:      # or a numpy image (H, W, 3) uint8
        ...

    explore(noise_panel, t=Slider(0, 999, 1, 250), schedule=Choice(("linear", "cosine")))

Every explorer first leaves a static Figure, a grid of panels sweeping a few values, as an
ordinary image output: a saved or exported notebook (nbconvert, GitHub's viewer, HTML) keeps
it, where a live widget saves only its model. In a Jupyter or Colab kernel with ipywidgets the
sliders and menus that redraw the figure follow it. Elsewhere (plain Python, no ipywidgets, or
the environment variable COURSE_STATIC_WIDGETS=1, which nbval runs set) the static Figure is
all `explore` returns. Tests call the pure function, and `render_static`, directly.

`image_grid` draws captioned image grids for every chapter: captions wrapped to the width of
their panel, so they never overlap.

Controls are small frozen dataclasses that validate themselves: `Slider`, `Choice`, `Toggle`.
Chapters add their explorers (noise level, schedule, guidance scale, steps, SDXL conditioning,
logit-normal density and shift, attention maps) as functions in their own modules built on
`explore`.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import itertools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

STATIC_ENV = "COURSE_STATIC_WIDGETS"  # set to 1 to force the static figure
MAX_PANELS = 16  # a static sweep larger than this is refused: it would be unreadable
PANEL_INCHES = 3.0  # the longer side of one panel of the static grid, at least
SHORT_SIDE_INCHES = 1.4  # ... and its shorter side at least this (a strip of small images stays readable)
DPI = 100  # figures here are drawn at 100 dots per inch: a rendered panel keeps its own size
MAX_WIDTH_INCHES = 16.0  # a static grid wider than this is scaled down to fit a notebook's column


# ---------------------------------------------------------------------------------------------
# controls
# ---------------------------------------------------------------------------------------------


def _real(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class Slider:
    """A number between lo and hi; integer if lo, hi, step and value are all integers."""

    lo: float  # smallest value
    hi: float  # largest value
    step: float  # spacing of the values the slider can take
    value: float  # the starting value, lo <= value <= hi

    def __post_init__(self) -> None:
        for name in ("lo", "hi", "step", "value"):
            if not _real(getattr(self, name)):
                raise ValueError(f"Slider {name} must be a finite number, got {getattr(self, name)!r}")
        if not self.lo < self.hi:
            raise ValueError(f"Slider needs lo < hi, got lo={self.lo}, hi={self.hi}")
        if not 0 < self.step <= self.hi - self.lo:
            raise ValueError(f"Slider step must be in (0, hi - lo] = (0, {self.hi - self.lo}], got {self.step}")
        self.check(self.value)

    @property
    def is_int(self) -> bool:
        return all(isinstance(getattr(self, n), (int, np.integer)) for n in ("lo", "hi", "step", "value"))

    @property
    def default(self) -> float:
        return self.value

    def check(self, value: Any) -> None:
        """Raise ValueError unless `value` is a number in [lo, hi]."""
        if not _real(value) or not self.lo <= value <= self.hi:
            raise ValueError(f"Slider value {value!r} is outside [{self.lo}, {self.hi}]")

    def sweep(self) -> list:
        """The default, lo, the midpoint (snapped to the step grid) and hi, sorted, no repeats."""
        mid = self.lo + round((self.hi - self.lo) / 2 / self.step) * self.step
        values = {self.lo, self.hi, min(mid, self.hi), self.value}
        return sorted(int(v) if self.is_int else round(float(v), 12) for v in values)  # no 0.30000000000000004

    def widget(self, description: str) -> Any:
        import ipywidgets

        cls = ipywidgets.IntSlider if self.is_int else ipywidgets.FloatSlider
        return cls(min=self.lo, max=self.hi, step=self.step, value=self.value, description=description,
                   continuous_update=False)


@dataclass(frozen=True)
class Choice:
    """One of a few options (a schedule, a prompt, a model)."""

    options: tuple  # the options, shown as str(option); a list is turned into a tuple
    value: Any = None  # the starting option; None takes the first

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(self.options))
        if not self.options:
            raise ValueError("Choice needs at least one option")
        if len(set(map(str, self.options))) != len(self.options):
            raise ValueError(f"Choice options must be distinct, got {self.options}")
        if self.value is None:
            object.__setattr__(self, "value", self.options[0])
        self.check(self.value)

    @property
    def default(self) -> Any:
        return self.value

    def check(self, value: Any) -> None:
        """Raise ValueError unless `value` is one of the options."""
        if value not in self.options:
            raise ValueError(f"Choice value {value!r} is not one of the options {self.options}")

    def sweep(self) -> list:
        """The default first, then the other options, at most 4 in all."""
        return [self.value, *(o for o in self.options if o != self.value)][:4]

    def widget(self, description: str) -> Any:
        import ipywidgets

        return ipywidgets.Dropdown(options=[(str(o), o) for o in self.options], value=self.value,
                                   description=description)


@dataclass(frozen=True)
class Toggle:
    """On or off (guidance on, offset noise on, ...)."""

    value: bool = False  # the starting state

    def __post_init__(self) -> None:
        self.check(self.value)

    @property
    def default(self) -> bool:
        return self.value

    def check(self, value: Any) -> None:
        """Raise ValueError unless `value` is True or False."""
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"Toggle value must be True or False, got {value!r}")

    def sweep(self) -> list:
        return [bool(self.value), not self.value]

    def widget(self, description: str) -> Any:
        import ipywidgets

        return ipywidgets.Checkbox(value=bool(self.value), description=description)


Control = Slider | Choice | Toggle  # what `explore` takes as a keyword argument


# ---------------------------------------------------------------------------------------------
# the pure parts: which values to draw, how to draw them
# ---------------------------------------------------------------------------------------------


def in_widget_frontend() -> bool:
    """True inside an IPython kernel (Jupyter, Colab) with ipywidgets, unless COURSE_STATIC_WIDGETS=1."""
    if os.environ.get(STATIC_ENV, "").strip().lower() in ("1", "true", "yes"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel") and importlib.util.find_spec("ipywidgets") is not None


def _validate(fn: Callable, controls: dict[str, Any]) -> None:
    if not callable(fn):
        raise TypeError(f"explore needs a function to draw with, got {type(fn).__name__}")
    if not controls:
        raise ValueError("explore needs at least one control, e.g. t=Slider(0, 999, 1, 250)")
    for name, control in controls.items():
        if not isinstance(control, Control):
            raise TypeError(f"control {name!r} must be a Slider, Choice or Toggle, got {control!r}")
    try:
        inspect.signature(fn).bind(**{name: c.default for name, c in controls.items()})
    except TypeError as err:
        raise TypeError(f"{getattr(fn, '__name__', fn)} cannot take the controls {sorted(controls)}: {err}") from None


def sweep_values(controls: dict[str, Any], static: dict[str, Sequence] | None = None) -> list[dict[str, Any]]:
    """The settings of each panel of the static figure, row by row.

    Args:
        controls: name -> Slider / Choice / Toggle.
        static: name -> values to sweep (their product makes the panels); the other controls
            stay at their defaults. None sweeps the first control over its `sweep()` values.

    Returns:
        One dict of keyword arguments per panel.
    """
    if static is None:
        first = next(iter(controls))
        static = {first: controls[first].sweep()}
    for name, values in static.items():
        if name not in controls:
            raise ValueError(f"static sweeps {name!r}, which is not a control; controls: {sorted(controls)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"static[{name!r}] must be a non-empty list of values, got {values!r}")
        for value in values:
            controls[name].check(value)
    n = math.prod(len(v) for v in static.values())
    if n > MAX_PANELS:
        raise ValueError(f"the static sweep makes {n} panels, more than {MAX_PANELS}; sweep fewer values")
    defaults = {name: c.default for name, c in controls.items()}
    return [{**defaults, **dict(zip(static, combo))} for combo in itertools.product(*static.values())]


def to_image(result: Any) -> np.ndarray:
    """What an explorer's function drew, as an RGB(A) uint8 image (H, W, 3 or 4).

    Args:
        result: a matplotlib Figure (rendered with Agg, then closed) or a numpy image, uint8
            (H, W), (H, W, 3) or (H, W, 4), or float in [0, 1].
    """
    if isinstance(result, Figure):
        from matplotlib import pyplot as plt
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(result)
        canvas.draw()
        image = np.asarray(canvas.buffer_rgba()).copy()  # (H, W, 4)
        plt.close(result)  # a figure made with pyplot would otherwise stay open
        return image
    if isinstance(result, np.ndarray) and result.ndim in (2, 3) and (result.ndim == 2 or result.shape[2] in (3, 4)):
        if result.dtype == np.uint8:
            return result
        if result.dtype.kind == "f" and np.nanmin(result) >= 0.0 and np.nanmax(result) <= 1.0:
            return (result * 255).round().astype(np.uint8)
        raise TypeError(f"an image must be uint8, or float in [0, 1]; got {result.dtype} in "
                        f"[{np.nanmin(result):.3g}, {np.nanmax(result):.3g}]")
    shape = getattr(result, "shape", None)
    raise TypeError(
        f"an explorer's function must return a matplotlib Figure or a numpy image (H, W, 3) uint8, "
        f"got {type(result).__name__}{'' if shape is None else f' of shape {tuple(shape)}'}; "
        "a torch image (3, H, W) in [0, 1] converts with (img.permute(1, 2, 0) * 255).byte().numpy()"
    )


def _png(fig: Figure) -> bytes:
    """A figure as PNG bytes, drawn with Agg whatever the backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


class StaticFigure(Figure):
    """A plain matplotlib Figure that a notebook shows as a PNG by itself.

    Not attached to pyplot (nothing to close, never shown twice), and drawn with Agg, so it
    shows as an image even where no inline backend registered a formatter for Figures.
    """

    def _repr_png_(self) -> bytes:
        return _png(self)


class SweepFigure(StaticFigure):
    """The static stand-in for an explorer (see `render_static`)."""


# ---------------------------------------------------------------------------------------------
# captioned image grids
# ---------------------------------------------------------------------------------------------


def wrap_caption(text: str, width_inches: float, fontsize: float) -> str:
    """`text` broken into lines that fit `width_inches` at `fontsize` points (about 0.55 em a character)."""
    import textwrap

    chars = max(6, int(width_inches * 72 / (0.55 * fontsize)))
    return "\n".join(textwrap.wrap(str(text), chars, break_long_words=False)) or ""


def _as_rows(images: Any, ncols: int | None) -> list[list[np.ndarray]]:
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and (images.ndim == 2 or images.shape[-1] in (3, 4)):
        images = [images]  # one image
    items = list(images)
    if items and (isinstance(items[0], (list, tuple)) or (isinstance(items[0], np.ndarray) and items[0].ndim == 4)):
        return [[to_image(np.asarray(im)) for im in row] for row in items]  # already rows
    flat = [to_image(np.asarray(im) if not isinstance(im, Figure) else im) for im in items]
    ncols = ncols or min(len(flat), 8)
    return [flat[i:i + ncols] for i in range(0, len(flat), ncols)]


def image_grid(images: Any, titles: Sequence[str] | None = None, *, ncols: int | None = None,
               row_titles: Sequence[str] | None = None, col_titles: Sequence[str] | None = None,
               suptitle: str | None = None, panel_inches: float = 1.6, fontsize: float = 7,
               cmap: str | None = None) -> Figure:
    """A grid of images with captions that cannot overlap: every chapter's image grid.

    Args:
        images: (N, H, W, C) uint8 array or a list of images (each (H, W), (H, W, 3) or (H, W, 4),
            uint8 or float in [0, 1], or a Figure), laid out `ncols` to a row; or a list of rows
            (each a list or an (N, H, W, C) array).
        titles: one caption per image, row by row; wrapped to the panel's width.
        ncols: panels per row for a flat list (default: all, at most 8).
        row_titles: one label per row, left of it.
        col_titles: one caption per column, above the first row (wrapped like `titles`).
        suptitle: a title for the whole grid, wrapped to its width.
        panel_inches: the longer side of a panel; the other follows the image's aspect ratio.
        fontsize: of the captions (the row labels and suptitle are one point larger).
        cmap: for single-channel images (default grey).

    Returns:
        A `StaticFigure` (constrained layout), shown as a PNG when it ends a notebook cell.
    """
    rows = _as_rows(images, ncols)
    nrows, ncols = len(rows), max(len(r) for r in rows)
    h, w = rows[0][0].shape[:2]
    pw, ph = (panel_inches, panel_inches * h / w) if w >= h else (panel_inches * w / h, panel_inches)
    flat_titles = list(titles) if titles is not None else []
    lines = 0
    wrapped = []
    for text in flat_titles:
        wrapped.append(wrap_caption(text, pw, fontsize))
        lines = max(lines, wrapped[-1].count("\n") + 1)
    cols = [wrap_caption(c, pw, fontsize) for c in col_titles] if col_titles is not None else []
    col_lines = max((c.count("\n") + 1 for c in cols), default=0)
    text_h = (lines + 0.4) * fontsize * 1.25 / 72 if lines else 0.05
    top = (col_lines + 0.4) * fontsize * 1.25 / 72 if col_lines else 0.0
    left = 0.35 if row_titles is not None else 0.0
    width = ncols * pw + left
    sup_lines = wrap_caption(suptitle, width, fontsize + 1) if suptitle else ""
    height = nrows * (ph + text_h) + top + (sup_lines.count("\n") + 1.4) * (fontsize + 1) * 1.25 / 72 * bool(suptitle)
    fig = StaticFigure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.02, hspace=0.02)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    k = 0
    for r in range(nrows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c >= len(rows[r]):
                ax.set_axis_off()
                continue
            image = rows[r][c]
            ax.imshow(image, cmap=(cmap or "gray") if image.ndim == 2 else None, interpolation="nearest")
            caption = wrapped[k] if k < len(wrapped) else ""
            if r == 0 and cols:
                caption = cols[c] + ("\n" + caption if caption else "")
            if caption:
                ax.set_title(caption, fontsize=fontsize, pad=2)
            k += 1
        if row_titles is not None:
            axes[r][0].set_ylabel(row_titles[r], fontsize=fontsize + 1)
    if suptitle:
        fig.suptitle(sup_lines, fontsize=fontsize + 1)
    return fig


def _title(values: dict[str, Any], swept: Sequence[str]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{name}={fmt(values[name])}" for name in swept)


def render_static(fn: Callable, controls: dict[str, Any], static: dict[str, Sequence] | None = None) -> Figure:
    """The static stand-in for an explorer: one panel per setting of `sweep_values`.

    Two swept controls make a grid (rows: the first, columns: the second); otherwise the panels
    run in rows of at most four. The Figure is not attached to pyplot, so nothing stays open.

    Args:
        fn: fn(**values) -> Figure or numpy image.
        controls: name -> Slider / Choice / Toggle.
        static: see `sweep_values`.

    Returns:
        A matplotlib Figure (a `SweepFigure`) with one titled panel per setting.
    """
    _validate(fn, controls)
    panels = sweep_values(controls, static)
    swept = list(static) if static is not None else [next(iter(controls))]
    images = [to_image(fn(**values)) for values in panels]
    # each panel at the size it was drawn (a rendered Figure keeps its own inches), at least
    # PANEL_INCHES on its longer side, and the grid no wider than a notebook's column: wide
    # panels go fewer to a row rather than shrink
    h, w = max(im.shape[0] for im in images), max(im.shape[1] for im in images)
    scale = max(PANEL_INCHES * DPI / max(h, w), SHORT_SIDE_INCHES * DPI / min(h, w), 1.0)
    if len(swept) == 2:
        nrows, ncols = len(static[swept[0]]), len(static[swept[1]])
    else:
        ncols = max(1, min(len(panels), 4, int(MAX_WIDTH_INCHES * DPI // (w * scale))))
        nrows = math.ceil(len(panels) / ncols)
    scale = min(scale, MAX_WIDTH_INCHES * DPI / (w * ncols))
    pw, ph = w * scale / DPI, h * scale / DPI
    fig = SweepFigure(figsize=(pw * ncols, (ph + 0.25) * nrows + 0.35), dpi=DPI, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.01, hspace=0.01)
    for i, (values, image) in enumerate(zip(panels, images)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest" if scale >= 1 else "antialiased")
        ax.set_title(_title(values, swept), fontsize=10)
        ax.set_axis_off()
    fig.suptitle("static view of the explorer " + getattr(fn, "__name__", "explorer").replace("_", " ")
                 + ": " + ", ".join(swept) + " swept", fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------
# the interactive front
# ---------------------------------------------------------------------------------------------


def build_widget(fn: Callable, controls: dict[str, Any]) -> Any:
    """The ipywidgets `interactive` for fn, with one widget per control (needs ipywidgets)."""
    import ipywidgets

    _validate(fn, controls)

    def draw(**values: Any) -> None:
        from IPython.display import Image, display
        from matplotlib import pyplot as plt

        result = fn(**values)
        if not isinstance(result, Figure):
            image = to_image(result)
            result = Figure(figsize=(PANEL_INCHES, PANEL_INCHES))
            ax = result.add_subplot()
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
            ax.set_axis_off()
        display(Image(data=_png(result), format="png"))
        plt.close(result)  # shown once, here, not again by the inline backend at the cell's end

    draw.__name__ = getattr(fn, "__name__", "explorer")
    return ipywidgets.interactive(draw, **{name: c.widget(name) for name, c in controls.items()})


def explore(fn: Callable, *, static: dict[str, list] | None = None, **controls: Any) -> Any:
    """A static sweep of `fn`, then, where there is a widget front end, live widgets on it.

    Make `explore(...)` the last line of its cell. Inside a widget front end it displays the
    static figure (an ordinary image output that a saved notebook keeps) and returns the live
    widget, which the cell then shows below it; elsewhere it returns the static figure.

    Args:
        fn: fn(**values) -> matplotlib Figure or numpy image (H, W, 3) uint8; a pure function.
        static: for the static figure, name -> list of values to sweep (their product, at most
            16 panels); None sweeps the first control over a few values (default, lo, mid, hi).
        **controls: name -> Slider / Choice / Toggle; the names are fn's keyword arguments.

    Returns:
        The ipywidgets `interactive` inside a widget front end (see `in_widget_frontend`), after
        displaying the static figure; else the static matplotlib Figure.
    """
    _validate(fn, controls)
    if static is not None:
        sweep_values(controls, static)  # refuse a bad sweep in both modes, so nbval catches it
    figure = render_static(fn, controls, static)
    if in_widget_frontend():
        from IPython.display import display

        display(figure)  # first: the static figure stays in the saved notebook
        return build_widget(fn, controls)
    return figure
