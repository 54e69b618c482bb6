"""Training curves of one or more runs, from detectron2's ``metrics.json``.

``metrics.json`` is what detectron2's ``JSONWriter`` writes into ``OUTPUT_DIR``: one json
object per line, each with an ``iteration`` and the scalars of the event storage
updated since the previous line. Training lines carry ``total_loss``, ``loss_*``, ``lr``,
``time``...; an evaluation adds a line with the evaluator's flattened results
(``bbox/AP``, ``segm/AP50``, ``segm/AP-<class>``...) at its iteration.

:func:`parse_metrics` (text -> series, pure) and :func:`read_run` (a run folder or file
-> :class:`RunMetrics`) read them; :func:`select_keys`, :func:`smooth` and
:func:`plot_curves` (one figure, a panel per key, a colour per run) draw them.
``tools/plot_curves.py`` is the command line.
"""
from __future__ import annotations

import fnmatch
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["MetricsFormatError", "Series", "RunMetrics", "metrics_file", "parse_metrics", "read_run", "run_labels",
           "is_loss_key", "select_keys", "smooth", "plot_curves"]

METRICS_FILE = "metrics.json"
SMOOTHING_MODES = ("median", "mean")


class MetricsFormatError(ValueError):
    """A metrics.json that is not detectron2's format; the message names the file and line."""


@dataclass
class Series:
    """One scalar's history: ``iterations`` ``(P,)`` int64 increasing, ``values`` ``(P,)`` float64."""

    iterations: np.ndarray
    values: np.ndarray


@dataclass
class RunMetrics:
    """The series of one run: key -> :class:`Series`; ``source`` is its metrics.json."""

    source: str
    label: str
    series: Dict[str, Series] = field(default_factory=dict)


def metrics_file(run: str) -> str:
    """The metrics.json of ``run``: a training output folder or the file itself."""
    path = os.path.join(run, METRICS_FILE) if os.path.isdir(run) else run
    if not os.path.isfile(path):
        where = f"the folder {run} has no {METRICS_FILE}" if os.path.isdir(run) else f"{run} does not exist"
        raise FileNotFoundError(f"{path}: no such file ({where})")
    return path


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_metrics(text: str, source: str = METRICS_FILE) -> Dict[str, Series]:
    """The series in the text of a metrics.json (``source`` names it in errors).

    Every numeric value becomes a point at its line's ``iteration`` (other values are
    ignored). When a key's iteration goes back (a run resumed from a checkpoint appends
    to the same file), the later points replace the earlier ones from that iteration on.
    A last line without its newline that is not valid json is ignored: the run is still
    writing it.

    Raises:
        MetricsFormatError: a line that is not a json object, or without an integer
            ``iteration``, naming ``source`` and the line number; a text without any line.
    """
    points: Dict[str, List[tuple]] = {}
    lines = text.splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines) and not line.endswith("\n"):
                continue  # being written
            raise MetricsFormatError(f"{source}:{number}: not a json object ({e.msg} at column {e.colno}): "
                                     f"{line.strip()[:80]}") from e
        if not isinstance(record, dict):
            raise MetricsFormatError(f"{source}:{number}: expected a json object, got {type(record).__name__}")
        it = record.get("iteration")
        if not _is_number(it) or not math.isfinite(it) or it != int(it):
            raise MetricsFormatError(f"{source}:{number}: no integer 'iteration' (got {it!r}); "
                                     "is this detectron2's metrics.json?")
        it = int(it)
        for key, value in record.items():
            if key == "iteration" or not _is_number(value):
                continue
            kept = points.setdefault(key, [])
            while kept and kept[-1][0] >= it:  # resumed: the new points replace these
                kept.pop()
            kept.append((it, float(value)))
    if not points:
        raise MetricsFormatError(f"{source}: no metrics (the file has no line with an iteration and a value)")
    return {k: Series(np.array([p[0] for p in v], np.int64), np.array([p[1] for p in v], np.float64))
            for k, v in points.items()}


def read_run(run: str, label: Optional[str] = None) -> RunMetrics:
    """The metrics of a run folder or metrics.json; ``label`` defaults to the folder's name."""
    path = metrics_file(run)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return RunMetrics(path, label or run_labels([path])[0], parse_metrics(text, path))


def run_labels(paths: Sequence[str]) -> List[str]:
    """A legend label per metrics.json: its folder's name, with as many parent folders as
    it takes to tell equal names apart."""
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    parts = [f.strip(os.sep).split(os.sep) or [f] for f in folders]
    depth = 1
    while depth < max(map(len, parts)):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(set(folders)):
            return labels
        depth += 1
    return ["/".join(p[-depth:]) for p in parts]


def is_loss_key(key: str) -> bool:
    """``total_loss`` and detectron2's ``loss_*`` (the keys :func:`smooth` applies to)."""
    return key == "total_loss" or key.startswith("loss_")


