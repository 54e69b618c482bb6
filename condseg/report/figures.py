"""matplotlib figures drawn with the Agg canvas directly (no pyplot, so no global backend
and no window), laid out as small multiples, saved as PNG.

The grids are laid out with fixed margins and few ticks: matplotlib's tight layout draws
every panel once more to measure it, which costs more than the drawing itself."""
import math
from typing import Iterator, Tuple

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["grid_shape", "new_figure", "panel_grid", "save_png", "with_legend"]

DPI = 90
TICKS = (0.0, 0.5, 1.0)
MAX_LEGENDS = 20  # past this many categories only the first panel has a legend (they cost most of the drawing)


def with_legend(index: int, num_panels: int) -> bool:
    """Whether panel ``index`` of ``num_panels`` gets a legend."""
    return index == 0 or num_panels <= MAX_LEGENDS + 1


def grid_shape(n: int, max_cols: int = 4) -> Tuple[int, int]:
    """(rows, cols) of a grid of ``n`` panels at most ``max_cols`` wide (6 past 20 panels)."""
    cols = max(1, min(n, max_cols if n <= 20 else 6))
    return math.ceil(n / cols), cols


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on an Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def panel_grid(n: int, panel_w: float, panel_h: float, title: str, xlabel: str, ylabel: str,
               unit_axes: bool = True) -> Tuple[Figure, Iterator[Axes]]:
    """A figure of ``n`` panels of ``panel_w`` x ``panel_h`` inches in a grid with a
    ``title``; the axis labels on the outer panels only; ``unit_axes``: both axes span
    [0, 1] with ticks at 0, 0.5 and 1 (tick labels on the outer panels only)."""
    rows, cols = grid_shape(n)
    top, bottom, left = 0.55 if title else 0.2, 0.5, 0.6
    width, height = cols * panel_w + left + 0.2, rows * panel_h + top + bottom
    fig = new_figure(width, height)
    fig.subplots_adjust(left=left / width, right=1 - 0.2 / width, bottom=bottom / height, top=1 - top / height,
                        wspace=0.12 if unit_axes else 0.3, hspace=0.32)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.12 / height, va="top")

    def axes() -> Iterator[Axes]:
        for i in range(n):
            ax = fig.add_subplot(rows, cols, i + 1)
            ax.tick_params(labelsize=7, length=2)
            outer_x, outer_y = i >= n - cols, i % cols == 0
            if unit_axes:
                ax.set(xlim=(0, 1), ylim=(0, 1.02), xticks=TICKS, yticks=TICKS)
                ax.tick_params(labelbottom=outer_x, labelleft=outer_y)
            if outer_x:
                ax.set_xlabel(xlabel, fontsize=8)
            if outer_y:
                ax.set_ylabel(ylabel, fontsize=8)
            yield ax

    return fig, axes()


def save_png(fig: Figure, path: str) -> str:
    """Write ``fig`` to ``path`` (PNG) and return the path."""
    fig.savefig(path, format="png", dpi=DPI, pil_kwargs={"compress_level": 3})  # zlib 6 (the default) is slower
    return path
