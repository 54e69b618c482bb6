"""The measuring harness of the benchmarks: a :class:`Case` lists its measurements (specs)
and builds one run of each; every measurement runs in fresh processes (:mod:`.worker`), in
interleaved rounds; the rounds are pooled into medians, every row is compared with its
case's baseline formulation of the same run (speed-up, largest output difference), and
the results become a table.
"""
import os
import resource
import statistics
import subprocess
import sys
import time

# glibc's malloc settings of the CPU measuring processes (tools/benchmark.py --allocator)
STABLE_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}


class Case:
    """A benchmark case: ``plan(devices)`` lists the specs (dicts with ``case``, ``device``,
    ``mode``, ``impl`` and the case's size keys), ``runs(**spec)`` (without ``case``) returns a
    zero-argument function doing one run and returning its outputs (tensors, compared across
    formulations); rows are compared with the ``baseline`` formulation of the same ``size``
    keys (speed, and outputs where ``comparable``). ``help`` is the case's paragraph of
    ``tools/benchmark.py --help``. A case may have command-line ``options`` of its own
    (``(flag, argparse keywords)`` pairs; their values are keyword arguments of ``plan``),
    its own ``defaults`` of ``rounds`` / ``repeats`` / ``warmup``, and a ``report``
    (results -> the text printed last) in place of :func:`table`."""

    def __init__(self, plan, runs, baseline, size, comparable=True, stable_malloc=True, help="", options=(),
                 defaults=None, report=None):
        self.plan, self.runs, self.baseline, self.size = plan, runs, baseline, tuple(size)
        self.comparable = comparable  # False: formulations compute different things (no diff column)
        self.stable_malloc = stable_malloc  # False: always glibc's default allocator (whole-model runs)
        self.help = help
        self.options = tuple(options)
        self.defaults = dict(defaults or {})
        self.report = report

    def group(self, spec) -> tuple:
        return (spec["device"], spec["mode"]) + tuple(spec[k] for k in self.size)

    def make_run(self, spec):
        """``runs`` of ``spec`` (its ``case`` key left out)."""
        return self.runs(**{k: v for k, v in spec.items() if k != "case"})


def select(plan, only):
    """The specs of ``plan`` matching every ``KEY=VALUE`` of ``only`` (values compared as
    text; ``KEY=A,B`` matches either)."""
    bad = [item for item in only if "=" not in item]
    if bad:
        raise SystemExit(f"--only expects KEY=VALUE or KEY=A,B, got {bad}")
    wanted = [(k, v.split(",")) for k, v in (item.split("=", 1) for item in only)]
    return [s for s in plan if all(str(s.get(k)) in values for k, values in wanted)]


def peak_rss_kib() -> int:
    """This process's peak resident set size (KiB): Linux's ``VmHWM``, the peak of its own
    memory since it started (``getrusage``'s ``ru_maxrss`` also carries over the peak of the
    process that started it, which would hide every smaller peak), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def reset_peak_rss() -> int:
    """This process's peak RSS started afresh from its current RSS where Linux allows it
    (``5`` written to ``/proc/self/clear_refs``), so that the peaks of the imports and the
    set-up do not hide those of the runs; returns it (KiB), the base of the growth."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return peak_rss_kib()


def measure(case: Case, spec: dict, repeats: int, warmup: int) -> dict:
    """One measurement in this process: median wall time and peak memory, and the entries of
    the run's ``facts`` attribute if it has one (what a run found out about itself, e.g.
    the formulation ``auto`` resolved to)."""
    import torch

    torch.set_num_threads(int(os.environ.get("CONDSEG_BENCH_THREADS", torch.get_num_threads())))
    cuda = spec["device"].startswith("cuda")
    run = case.make_run(spec)
    rss_before = reset_peak_rss()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times, metrics = [], []
    for k in range(warmup + repeats):
        t = time.perf_counter()
        out = run()
        if cuda:
            torch.cuda.synchronize()
        if k >= warmup:
            times.append(time.perf_counter() - t)
            if isinstance(out, dict) and "metrics" in out:
                metrics.append(out["metrics"])
        del out
    if cuda:
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = (peak_rss_kib() - rss_before) / 1024
    result = {**spec, "median_s": statistics.median(times), "min_s": min(times), "times_s": times, "peak_mb": peak_mb,
              **getattr(run, "facts", {})}
    if metrics:
        result["metrics"] = metrics
    return result


