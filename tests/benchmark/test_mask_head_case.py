"""condseg.benchmark.mask_head: the mask-head case's formulations agree."""
from condseg.benchmark import mask_head
from condseg.benchmark.harness import agreement


def test_mask_head_formulations_agree():
    specs = [s for s in mask_head.plan(["cpu"]) if s["num_instances"] == 50]
    assert {s["impl"] for s in specs if s["mode"] == "train"} == {"grouped_conv", "bmm", "bmm+fused_loss"}
    assert {s["impl"] for s in specs if s["mode"] == "infer"} == {"grouped_conv", "bmm", "bmm+fused_probs"}
    diffs = agreement(mask_head.CASE, specs)
    assert max(diffs) < 1e-5, list(zip([s["impl"] for s in specs], diffs))
