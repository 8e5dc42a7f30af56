"""Interactive explorers on pure functions; a static figure where there is no widget front end.

A chapter writes the picture as a pure function of a few settings and hands it to `explore`:

    def noise_panel(t: int, schedule: str) -> Figure:      # or a numpy image (H, W, 3) uint8
        ...

    explore(noise_panel, t=Slider(0, 999, 1, 250), schedule=Choice(("linear", "cosine")))

In a Jupyter or Colab kernel with ipywidgets this shows sliders and menus that redraw the
figure. Elsewhere (plain Python, no ipywidgets, or the environment variable
COURSE_STATIC_WIDGETS=1, which nbval runs set) it returns one static Figure: a grid of panels
sweeping a few values, so the notebook still shows what the explorer is about. Tests call the
pure function, and `render_static`, directly.

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
PANEL_INCHES = 3.0  # width and height of one panel of the static grid


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


class SweepFigure(Figure):
    """The static figure: a plain matplotlib Figure that a notebook shows as a PNG by itself.

    Not attached to pyplot (nothing to close), and drawn with Agg, so it shows as an image even
    where no inline backend registered a formatter for Figures (a kernel without %matplotlib).
    """

    def _repr_png_(self) -> bytes:
        return _png(self)


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
    if len(swept) == 2:
        nrows, ncols = len(static[swept[0]]), len(static[swept[1]])
    else:
        ncols = min(len(panels), 4)
        nrows = math.ceil(len(panels) / ncols)
    fig = SweepFigure(figsize=(PANEL_INCHES * ncols, PANEL_INCHES * nrows + 0.3), layout="constrained")
    for i, values in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        image = to_image(fn(**values))
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        ax.set_title(_title(values, swept), fontsize=9)
        ax.set_axis_off()
    fig.suptitle(getattr(fn, "__name__", "explorer").replace("_", " "), fontsize=10)
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
    """Explore `fn` with widgets, or draw a static sweep of it where there is no widget front end.

    Make `explore(...)` the last line of its cell: the notebook then shows what it returns,
    the live widget or the static figure (displaying it here as well would show it twice).

    Args:
        fn: fn(**values) -> matplotlib Figure or numpy image (H, W, 3) uint8; a pure function.
        static: for the static figure, name -> list of values to sweep (their product, at most
            16 panels); None sweeps the first control over a few values (default, lo, mid, hi).
        **controls: name -> Slider / Choice / Toggle; the names are fn's keyword arguments.

    Returns:
        The ipywidgets `interactive` inside a widget front end (see `in_widget_frontend`),
        else the static matplotlib Figure.
    """
    _validate(fn, controls)
    if static is not None:
        sweep_values(controls, static)  # refuse a bad sweep in both modes, so nbval catches it
    if in_widget_frontend():
        return build_widget(fn, controls)
    return render_static(fn, controls, static)
