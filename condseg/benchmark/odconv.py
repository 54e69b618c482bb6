"""ODConv 3x3 (C -> C) at ResNet-50 stage shapes of an 800x1216 input (res2-res5:
64-512 channels at strides 4-32), batch 2 and 8, kernel_num 1 and 4: the
published formulation ("batch_groups": the batch folded into the groups of
one convolution) against condseg's others ("winograd-F2" / "-F3": Winograd
with another tile than the default F(4x4, 3x3)) and impl "auto": "auto-measured"
measured at first use (MODEL.ODCONV.AUTOTUNE True; its choices are cached in
--autotune-cache and listed under the table), "auto-rule" the fixed rule
(AUTOTUNE False); training step (forward + backward of sum(out * g), train
mode) and inference.
"""
import os

from .conv_layer import RESNET50_STAGES, conv_input, conv_run
from .harness import Case, table

AUTO_ROWS = ("auto-measured", "auto-rule")  # impl "auto" with MODEL.ODCONV.AUTOTUNE True / False
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
    statistics), as in a training step. ``auto-measured`` makes its choice here (measured,
    or read from its cache), before the timed runs."""
    import torch

    torch.manual_seed(seed)
    layer = build_layer(impl, stage, kernel_num, device, autotune_cache)
    x = conv_input(stage, batch, device, seed)
    if impl == "auto-measured":
        if mode == "infer":
            layer.eval()
            with torch.no_grad():
                layer.resolved_impl(x)
        else:
            layer.resolved_impl(x.requires_grad_(True))
    return conv_run(layer, x, mode)


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
        for batch in (2, 8)
        for kn in (1, 4)
        for impl in impls
    ]


def report(results) -> str:
    """The table, then what ``auto-measured`` chose for each shape (from its cache file)."""
    from condseg.layers.odconv_autotune import ODConvTuner, choice_line

    text = table(CASE, results)
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
