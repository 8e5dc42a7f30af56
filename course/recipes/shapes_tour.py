"""Chapter 00's tour of the Shapes world: the scene explorer."""

from __future__ import annotations

from course.world import shapes


def scene_explorer():
    """Chapter 00's explorer: pick colour, shape, position, size and jitter; see the image and its shapes.caption."""
    from course.widgets import Choice, Slider, explore

    def panel(color: str, shape: str, position: str, size: str, jitter: float):
        import matplotlib.pyplot as plt

        scene = shapes.Scene((shapes.SceneObject(color, shape, position, size, (jitter, -jitter)),))
        fig, ax = plt.subplots(figsize=(2.6, 2.8))
        ax.imshow(shapes.render(scene))
        ax.set_title(shapes.caption(scene), fontsize=8)
        ax.set_xticks([i * shapes.IMAGE_SIZE / shapes.GRID for i in range(1, shapes.GRID)], [])
        ax.set_yticks([i * shapes.IMAGE_SIZE / shapes.GRID for i in range(1, shapes.GRID)], [])
        ax.grid(color="0.6", linewidth=0.5)
        return fig

    return explore(
        panel, static={"position": ["top left", "center", "bottom right"], "shape": list(shapes.SHAPES)},
        color=Choice(tuple(shapes.PALETTE)), shape=Choice(shapes.SHAPES), position=Choice(shapes.POSITIONS, "center"),
        size=Choice(tuple(shapes.SIZES), "large"), jitter=Slider(-shapes.JITTER, shapes.JITTER, 0.5, 0.0),
    )
