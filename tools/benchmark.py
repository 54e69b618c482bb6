#!/usr/bin/env python
"""condseg benchmarks: one entry point, a table printed last, a JSON written.

  python tools/benchmark.py mask-head                  # CPU, and CUDA when available
  python tools/benchmark.py mask-head --device cpu --rounds 3 --repeats 5 --json out.json
  python tools/benchmark.py odconv --only stage=res4 batch=8      # a subset of a case

Cases
{cases}

Every measurement runs in fresh processes, so its peak memory is its own: on the CPU
the growth of the process's peak RSS over its state before the first run, on CUDA
``torch.cuda.max_memory_allocated``. Each measurement is ``--rounds`` processes of
``--repeats`` timed runs (after ``--warmup`` runs), the rounds interleaved with the other
measurements so that a slow spell of a shared machine hits all of them; times are
medians of all timed runs, and every table row also says how far its outputs are from
the published formulation's.

CPU allocator: by default the measuring processes run with glibc's
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000``, so that large buffers are
reused instead of being mapped fresh (and page-faulted) at every run, which can
make timings bimodal. This is for micro-benchmarks only (memory is never returned to
the system): never train or evaluate with it. ``--allocator default`` measures without.
"""
# {cases} in the help above: the paragraph of each case of condseg.benchmark.CASES (its module's docstring)
import argparse
import json
import os
import sys
import warnings

# detectron2 still builds some helpers with torch.jit.script, which torch now flags on import
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    from condseg.benchmark import CASES
from condseg.benchmark.harness import processor, run_rounds, select, table

RUN_DEFAULTS = {"rounds": 3, "repeats": 5, "warmup": 2}  # unless the case has its own (Case.defaults)


def cases_help(cases) -> str:
    """The "Cases" lines of the help: each case's name, then its ``help`` paragraph."""
    lines = []
    for name, case in cases.items():
        first, *rest = case.help.strip("\n").split("\n")
        lines += [f"  {name:<12}{first}"] + [" " * 14 + line for line in rest]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.replace("{cases}", cases_help(CASES)), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--device", default="all", choices=["all", "cpu", "cuda"],
                        help="all = cpu, plus cuda when available")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed runs per process (default {RUN_DEFAULTS['repeats']}, or the case's own)")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"processes per measurement, interleaved (default {RUN_DEFAULTS['rounds']}, "
                             "or the case's own)")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"untimed runs per process first (default {RUN_DEFAULTS['warmup']}, or the case's own)")
    parser.add_argument("--allocator", default="stable", choices=["stable", "default"],
                        help="glibc malloc settings of the CPU measuring processes (see above)")
    parser.add_argument("--only", nargs="*", default=[], metavar="KEY=VALUE",
                        help="measure only the specs with these values, e.g. --only stage=res4 batch=8 "
                             "impl=batch_groups,auto-rule (a comma: any of them)")
    parser.add_argument("--json", default=None, help="where to write the results (default output/benchmark/CASE.json)")
    parser.add_argument("--report", default=None, metavar="JSON",
                        help="measure nothing: print the tables of an earlier run's JSON (of this case) again")
    parser.case_options = {}  # case name -> the argparse actions of its own options
    for name, case in CASES.items():
        if case.options:
            group = parser.add_argument_group(f"options of the {name} case")
            parser.case_options[name] = [group.add_argument(flag, **kw) for flag, kw in case.options]
    return parser


def case_options(parser, args) -> dict:
    """The options of the chosen case (keyword arguments of its ``plan``); an option of
    another case given on the command line is an error."""
    options = {}
    for name, actions in parser.case_options.items():
        for action in actions:
            value = getattr(args, action.dest)
            if name == args.case:
                options[action.dest] = value
            elif value != action.default:
                parser.error(f"{action.option_strings[0]} is an option of the {name} case, not of {args.case}")
    return options


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    import torch

    case = CASES[args.case]
    for key, value in {**RUN_DEFAULTS, **case.defaults}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    options = case_options(parser, args)
    if args.report:
        return print_report(parser, case, args.case, args.report)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            parser.error("--device cuda: CUDA is not available on this machine")
        devices.remove("cuda")
    plan = select(case.plan(devices, **options), args.only)
    if not plan:
        parser.error(f"--only {' '.join(args.only)}: no {args.case} measurement matches")
    results = run_rounds(case, plan, args.rounds, args.repeats, args.warmup, args.allocator, desc=args.case)

    meta = {
        "case": args.case,
        "command": " ".join([os.path.basename(sys.executable), "tools/benchmark.py"] + (argv or sys.argv[1:])),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "processor": processor(),
        "cpu_allocator": args.allocator if case.stable_malloc else "default",
        "repeats": args.repeats,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "options": options,
        "gpu": torch.cuda.get_device_name(0) if "cuda" in devices else None,
    }
    path = args.json or os.path.join("output", "benchmark", f"{args.case}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print(f"\nwrote {path}")
    print(summary_line(meta))
    print(case.report(results) if case.report else table(case, results))


def summary_line(meta) -> str:
    return (f"{meta['case']}: {meta['processor']}; torch {meta['torch']}, {meta['threads']} threads, CPU allocator "
            f"{meta['cpu_allocator']}, median of {meta['rounds']} x {meta['repeats']} runs ({meta['rounds']} interleaved "
            f"rounds of one process per measurement, {meta['warmup']} warm-up runs each)")


def print_report(parser, case, name, path):
    """The tables of the results in ``path`` (written by an earlier run of case ``name``)."""
    try:
        with open(path) as f:
            data = json.load(f)
        meta, results = data["meta"], data["results"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        parser.error(f"--report {path}: not a results file of tools/benchmark.py ({e})")
    if meta.get("case") != name:
        parser.error(f"--report {path}: results of the {meta.get('case')!r} case, not of {name!r}")
    print(f"{path}: {meta.get('command', '?')}")
    print(summary_line(meta))
    print(case.report(results) if case.report else table(case, results))


if __name__ == "__main__":
    main()
