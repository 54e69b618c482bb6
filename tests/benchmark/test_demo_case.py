"""condseg.benchmark.demo: every pipeline measured on a given model; the quickstart model is required."""
from condseg.benchmark import demo
from condseg.benchmark.harness import measure, merge_rounds, table


def test_demo_case_measures_every_pipeline_on_a_given_model(tiny_model, tmp_path, monkeypatch):
    """One pass per formulation on a short generated video, with the tiny model of the tests
    in place of the quickstart model; rows report frames/s and the per-stage times."""
    monkeypatch.chdir(tmp_path)  # the case writes its video under output/benchmark
    config, weights = tiny_model
    monkeypatch.setattr(demo, "WEIGHTS", weights)
    monkeypatch.setattr(demo, "CONFIG", config)
    monkeypatch.setattr(demo, "FRAMES", 6)
    monkeypatch.setattr(demo, "SIZE", "96x64")
    specs = demo.plan(["cpu"])
    assert [s["impl"] for s in specs] == ["sequential", "sequential+batch2", "overlapped", "overlapped+batch2",
                                          "model_only"]
    rows = [measure(demo.CASE, s, repeats=1, warmup=0) for s in specs]
    assert all(r["metrics"][0]["frames/s"] > 0 for r in rows)
    assert "model ms/frame" in rows[2]["metrics"][0] and "model ms/frame" not in rows[4]["metrics"][0]
    merged = [merge_rounds([r]) for r in rows]
    for r in merged:
        r["max_abs_diff"] = None
    text = table(demo.CASE, merged)
    assert "frames/s |" in text and "| cpu | video | 6 | 96x64 | overlapped |" in text
    assert not demo.CASE.stable_malloc


def test_demo_case_needs_the_quickstart_model(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "WEIGHTS", str(tmp_path / "missing.pth"))
    try:
        demo.plan(["cpu"])
    except SystemExit as e:
        assert "missing.pth is missing (run `make quickstart`)" in str(e)
    else:
        raise AssertionError("no error without the model")
