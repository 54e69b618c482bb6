"""condseg.benchmark.odconv: the ODConv formulations agree at a ResNet-50 stage shape."""
from condseg.benchmark import odconv
from condseg.benchmark.harness import agreement, select


def test_odconv_formulations_agree_at_a_resnet50_stage_shape():
    specs = select(odconv.plan(["cpu"]), ["stage=res5", "batch=2", "kernel_num=4", "mode=train"])
    assert specs[0]["impl"] == "batch_groups" and len(specs) >= 3
    diffs = agreement(odconv.CASE, specs)
    assert max(diffs) < 1e-3, list(zip([s["impl"] for s in specs], diffs))


def test_winograd_rows_run_the_tile_they_name():
    from condseg.layers.odconv import WINOGRAD_TILE
    from condseg.layers.winograd import TILE_SIZES

    rows = sorted({s["impl"] for s in odconv.plan(["cpu"]) if s["impl"].startswith("winograd")})
    assert rows == sorted(["winograd"] + [f"winograd-F{m}" for m in TILE_SIZES if m != WINOGRAD_TILE])
    for impl in rows:
        layer = odconv.build_layer(impl, "res5", 1)
        expected = WINOGRAD_TILE if impl == "winograd" else int(impl[len("winograd-F"):])
        assert layer.impl == "winograd" and layer.winograd_tile == expected
