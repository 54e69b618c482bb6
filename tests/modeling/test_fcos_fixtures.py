"""FCOS targets, losses and inference reproduce the reference fixtures (fixtures/condinst)."""
import pytest
import torch

from condseg.layers import compute_locations
from condseg.modeling.fcos.losses import fcos_losses, flatten_level_major
from condseg.modeling.fcos.postprocess import fcos_inference, gather_at_detections
from condseg.modeling.fcos.targets import centerness_targets, fcos_size_ranges, fcos_targets, mask_centroids

LEVELS = ("p3", "p4", "p5", "p6", "p7")


def test_compute_locations_matches_fixture(fixture):
    d = fixture("condinst", "compute_locations.pt")
    for k, (h, w, s) in enumerate(d["cases"]):
        assert torch.equal(compute_locations(h, w, s), d[f"case{k}_locations"]), (h, w, s)


def _targets(d, use_masks):
    locations = [d[f"locations_{p}"] for p in LEVELS]
    for loc, (h, w), s in zip(locations, d["feature_sizes"], d["strides"]):
        assert torch.equal(loc, compute_locations(h, w, s))
    ranges = fcos_size_ranges([64, 128, 256, 512], 5)
    assert ranges == d["size_ranges"]
    boxes = [d["img0_gt_boxes"], d["img1_gt_boxes"]]
    centers = None
    if use_masks:
        centers = [mask_centroids(d[f"img{i}_gt_bitmasks_full"], boxes[i]) for i in range(2)]
    return fcos_targets(
        locations, d["strides"], ranges, boxes, [d["img0_gt_classes"], d["img1_gt_classes"]],
        num_classes=80, center_sample=True, radius=1.5, gt_centers=centers,
    )


def test_mask_centroids_match_fixture(fixture):
    d = fixture("condinst", "fcos_targets.pt")
    for i in range(2):
        c = mask_centroids(d[f"img{i}_gt_bitmasks_full"])
        torch.testing.assert_close(c[:, 0], d[f"img{i}_mask_centroid_x"], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(c[:, 1], d[f"img{i}_mask_centroid_y"], atol=1e-6, rtol=1e-6)


def test_mask_centroid_of_empty_mask_falls_back_to_box_centre():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[1, 2:4, 6:8] = True
    boxes = torch.tensor([[0.0, 0.0, 4.0, 6.0], [6.0, 2.0, 8.0, 4.0]])
    c = mask_centroids(masks, boxes)
    assert c.tolist() == [[2.0, 3.0], [6.5, 2.5]]


@pytest.mark.parametrize(
    "use_masks, prefix",
    [(True, "flat_"), (False, "boxcentre_flat_")],
    ids=["mask_centroid_centres", "box_centres"],
)
def test_fcos_targets_match_fixture(fixture, use_masks, prefix):
    d = fixture("condinst", "fcos_targets.pt")
    t = _targets(d, use_masks=use_masks)
    assert torch.equal(t["labels"], d[prefix + "labels"])
    assert torch.equal(t["target_inds"], d[prefix + "target_inds"])
    torch.testing.assert_close(t["reg_targets"], d[prefix + "reg_targets"], atol=1e-6, rtol=0)
    pos = torch.nonzero(t["labels"] != 80).squeeze(1)
    assert torch.equal(pos, d[prefix + "pos_inds"])
    torch.testing.assert_close(
        centerness_targets(t["reg_targets"][pos]), d[prefix + "ctrness_targets_pos"], atol=1e-6, rtol=1e-6
    )
    # the flattened bookkeeping (same for both centre rules)
    assert torch.equal(t["im_inds"], d["flat_im_inds"])
    assert torch.equal(t["fpn_levels"], d["flat_fpn_levels"])
    assert torch.equal(t["locations"], d["flat_locations"])


def test_fcos_targets_image_without_gt_is_all_background():
    locations = [compute_locations(4, 4, 8), compute_locations(2, 2, 16)]
    t = fcos_targets(
        locations, [8, 16], fcos_size_ranges([64], 2),
        [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 30.0, 30.0]])],
        [torch.zeros(0, dtype=torch.int64), torch.tensor([3])], num_classes=5,
    )
    img0 = t["im_inds"] == 0
    assert (t["labels"][img0] == 5).all() and (t["target_inds"][img0] == -1).all()
    assert (t["reg_targets"][img0] == 0).all()
    assert (t["labels"][~img0] == 3).any() and (t["target_inds"][~img0] == 0).all()


