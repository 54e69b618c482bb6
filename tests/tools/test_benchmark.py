"""tools/benchmark.py: the mask-head case's formulations agree, and results are tabulated."""
import importlib.util
import os

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("condseg_benchmark", os.path.join(ROOT, "tools", "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mask_head_formulations_agree_and_rows_carry_the_ratio():
    bench = _benchmark_module()
    specs = [s for s in bench.mask_head_plan(["cpu"]) if s["num_instances"] == 50]
    assert {s["impl"] for s in specs if s["mode"] == "train"} == {"grouped_conv", "bmm", "bmm+fused_loss"}
    diffs = bench.agreement(specs)
    assert max(diffs) < 1e-5, list(zip([s["impl"] for s in specs], diffs))

    rounds = [{**specs[0], "median_s": m, "min_s": m, "times_s": [m], "peak_mb": p} for m, p in ((0.2, 10), (0.4, 30))]
    merged = bench.merge_rounds(rounds)
    assert merged["times_s"] == [0.2, 0.4] and merged["peak_mb"] == 30 and merged["rounds"] == 2
    fast = {**merged, "impl": "bmm", "median_s": 0.15, "max_abs_diff": 1e-8}
    text = bench.table([{**merged, "max_abs_diff": 0.0}, fast])
    assert "| cpu | train | 50 | bmm | 150.0 ms | 30 MB | 2.00x | 1.0e-08 |" in text


def test_odconv_formulations_agree_at_a_resnet50_stage_shape():
    bench = _benchmark_module()
    specs = bench.select(bench.odconv_plan(["cpu"]), ["stage=res5", "batch=2", "kernel_num=4", "mode=train"])
    assert specs[0]["impl"] == "batch_groups" and len(specs) >= 3
    diffs = bench.agreement(specs)
    assert max(diffs) < 1e-3, list(zip([s["impl"] for s in specs], diffs))


def test_dcn_rows_have_no_agreement_column_and_select_rejects_bad_filters():
    bench = _benchmark_module()
    specs = bench.select(bench.dcn_plan(["cpu"]), ["stage=res5", "mode=infer"])
    assert [s["impl"] for s in specs] == ["conv2d", "dcnv2:torchvision", "dcnv2:grid_sample"]
    assert bench.agreement(specs) == [None] * 3
    rows = [{**s, "median_s": t, "min_s": t, "times_s": [t], "peak_mb": 1, "max_abs_diff": None}
            for s, t in zip(specs, (0.1, 0.4, 0.2))]
    assert "| cpu | infer | res5 | 2 | dcnv2:torchvision | 400.0 ms | 1 MB | 0.25x | - |" in bench.table(rows)
    assert bench.select(specs, ["stage=res9"]) == []
    try:
        bench.select(specs, ["stage"])
    except SystemExit as e:
        assert "KEY=VALUE" in str(e)
    else:
        raise AssertionError("a filter without '=' was accepted")


def test_demo_case_measures_every_pipeline_on_a_given_model(tiny_model, tmp_path, monkeypatch):
    """One pass per formulation on a short generated video, with the tiny model of the tests
    in place of the quickstart model; rows report frames/s and the per-stage times."""
    bench = _benchmark_module()
    monkeypatch.chdir(tmp_path)  # the case writes its video under output/benchmark
    config, weights = tiny_model
    monkeypatch.setattr(bench, "DEMO_WEIGHTS", weights)
    monkeypatch.setattr(bench, "DEMO_CONFIG", config)
    monkeypatch.setattr(bench, "DEMO_FRAMES", 6)
    monkeypatch.setattr(bench, "DEMO_SIZE", "96x64")
    specs = bench.demo_plan(["cpu"])
    assert [s["impl"] for s in specs] == ["sequential", "sequential+batch2", "overlapped", "overlapped+batch2",
                                          "model_only"]
    rows = [bench.measure(s, repeats=1, warmup=0) for s in specs]
    assert all(r["metrics"][0]["frames/s"] > 0 for r in rows)
    assert "model ms/frame" in rows[2]["metrics"][0] and "model ms/frame" not in rows[4]["metrics"][0]
    merged = [bench.merge_rounds([r]) for r in rows]
    for r in merged:
        r["max_abs_diff"] = None
    text = bench.table(merged)
    assert "frames/s |" in text and "| cpu | video | 6 | 96x64 | overlapped |" in text
    assert not bench.CASES["demo"].stable_malloc


def test_demo_case_needs_the_quickstart_model(tmp_path, monkeypatch):
    bench = _benchmark_module()
    monkeypatch.setattr(bench, "DEMO_WEIGHTS", str(tmp_path / "missing.pth"))
    try:
        bench.demo_plan(["cpu"])
    except SystemExit as e:
        assert "missing.pth is missing (run `make quickstart`)" in str(e)
    else:
        raise AssertionError("no error without the model")
