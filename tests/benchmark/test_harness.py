"""condseg.benchmark.harness: rounds are pooled, rows carry the same-run ratio, --only filters."""
from condseg.benchmark import dcn, mask_head
from condseg.benchmark.harness import merge_rounds, select, table


def test_rounds_are_pooled_and_rows_carry_the_ratio():
    specs = [s for s in mask_head.plan(["cpu"]) if s["num_instances"] == 50]
    rounds = [{**specs[0], "median_s": m, "min_s": m, "times_s": [m], "peak_mb": p} for m, p in ((0.2, 10), (0.4, 30))]
    merged = merge_rounds(rounds)
    assert merged["times_s"] == [0.2, 0.4] and merged["peak_mb"] == 30 and merged["rounds"] == 2
    fast = {**merged, "impl": "bmm", "median_s": 0.15, "max_abs_diff": 1e-8}
    text = table(mask_head.CASE, [{**merged, "max_abs_diff": 0.0}, fast])
    assert "| cpu | train | 50 | bmm | 150.0 ms | 30 MB | 2.00x | 1.0e-08 |" in text


def test_select_filters_and_rejects_bad_filters():
    specs = select(dcn.plan(["cpu"]), ["stage=res5", "mode=infer"])
    assert [s["impl"] for s in specs] == ["conv2d", "dcnv2:torchvision", "dcnv2:grid_sample"]
    assert select(specs, ["stage=res9"]) == []
    assert [s["impl"] for s in select(specs, ["impl=conv2d,dcnv2:grid_sample"])] == ["conv2d", "dcnv2:grid_sample"]
    try:
        select(specs, ["stage"])
    except SystemExit as e:
        assert "KEY=VALUE" in str(e)
    else:
        raise AssertionError("a filter without '=' was accepted")