def select_keys(runs: Sequence[RunMetrics], patterns: Optional[Sequence[str]] = None) -> List[str]:
    """The keys to draw, in panel order.

    Default: ``total_loss``, each ``loss_*`` of any run (sorted), ``lr``, and every
    evaluation's ``<task>/AP`` (``bbox/AP``, ``segm/AP``; ``<dataset>/<task>/AP`` with several
    test datasets). With ``patterns`` (key names or
    shell patterns such as ``"segm/AP*"``), the keys they match in order; a pattern that
    matches nothing is a ``KeyError`` listing the keys there are.
    """
    available = sorted({k for r in runs for k in r.series})
    if not patterns:
        losses = sorted(k for k in available if k.startswith("loss_"))
        aps = sorted(k for k in available if k.endswith("/AP"))
        return [k for k in ["total_loss", *losses, "lr", *aps] if k in available]
    keys: List[str] = []
    for pattern in patterns:
        matched = [k for k in available if fnmatch.fnmatchcase(k, pattern)]
        if not matched:
            raise KeyError(f"--keys {pattern!r} matches no key of {', '.join(r.source for r in runs)}; "
                           f"there are: {', '.join(available)}")
        keys += [k for k in matched if k not in keys]
    return keys


def smooth(values: np.ndarray, window: int, mode: str = "median") -> np.ndarray:
    """``(P,)`` -> ``(P,)``: the median or mean of a centred window of ``window`` points
    (shorter at the ends), ignoring NaNs; ``window <= 1`` returns the values unchanged."""
    if mode not in SMOOTHING_MODES:
        raise ValueError(f"smoothing mode {mode!r}: expected one of {SMOOTHING_MODES}")
    values = np.asarray(values, np.float64)
    if window <= 1 or values.size == 0:
        return values.copy()
    reduce = np.nanmedian if mode == "median" else np.nanmean
    half_left, half_right = (window - 1) // 2, window // 2
    out = np.empty_like(values)
    with warnings.catch_warnings():  # a window of NaNs only (a diverged stretch) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        for i in range(values.size):
            out[i] = reduce(values[max(0, i - half_left): i + half_right + 1])
    return out


def plot_curves(runs: Sequence[RunMetrics], keys: Sequence[str], path: str, smooth_window: int = 1,
                smooth_mode: str = "median", columns: int = 4, dpi: int = 80) -> None:
    """Write one PNG with a panel per key (x: iteration), each run in its own colour and
    named in the legend; the losses smoothed by :func:`smooth`; series of few points (at most
    a quarter of the run's longest: the evaluations) drawn with markers and their last value
    written beside it."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    columns = max(1, min(columns, len(keys)))
    rows = -(-len(keys) // columns)
    fig = Figure(figsize=(3.6 * columns, 2.6 * rows + 0.5), dpi=dpi, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    colors = [f"C{i % 10}" for i in range(len(runs))]
    longest = {r.source: max(s.iterations.size for s in r.series.values()) for r in runs}
    last = max(int(r.series[k].iterations[-1]) for r in runs for k in keys if k in r.series)
    for ax, key in zip(axes, keys):
        for run, color in zip(runs, colors):
            s = run.series.get(key)
            if s is None:
                continue
            values = smooth(s.values, smooth_window, smooth_mode) if is_loss_key(key) else s.values
            few = s.iterations.size <= max(2, longest[run.source] // 4)  # evaluations, not every log line
            ax.plot(s.iterations, values, color=color, marker="o" if few else None, markersize=4, linewidth=1.3)
            if few and np.isfinite(values[-1]):
                ax.annotate(f"{values[-1]:.3g}", (s.iterations[-1], values[-1]), textcoords="offset points",
                            xytext=(-4, 4), ha="right", color=color, fontsize=8)
        title = key if not (is_loss_key(key) and smooth_window > 1) else f"{key} ({smooth_mode} of {smooth_window})"
        ax.set_title(title, fontsize=10)
        ax.set_xlim(0, max(1.0, last * 1.03))  # every panel on the same iterations, a lone evaluation at its place
        if "/AP" in key:  # AP from 0: differences at their true scale
            finite = [v for r in runs if key in r.series for v in r.series[key].values if math.isfinite(v)]
            ax.set_ylim(0, max(1.0, 1.2 * max(finite, default=0.0)))
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    for ax in axes[max(0, len(keys) - columns): len(keys)]:
        ax.set_xlabel("iteration", fontsize=9)
    fig.legend([_legend_line(color) for color in colors], [r.label for r in runs], loc="outside upper center", ncols=min(len(runs), 4), frameon=False)
    fig.savefig(path)


def _legend_line(color: str):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=color, linewidth=2)