def run_in_subprocess(case: Case, spec: dict, repeats: int, warmup: int, allocator: str) -> dict:
    """:func:`measure` in a fresh process (:mod:`condseg.benchmark.worker`), with the stable
    CPU allocator unless ``allocator`` is ``"default"`` or the case always uses glibc's."""
    import json

    env = dict(os.environ)
    if allocator == "stable" and not spec["device"].startswith("cuda") and case.stable_malloc:
        env.update(STABLE_MALLOC)
    cmd = [sys.executable, "-m", "condseg.benchmark.worker", json.dumps(spec), str(repeats), str(warmup)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def merge_rounds(rounds):
    """One result from the same spec measured in several rounds: all times pooled."""
    times = [t for r in rounds for t in r["times_s"]]
    merged = {**rounds[0], "median_s": statistics.median(times), "min_s": min(times), "times_s": times,
              "peak_mb": max(r["peak_mb"] for r in rounds), "rounds": len(rounds)}
    metrics = [m for r in rounds for m in r.get("metrics", [])]
    if metrics:  # median of each reported metric over all timed runs
        merged["metrics"] = {k: statistics.median(m[k] for m in metrics) for k in metrics[0]}
    return merged


def agreement(case: Case, specs):
    """Largest absolute difference of every spec's outputs (loss and gradients, or
    outputs) from those of the case's baseline formulation on the same device, mode and
    size, computed in this process (one run each); None for each if the case's
    formulations compute different things."""
    if not case.comparable:
        return [None] * len(specs)
    outputs = {}
    for spec in specs:
        out = case.make_run(spec)()
        outputs[tuple(sorted(spec.items()))] = out if isinstance(out, tuple) else (out,)
    diffs = []
    for spec in specs:
        ref = outputs[tuple(sorted({**spec, "impl": case.baseline}.items()))]
        ours = outputs[tuple(sorted(spec.items()))]
        diffs.append(max(float((a.double() - b.double()).abs().max()) for a, b in zip(ours, ref)))
    return diffs


def run_rounds(case: Case, plan, rounds: int, repeats: int, warmup: int, allocator: str, desc: str = ""):
    """Every spec of ``plan`` measured in ``rounds`` processes of ``repeats`` timed runs,
    the rounds interleaving the specs so that a slow spell of a shared machine hits all of
    them; the merged results, each with its ``max_abs_diff`` from the baseline."""
    from tqdm import tqdm

    runs = [[] for _ in plan]
    with tqdm(total=rounds * len(plan), desc=desc) as bar:
        for _ in range(rounds):
            for i, spec in enumerate(plan):
                runs[i].append(run_in_subprocess(case, spec, repeats, warmup, allocator))
                bar.update()
    results = [merge_rounds(r) for r in runs]
    for r, diff in zip(results, agreement(case, plan)):
        r["max_abs_diff"] = diff
    return results


def table(case: Case, results):
    """Markdown table; each row carries its speed-up over the case's baseline formulation
    measured in the same run, and how far its outputs are from the baseline's."""
    ref = {case.group(r): r for r in results if r["impl"] == case.baseline}
    extra = list(dict.fromkeys(k for r in results for k in r.get("metrics", {})))  # reported by the runs
    lines = [
        f"| device | mode | {' | '.join(case.size)} | impl | median time | peak memory | "
        f"speed-up vs {case.baseline} | max abs diff |" + "".join(f" {k} |" for k in extra),
        "|---|---|" + "---|" * len(case.size) + "---|---|---|---|---|" + "---|" * len(extra),
    ]
    for r in results:
        base = ref.get(case.group(r))
        speedup = f"{base['median_s'] / r['median_s']:.2f}x" if base and r is not base else ""
        sizes = " | ".join(str(r[k]) for k in case.size)
        diff = "-" if r.get("max_abs_diff") is None else f"{r['max_abs_diff']:.1e}"
        lines.append(
            f"| {r['device']} | {r['mode']} | {sizes} | {r['impl']} | "
            f"{1000 * r['median_s']:.1f} ms | {r['peak_mb']:.0f} MB | {speedup} | {diff} |"
            + "".join(f" {r['metrics'][k]:.2f} |" if k in r.get("metrics", {}) else " |" for k in extra)
        )
    return "\n".join(lines)


def processor() -> str:
    """This machine's processor, for every table: its model name and the vector extensions
    that change which formulation is fastest (figures of different processors do not mix)."""
    from condseg.layers.odconv_autotune import cpu_info  # the processor that ODConv's measured choices are keyed by

    name, flags = cpu_info()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    return f"{name} ({', '.join(f for f in wanted if f in flags) or 'no AVX2/AVX-512/AMX'}), {os.cpu_count()} CPUs"
