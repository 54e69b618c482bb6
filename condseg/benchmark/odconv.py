"""ODConv 3x3 (C -> C) at ResNet-50 stage shapes of an 800x1216 input (res2-res5:
64-512 channels at strides 4-32), batch 1, 2 and 8, kernel_num 1 and 4: the
published formulation ("batch_groups": the batch folded into the groups of
one convolution) against condseg's others ("winograd-F2" / "-F3": Winograd
with another tile than the default F(4x4, 3x3)) and impl "auto": "auto-measured"
measured at first use (MODEL.ODCONV.AUTOTUNE True; its choices are cached in
--autotune-cache and listed under the table), "auto-rule" the fixed rule
(AUTOTUNE False); training step (forward + backward of sum(out * g), train
mode; at batch 1 with the attention BN on running statistics) and inference.
"""
import functools
import os

from .conv_layer import INPUT_HW, RESNET50_STAGES, conv_input, conv_run
from .harness import Case, table

AUTO_ROWS = ("auto-rule", "auto-measured")  # impl "auto" with MODEL.ODCONV.AUTOTUNE False / True
AUTOTUNE_CACHE = os.path.join("output", "benchmark", "odconv_autotune")


def build_layer(impl: str, stage: str, kernel_num: int, device: str = "cpu", autotune_cache: str = AUTOTUNE_CACHE):
    """ODConv 3x3 (C -> C, padding 1) at a ResNet-50 stage's width, formulation ``impl``
    (``condseg.layers.odconv.IMPLS``, ``winograd-F<m>`` for another Winograd tile, or one
    of :data:`AUTO_ROWS`; ``auto-measured`` keeps its choices in ``autotune_cache``)."""
    from condseg.layers import ODConv2d
    from condseg.layers.odconv import WINOGRAD_TILE
    from condseg.layers.odconv_autotune import ODConvTuner

    channels, _ = RESNET50_STAGES[stage]
    tile = WINOGRAD_TILE
    if impl.startswith("winograd-F"):
        impl, tile = "winograd", int(impl[len("winograd-F"):])
    autotune = impl == "auto-measured"
    layer = ODConv2d(channels, channels, 3, padding=1, kernel_num=kernel_num, impl="auto" if impl in AUTO_ROWS else impl,
                     autotune=autotune, winograd_tile=tile).to(device)
    if autotune:
        layer.tuner = ODConvTuner(autotune_cache)
    return layer


def runs(device: str, impl: str, stage: str, batch: int, kernel_num: int, mode: str,
         autotune_cache: str = AUTOTUNE_CACHE, seed: int = 0):
    """:func:`build_layer`'s layer on a stage-shaped input (``batch_groups`` is the
    published formulation). Training runs in train mode (attention BN on batch
    statistics; at batch 1, where those are undefined, on running statistics, as with
    MODEL.ODCONV.ATTENTION_BN_EVAL), as in a training step. ``auto-measured`` makes its choice here (measured,
    or read from its cache), before the timed runs. The run's ``facts`` say what formulation
    it runs (``ran``: ``auto`` resolved)."""
    import torch

    torch.manual_seed(seed)
    layer = build_layer(impl, stage, kernel_num, device, autotune_cache)
    if mode == "train" and batch == 1:  # batch statistics of one sample are undefined: running ones
        layer.attention.bn.eval()  # as MODEL.ODCONV.ATTENTION_BN_EVAL
    x = conv_input(stage, batch, device, seed)
    if mode == "infer":
        layer.eval()
    else:
        x.requires_grad_(True)
    with torch.set_grad_enabled(mode == "train"):
        ran = layer.resolved_impl(x)  # auto-measured measures here, before the timed runs
    run = conv_run(layer, x, mode)
    run.facts = {"ran": ran}  # what the timed runs run, kept in the results
    return run


def plan(devices, autotune_cache: str = AUTOTUNE_CACHE):
    from condseg.layers.odconv import IMPLS, WINOGRAD_TILE
    from condseg.layers.winograd import TILE_SIZES

    impls = ["batch_groups", *AUTO_ROWS] + [i for i in IMPLS if i not in ("batch_groups", "pointwise")]
    impls += [f"winograd-F{m}" for m in TILE_SIZES if m != WINOGRAD_TILE]
    return [
        {"case": "odconv", "device": d, "impl": impl, "stage": stage, "batch": batch, "kernel_num": kn, "mode": mode,
         "autotune_cache": autotune_cache}
        for d in devices
        for mode in ("train", "infer")
        for stage in RESNET50_STAGES
        for batch in (1, 2, 8)
        for kn in (1, 4)
        for impl in impls
    ]


@functools.lru_cache(maxsize=None)
def _rule_layer(stage: str, kernel_num: int):
    """The ``auto-rule`` layer of a stage and kernel number, built once for the report."""
    return build_layer("auto-rule", stage, kernel_num)


