"""condseg.benchmark.dcn: rows have no agreement column, and carry the ratio to the plain conv."""
from condseg.benchmark import dcn
from condseg.benchmark.harness import agreement, select, table


def test_dcn_rows_have_no_agreement_column():
    specs = select(dcn.plan(["cpu"]), ["stage=res5", "mode=infer"])
    assert [s["impl"] for s in specs] == ["conv2d", "dcnv2:torchvision", "dcnv2:grid_sample"]
    assert agreement(dcn.CASE, specs) == [None] * 3
    rows = [{**s, "median_s": t, "min_s": t, "times_s": [t], "peak_mb": 1, "max_abs_diff": None}
            for s, t in zip(specs, (0.1, 0.4, 0.2))]
    assert "| cpu | infer | res5 | 2 | dcnv2:torchvision | 400.0 ms | 1 MB | 0.25x | - |" in table(dcn.CASE, rows)
