"""Chapter 04's diagram of a U-Net, drawn from its config: levels, channels, resolution, attention, skips.

`unet_diagram(config)` reads a `course.nn.unet.UNetConfig` and draws the U: the down levels on
the left (high resolution at the top), the mid block at the bottom, the up levels on the right,
and a dashed arrow per level for the skips the up level eats. A box with attention is orange
(cross-attention to the text tokens, with its transformer depth), a plain one grey. Nothing is
hard-coded: change the config and the picture follows.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from course.nn.unet import CROSS_DOWN, CROSS_MID, CROSS_UP, UNetConfig, _per_level

_ATTN, _PLAIN, _IO = "#f6c28b", "#d9d9d9", "#b7d7f0"


def _box(ax, x, y, text, color, w=2.5, h=0.78):
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04", fc=color, ec="0.3"))
    ax.text(x, y, text, ha="center", va="center", fontsize=8)


def _arrow(ax, start, end, text="", style="-|>", ls="-", offset=(0.0, 0.0)):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle=style, lw=1.1, ls=ls, color="0.25"))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text, fontsize=7,
                ha="center", va="center", color="0.25")


def unet_diagram(config: UNetConfig, title: str | None = None) -> Figure:
    """The U-Net of `config` as a labelled diagram (a Figure, shown as a PNG by a notebook).

    Args:
        config: the U-Net's config (e.g. `course.nn.unet.get_preset("shapes-latent")`).
        title: above the diagram; default names the channels.

    Returns:
        A matplotlib Figure, not attached to pyplot.
    """
    n = config.levels
    ch = config.block_out_channels
    layers = _per_level(config.layers_per_block, n, "layers_per_block")
    depth = _per_level(config.transformer_layers_per_block, n, "transformer_layers_per_block")
    size = config.sample_size or 8
    res = [f"{size // 2 ** i}x{size // 2 ** i}" for i in range(n)]
    fig = Figure(figsize=(9.5, 1.3 * (n + 2) + 0.4), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlim(-0.5, 9.5)
    ax.set_ylim(-(n + 1.6), 1.0)
    ax.set_axis_off()
    left, right, mid = 1.5, 7.5, 4.5

    _box(ax, left, 0.2, f"conv_in  {config.in_channels} -> {ch[0]} ch\n{res[0]} input", _IO)
    _box(ax, right, 0.2, f"conv_out  {ch[0]} -> {config.out_channels} ch\n{res[0]} prediction", _IO)
    _box(ax, mid, 0.2, f"time: sinusoid -> MLP\n(B, {4 * ch[0]}) into every resnet", "#e8e0f5", w=2.6)
    for i in range(n):
        y = -(i + 1)
        cross_d = config.down_block_types[i] == CROSS_DOWN
        up_index = n - 1 - i  # up_blocks run low -> high resolution
        cross_u = config.up_block_types[up_index] == CROSS_UP
        attn_d = f" + {layers[i]}x attn ({depth[i]} deep)" if cross_d else ""
        attn_u = f" + {layers[i] + 1}x attn ({depth[i]} deep)" if cross_u else ""
        _box(ax, left, y, f"down {i}: {ch[i]} ch @ {res[i]}\n{layers[i]} resnet{'s' * (layers[i] > 1)}{attn_d}",
             _ATTN if cross_d else _PLAIN)
        _box(ax, right, y, f"up {up_index}: {ch[i]} ch @ {res[i]}\n{layers[i] + 1} resnets{attn_u}",
             _ATTN if cross_u else _PLAIN)
        skips = layers[i] + (1 if i > 0 else 1)  # resnet outputs + conv_in (level 0) or the downsampler below
        _arrow(ax, (left + 1.3, y), (right - 1.3, y), f"{skips} skips, concatenated on channels", ls="--",
               offset=(0, 0.16))
        if i < n - 1:
            _arrow(ax, (left, y - 0.4), (left, y - 0.6), "downsample /2", offset=(0.95, 0))
            _arrow(ax, (right, y - 0.6), (right, y - 0.4), "upsample x2", offset=(-0.9, 0))
    _arrow(ax, (left, -0.2), (left, -0.6))
    _arrow(ax, (right, -0.6), (right, -0.2))
    if config.mid_block_type is not None:
        y = -(n + 0.9)
        cross_m = config.mid_block_type == CROSS_MID
        _box(ax, mid, y, f"mid: {ch[-1]} ch @ {res[-1]}\n" + ("resnet, attn, resnet" if cross_m else "resnet"),
             _ATTN if cross_m else _PLAIN, w=2.8)
        _arrow(ax, (left, -n - 0.4), (mid - 1.4, y + 0.1))
        _arrow(ax, (mid + 1.4, y + 0.1), (right, -n - 0.4))
    attn_note = "orange: self-attention + cross-attention to the text tokens" if config.has_cross_attention else \
        "no attention blocks"
    fig.suptitle(title or f"U-Net {ch}: {attn_note}", fontsize=10)
    return fig