def _choices(spec, tuners):
    """What ``auto-rule`` and ``auto-measured`` run for ``spec``'s shape, for results measured
    before runs recorded it (``ran``): the rule's choice now, and the measured one from its
    cache file (None where it has none)."""
    import torch

    from condseg.layers.odconv_autotune import machine_key, shape_key
    from condseg.layers.odconv_formulations import auto_impl

    layer = _rule_layer(spec["stage"], spec["kernel_num"])
    channels, stride = RESNET50_STAGES[spec["stage"]]
    x = torch.empty(spec["batch"], channels, INPUT_HW[0] // stride, INPUT_HW[1] // stride)
    with torch.set_grad_enabled(spec["mode"] == "train"):
        rule = auto_impl(layer, x)
    tuner = tuners.get(spec.get("autotune_cache"))
    entry = tuner.entries(machine_key(x.device)).get(shape_key(layer, x, spec["mode"] == "train")) if tuner else None
    return rule, entry["impl"] if entry else None


def auto_summary(results) -> str:
    """For every shape with a ``batch_groups`` row: the time of each ``auto`` row, what it
    ran and its ratio to ``batch_groups``; then the lowest ratio of each (in training at
    res2-res5 too). Empty without ``auto`` rows."""
    from condseg.layers.odconv_autotune import ODConvTuner

    autos = [r for r in results if r["impl"] in AUTO_ROWS]
    if not autos:
        return ""
    tuners = {r["autotune_cache"]: ODConvTuner(r["autotune_cache"]) for r in autos if r["impl"] == "auto-measured"}
    by_group = {}
    for r in results:
        by_group.setdefault(CASE.group(r), {})[r["impl"]] = r
    lines = ["| mode | stage | batch | kernel_num | batch_groups | " + " | ".join(f"{a} | vs batch_groups" for a in AUTO_ROWS)
             + " |", "|---|---|---|---|---|" + "---|---|" * len(AUTO_ROWS)]
    ratios = {a: [] for a in AUTO_ROWS}
    for rows in by_group.values():
        base = rows.get("batch_groups")
        if base is None or not any(a in rows for a in AUTO_ROWS):
            continue
        cells = []
        for a in AUTO_ROWS:
            r = rows.get(a)
            if r is None:
                cells += ["", ""]
                continue
            ratio = base["median_s"] / r["median_s"]
            ratios[a].append((ratio, base))
            chose = r.get("ran") or _choices(base, tuners)[AUTO_ROWS.index(a)] or "?"
            cells += [f"{chose} {1000 * r['median_s']:.1f} ms", f"{ratio:.2f}x"]
        lines.append(f"| {base['mode']} | {base['stage']} | {base['batch']} | {base['kernel_num']} | "
                     f"{1000 * base['median_s']:.1f} ms | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    for a, found in ratios.items():
        if not found:
            continue
        low, at = min(found, key=lambda f: f[0])
        train = [f for f in found if f[1]["mode"] == "train"]
        text += (f"\n\n{a}: at least 1.0x batch_groups in {sum(f[0] >= 1.0 for f in found)} of {len(found)} shapes; "
                 f"lowest {low:.2f}x ({at['mode']} {at['stage']} batch {at['batch']} kernel_num {at['kernel_num']})")
        if train:
            low_t, at_t = min(train, key=lambda f: f[0])
            text += (f"; in training at least 1.5x in {sum(f[0] >= 1.5 for f in train)} of {len(train)}, lowest "
                     f"{low_t:.2f}x ({at_t['stage']} batch {at_t['batch']} kernel_num {at_t['kernel_num']})")
    return text


def report(results) -> str:
    """The table, the ``auto`` rows against ``batch_groups`` shape by shape (when there are
    any), then what ``auto-measured`` chose for each shape (from its cache file)."""
    from condseg.layers.odconv_autotune import ODConvTuner, choice_line

    text = table(CASE, results)
    summary = auto_summary(results)
    if summary:
        text += "\n\n`auto` against batch_groups, shape by shape (what each ran, its time, the ratio):\n\n" + summary
    folders = sorted({r["autotune_cache"] for r in results if r["impl"] == "auto-measured"})
    for folder in folders:
        tuner = ODConvTuner(folder)
        text += f"\n\nauto-measured's choices ({tuner.path}; delete it to measure again):"
        for machine, entries in sorted(tuner.read().items()):
            text += f"\n{machine}:"
            for key, entry in sorted(entries.items()):
                text += f"\n  {key}: {choice_line(entry['impl'], entry['ms'])} (measured {entry.get('measured', '?')})"
    return text


CASE = Case(plan, runs, "batch_groups", ("stage", "batch", "kernel_num"), help=__doc__, report=report, options=(
    ("--autotune-cache", {"default": AUTOTUNE_CACHE, "metavar": "DIR",
                          "help": "where auto-measured keeps its choices (default %(default)s; an existing "
                                  "file's choices are reused, as MODEL.ODCONV.AUTOTUNE does)"}),
))