def test_fcos_losses_match_fixture(fixture):
    d = fixture("condinst", "fcos_losses.pt")
    t = _targets(fixture("condinst", "fcos_targets.pt"), use_masks=True)
    logits = flatten_level_major([d[f"logits_pred_{p}"] for p in LEVELS])
    reg = flatten_level_major([d[f"reg_pred_{p}"] for p in LEVELS])
    ctr = flatten_level_major([d[f"ctrness_pred_{p}"] for p in LEVELS]).squeeze(1)
    out = fcos_losses(logits, reg, ctr, t["labels"], t["reg_targets"], num_classes=80)
    ex = out["extras"]
    assert torch.equal(ex["pos_inds"], d["pos_inds"])
    torch.testing.assert_close(reg[ex["pos_inds"]], d["reg_pred_pos"])
    assert torch.equal(t["target_inds"][ex["pos_inds"]], d["gt_inds_pos"])
    assert torch.equal(t["fpn_levels"][ex["pos_inds"]], d["fpn_levels_pos"])
    assert torch.equal(t["im_inds"][ex["pos_inds"]], d["im_inds_pos"])
    torch.testing.assert_close(ex["ctrness_targets"], d["ctrness_targets_pos"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ex["ious"], d["ious_pos"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ex["gious"], d["gious_pos"], atol=1e-6, rtol=1e-6)
    assert ex["num_pos_avg"].item() == d["num_pos_avg"]
    torch.testing.assert_close(ex["loss_denorm"], torch.tensor(d["loss_denorm"]), rtol=1e-5, atol=0)
    for k in ("loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"):
        torch.testing.assert_close(out[k], d[k], rtol=1e-5, atol=0, msg=k)


@pytest.mark.parametrize("positives", [True, False])
def test_fcos_losses_keep_the_input_dtype(fixture, positives):
    """float64 predictions and targets give float64 losses and normalisers, equal to the
    float32 reference values."""
    d = fixture("condinst", "fcos_losses.pt")
    t = _targets(fixture("condinst", "fcos_targets.pt"), use_masks=True)
    logits, reg, ctr = (flatten_level_major([d[f"{k}_pred_{p}"].double() for p in LEVELS])
                        for k in ("logits", "reg", "ctrness"))
    labels = t["labels"] if positives else torch.full_like(t["labels"], 80)
    out = fcos_losses(logits, reg, ctr.squeeze(1), labels, t["reg_targets"].double(), num_classes=80)
    for k in ("loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"):
        assert out[k].dtype == torch.float64, k
    assert out["extras"]["num_pos_avg"].dtype == out["extras"]["loss_denorm"].dtype == torch.float64
    if positives:
        for k in ("loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"):
            torch.testing.assert_close(out[k], torch.tensor(d[k], dtype=torch.float64), rtol=1e-5, atol=0, msg=k)


def test_fcos_losses_without_positives_are_zero_and_connected():
    logits = torch.randn(10, 3, requires_grad=True)
    reg = torch.rand(10, 4, requires_grad=True)
    ctr = torch.randn(10, requires_grad=True)
    out = fcos_losses(logits, reg, ctr, torch.full((10,), 3), torch.zeros(10, 4), num_classes=3)
    total = out["loss_fcos_cls"] + out["loss_fcos_loc"] + out["loss_fcos_ctr"]
    total.backward()
    assert out["loss_fcos_loc"].item() == 0 and out["loss_fcos_ctr"].item() == 0
    assert reg.grad is not None and ctr.grad is not None and torch.isfinite(logits.grad).all()


def test_fcos_inference_matches_fixture(fixture):
    d = fixture("condinst", "inference_heads.pt")
    locations = [compute_locations(h, w, s) for (h, w), s in zip(d["feature_sizes"], d["strides"])]
    dets = fcos_inference(
        locations,
        [d[f"logits_pred_{p}"] for p in LEVELS],
        [d[f"reg_pred_{p}"] for p in LEVELS],
        [d[f"ctrness_pred_{p}"] for p in LEVELS],
        d["strides"], d["pre_nms_thresh"], d["pre_nms_topk"], d["nms_thresh"], d["post_nms_topk"],
        d["thresh_with_ctr"],
    )
    boxes = torch.cat([x["boxes"] for x in dets])
    torch.testing.assert_close(boxes, d["det_boxes"], atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.cat([x["scores"] for x in dets]), d["det_scores"], atol=1e-6, rtol=0)
    assert torch.equal(torch.cat([x["classes"] for x in dets]), d["det_classes"])
    assert torch.equal(torch.cat([x["fpn_levels"] for x in dets]), d["det_fpn_levels"])
    assert torch.equal(torch.cat([x["loc_inds"] for x in dets]), d["det_loc_index_in_level"])
    torch.testing.assert_close(torch.cat([x["locations"] for x in dets]), d["det_locations"])
    assert [x["scores"].numel() for x in dets] == [
        (d["det_im_inds"] == i).sum().item() for i in range(2)
    ]
    # the controller's vectors (the reference's top_feats) gathered at the detections
    controller_out = [d[f"top_feats_{p}"] for p in LEVELS]
    for i, x in enumerate(dets):
        gathered = gather_at_detections(controller_out, i, x["fpn_levels"], x["loc_inds"])
        assert gathered.shape == (len(x["scores"]), 169)
        for lvl, idx, vec in zip(x["fpn_levels"], x["loc_inds"], gathered):
            assert torch.equal(vec, d[f"top_feats_{LEVELS[lvl]}"][i].reshape(169, -1)[:, idx])


def test_detector_postprocess_matches_fixture_final_boxes(fixture):
    """Scaling to the output size, clipping and dropping empty boxes as the reference."""
    from detectron2.modeling.postprocessing import detector_postprocess
    from detectron2.structures import Boxes, Instances

    d = fixture("condinst", "inference_heads.pt")
    for i in range(2):
        sel = d["det_im_inds"] == i
        inst = Instances(tuple(d["image_sizes"][i]))
        inst.pred_boxes = Boxes(d["det_boxes"][sel].clone())
        inst.scores = d["det_scores"][sel]
        inst.pred_classes = d["det_classes"][sel]
        out = detector_postprocess(inst, *d["output_sizes"][i])
        assert len(out) == d[f"img{i}_num_final"]
        torch.testing.assert_close(out.pred_boxes.tensor, d[f"img{i}_final_boxes"], atol=1e-4, rtol=0)
        torch.testing.assert_close(out.scores, d[f"img{i}_final_scores"], atol=1e-6, rtol=0)
        assert torch.equal(out.pred_classes, d[f"img{i}_final_classes"])
