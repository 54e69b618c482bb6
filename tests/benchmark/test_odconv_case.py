"""condseg.benchmark.odconv: the ODConv formulations agree at a ResNet-50 stage shape."""
from condseg.benchmark import odconv
from condseg.benchmark.harness import agreement, select


def test_odconv_formulations_agree_at_a_resnet50_stage_shape(tmp_path):
    specs = select(odconv.plan(["cpu"], str(tmp_path)), ["stage=res5", "batch=2", "kernel_num=4", "mode=train"])
    specs = [s for s in specs if s["impl"] != "auto-measured"]  # one of the others (measuring it: the next test)
    assert specs[0]["impl"] == "batch_groups" and len(specs) >= 3
    diffs = agreement(odconv.CASE, specs)
    assert max(diffs) < 1e-3, list(zip([s["impl"] for s in specs], diffs))


def test_auto_rows_measure_or_apply_the_rule_and_the_report_lists_the_choices(tmp_path):
    import torch

    from condseg.layers.odconv_autotune import CACHE_FILE, ODConvTuner
    from condseg.layers.odconv_formulations import auto_impl

    measured = odconv.build_layer("auto-measured", "res5", 1, autotune_cache=str(tmp_path))
    rule = odconv.build_layer("auto-rule", "res5", 1)
    assert (measured.impl, measured.autotune, rule.impl, rule.autotune) == ("auto", True, "auto", False)
    [spec] = select(odconv.plan(["cpu"], str(tmp_path)), ["stage=res5", "batch=2", "kernel_num=1", "mode=infer",
                                                         "impl=auto-measured"])
    with torch.no_grad():
        odconv.CASE.make_run(spec)()  # chooses before it returns the run
    assert (tmp_path / CACHE_FILE).exists()
    row = {**spec, "median_s": 1.0, "peak_mb": 0.0}
    text = odconv.report([{**row, "impl": "batch_groups"}, row])
    assert "| auto-measured | 1000.0 ms |" in text and "batch 2 size 28x40 | float32 cpu | infer: " in text
    # the summary: what each auto row ran, its ratio, the lowest ratio
    chosen = next(iter(ODConvTuner(str(tmp_path)).read().values()))
    [measured_impl] = {e["impl"] for e in chosen.values()}
    with torch.no_grad():  # the rule of an inference
        rule_impl = auto_impl(rule, odconv.conv_input("res5", 2, "cpu"))
    text = odconv.report([{**row, "impl": "batch_groups"}, {**row, "impl": "auto-rule", "median_s": 2.0}, row])
    assert f"| infer | res5 | 2 | 1 | 1000.0 ms | {rule_impl} 2000.0 ms | 0.50x | {measured_impl} 1000.0 ms | 1.00x |" in text
    assert "auto-rule: at least 1.0x batch_groups in 0 of 1 shapes; lowest 0.50x (infer res5 batch 2 kernel_num 1)" in text
    assert "auto-measured: at least 1.0x batch_groups in 1 of 1 shapes" in text


def test_winograd_rows_run_the_tile_they_name():
    from condseg.layers.odconv import WINOGRAD_TILE
    from condseg.layers.winograd import TILE_SIZES

    rows = sorted({s["impl"] for s in odconv.plan(["cpu"]) if s["impl"].startswith("winograd")})
    assert rows == sorted(["winograd"] + [f"winograd-F{m}" for m in TILE_SIZES if m != WINOGRAD_TILE])
    for impl in rows:
        layer = odconv.build_layer(impl, "res5", 1)
        expected = WINOGRAD_TILE if impl == "winograd" else int(impl[len("winograd-F"):])
        assert layer.impl == "winograd" and layer.winograd_tile == expected


def test_runs_record_what_auto_ran_and_the_report_prints_that_not_the_rule_of_today():
    """A measurement keeps the formulation its layer resolved to (``ran``), so that a report
    of an older run (``--report``) labels its rows with what ran then."""
    import torch

    from condseg.benchmark.harness import measure
    from condseg.layers.odconv_formulations import auto_impl

    [spec] = select(odconv.plan(["cpu"]), ["stage=res5", "batch=1", "kernel_num=1", "mode=infer", "impl=auto-rule"])
    result = measure(odconv.CASE, spec, repeats=1, warmup=0)
    with torch.no_grad():
        assert result["ran"] == auto_impl(odconv.build_layer("auto-rule", "res5", 1), odconv.conv_input("res5", 1, "cpu"))
    older = {**result, "ran": "per_sample", "median_s": 2.0}  # as if an earlier rule had chosen per_sample
    text = odconv.report([{**result, "impl": "batch_groups", "median_s": 1.0}, older])
    assert "| infer | res5 | 1 | 1 | 1000.0 ms | per_sample 2000.0 ms | 0.50x |" in text
