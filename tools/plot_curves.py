#!/usr/bin/env python
"""Draw the training curves of one or more runs side by side, from their metrics.json.

  python tools/plot_curves.py output/quickstart output/quickstart_mask_rcnn --output curves.png
  python tools/plot_curves.py output/run/metrics.json --output curves.png --smooth 5 --smooth-mode mean
  python tools/plot_curves.py output/a output/b --output ap.png --keys "segm/AP*" "bbox/AP"

Each RUN is a training output folder (OUTPUT_DIR) or its metrics.json (detectron2's
JSONWriter). One figure: a panel per key, each run in its own colour, named in the legend
by its folder. Default keys: total_loss, every loss_*, lr, and <task>/AP of each
evaluation; --keys takes names or shell patterns instead. --smooth N smooths the losses
over N logged points (the writer already gives each point as the median of its last 20
iterations). Prints each run's last losses and AP. Exit status 0; 1 with a one-line error
naming the file and line (a missing or malformed metrics.json, a key no run has); 2 a bad
command line.
"""
import argparse
import os
import sys

from condseg.engine.curves import SMOOTHING_MODES, metrics_file, plot_curves, read_run, run_labels, select_keys


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="an output folder or a metrics.json")
    p.add_argument("--output", required=True, metavar="FILE.png", help="the figure to write")
    p.add_argument("--keys", nargs="+", metavar="KEY", help="keys or shell patterns to draw (default: losses, lr, */AP)")
    p.add_argument("--labels", nargs="+", metavar="NAME", help="legend names, one per RUN (default: folder names)")
    p.add_argument("--smooth", type=int, default=1, metavar="N", help="smooth the losses over N points (default 1: none)")
    p.add_argument("--smooth-mode", choices=SMOOTHING_MODES, default="median", help="median (default) or mean")
    p.add_argument("--columns", type=int, default=4, help="panels per row (default 4)")
    return p


def summary_line(run) -> str:
    """``label: iterations a-b, total_loss x, segm/AP y ...`` (the last values)."""
    keys = [k for k in select_keys([run]) if k == "total_loss" or "/" in k]
    first = min(int(s.iterations[0]) for s in run.series.values())
    last = max(int(s.iterations[-1]) for s in run.series.values())
    values = ", ".join(f"{k} {run.series[k].values[-1]:.4g}" for k in keys)
    return f"{run.label}: iterations {first}-{last}" + (f", last {values}" if values else "")


def run(args) -> None:
    if args.labels and len(args.labels) != len(args.runs):
        raise ValueError(f"--labels: {len(args.labels)} names for {len(args.runs)} runs")
    if args.smooth < 1 or args.columns < 1:
        raise ValueError("--smooth and --columns must be at least 1")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--output {args.output}: the folder {folder} does not exist")
    labels = args.labels or run_labels([metrics_file(r) for r in args.runs])
    runs = [read_run(r, label) for r, label in zip(args.runs, labels)]
    keys = select_keys(runs, args.keys)
    plot_curves(runs, keys, args.output, smooth_window=args.smooth, smooth_mode=args.smooth_mode, columns=args.columns)
    for r in runs:
        print(summary_line(r))
    print(f"{args.output}: {', '.join(keys)}")


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    try:
        run(args)
    except (OSError, ValueError, KeyError) as e:  # MetricsFormatError is a ValueError; the messages name the file
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
