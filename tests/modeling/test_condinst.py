"""CondInst meta-architecture: parameter counts, training losses, inference masks."""
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

import condseg  # noqa: F401
from condseg.config import get_condseg_cfg
from condseg.layers import aligned_bilinear, dynamic_layer_shapes, dynamic_mask_heads, dynamic_mask_probs
from condseg.modeling.condinst.condinst import postprocess_masks, select_training_instances

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
LEVELS = ("p3", "p4", "p5", "p6", "p7")


@pytest.mark.parametrize("all_empty", [False, True])
def test_images_without_instances_train_as_negatives(condinst_cfg, gt_inputs, all_empty):
    """DATALOADER.FILTER_EMPTY_ANNOTATIONS False: an image with no instances (the mapper
    gives it no gt_masks field) is a negative, not an error."""
    torch.manual_seed(0)
    model = build_model(condinst_cfg())
    model.train()
    inputs = gt_inputs()
    empty = Instances((96, 160))
    empty.gt_boxes = Boxes(torch.zeros(0, 4))
    empty.gt_classes = torch.zeros(0, dtype=torch.int64)
    for k in range(2 if all_empty else 1):
        inputs[k]["instances"] = empty
    losses = model(inputs)
    assert all(torch.isfinite(v) for v in losses.values())
    if all_empty:
        assert losses["loss_mask"] == 0 and losses["loss_fcos_loc"] == 0
    else:
        assert 0 < losses["loss_mask"] <= 1
    sum(losses.values()).backward()


@pytest.mark.parametrize("polygons", [True, False])
def test_training_losses_are_finite_and_reach_every_parameter(condinst_cfg, gt_inputs, polygons):
    model = build_model(condinst_cfg())
    model.train()
    losses = model(gt_inputs(masks="polygons" if polygons else "bitmasks"))
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask"}
    total = sum(losses.values())
    assert torch.isfinite(total) and 0 < losses["loss_mask"] <= 1
    total.backward()
    assert not [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


def test_controller_size_is_derived_from_the_head_config(condinst_cfg):
    model = build_model(condinst_cfg("MODEL.CONDINST.MASK_HEAD.CHANNELS", "16"))
    assert model.controller.out_channels == 465  # fixtures: (16, 3, 8, rel) -> 465


def test_inference_gives_masks_at_the_requested_size(condinst_cfg, gt_inputs):
    model = build_model(condinst_cfg("MODEL.FCOS.INFERENCE_TH_TEST", "0.0"))
    model.eval()
    with torch.no_grad():
        out = model(gt_inputs(2))
    for o in out:
        inst = o["instances"]
        assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_masks"}
        assert inst.pred_masks.shape == (len(inst), 192, 320) and inst.pred_masks.dtype == torch.bool


def test_max_proposals_and_topk_are_exclusive(condinst_cfg):
    with pytest.raises(ValueError, match="TOPK_PROPOSALS_PER_IM"):
        build_model(condinst_cfg("MODEL.CONDINST.MAX_PROPOSALS", "10", "MODEL.CONDINST.TOPK_PROPOSALS_PER_IM", "10"))


def test_select_training_instances():
    p = Instances((0, 0))
    p.im_inds = torch.tensor([0, 0, 0, 1, 1, 1])
    p.gt_inds = torch.tensor([0, 0, 1, 2, 2, 2])
    p.logits_pred = torch.tensor([[0.0], [5.0], [1.0], [2.0], [3.0], [-1.0]])
    p.ctrness_pred = torch.zeros(6)
    assert len(select_training_instances(p, 4, -1)) == 4
    assert len(select_training_instances(p, 10, -1)) == 6
    kept = select_training_instances(p, -1, 2)  # 1 per GT in image 0 (2 GTs), 2 for image 1's GT
    assert sorted(kept.logits_pred[:, 0].tolist()) == [1.0, 2.0, 3.0, 5.0]


def test_inference_masks_match_fixture(fixture):
    """Mask heads on the reference's detections, then postprocess to output size."""
    d = fixture("condinst", "inference_heads.pt")
    locs = d["det_locations"]
    params = torch.stack([
        d[f"top_feats_{LEVELS[lvl]}"][im].reshape(169, -1)[:, idx]
        for lvl, im, idx in zip(d["det_fpn_levels"], d["det_im_inds"], d["det_loc_index_in_level"])
    ])
    soi = torch.tensor([64.0, 128, 256, 512, 1024])[d["det_fpn_levels"]]
    for impl in ("grouped_conv", "bmm"):
        low = dynamic_mask_heads(d["mask_feats"], params, d["det_im_inds"], locs, soi, dynamic_layer_shapes(8, 8, 3), 8, True, impl)
        global_masks = aligned_bilinear(low, 2).sigmoid()
        torch.testing.assert_close(global_masks, d["det_pred_global_masks"], atol=1e-5, rtol=0)
    fused = dynamic_mask_probs(d["mask_feats"], params, d["det_im_inds"], locs, soi, dynamic_layer_shapes(8, 8, 3))
    torch.testing.assert_close(fused, d["det_pred_global_masks"], atol=1e-5, rtol=0)
    for i in range(2):
        sel = d["det_im_inds"] == i
        masks = postprocess_masks(d["det_pred_global_masks"][sel][:3], d["padded_size"], d["image_sizes"][i], d["output_sizes"][i])
        expected = d[f"img{i}_final_pred_masks_first3"]
        assert (masks != expected).float().mean() <= 0.001


def test_r50_1x_config_matches_the_reference_model_and_settings(fixture):
    """Same parameter count as the reference CondInst R-50 (34,111,179) and the same
    effective hyper-parameters as its MS_R_50_1x config."""
    cfg = get_condseg_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "condinst_R50_1x.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    model = build_model(cfg)
    keys = fixture("condinst", "model_keys_MS_R_50_1x.json")
    assert sum(p.numel() for p in model.parameters()) == 34111179
    per_module = {
        "backbone.bottom_up": 23454912, "proposal_generator.head": 4920666,
        "mask_branch": 1477384, "controller": 389545,
    }
    for name, expected in per_module.items():
        assert sum(p.numel() for p in model.get_submodule(name).parameters()) == expected, name
    assert len(keys["state_dict"]) > 0

    ref = fixture("condinst", "config_defaults.json")["values"]
    # AdelaiDet-only input keys: its rotation/instance-crop augmentations, and HFLIP_TRAIN,
    # which detectron2's INPUT.RANDOM_FLIP (checked below) expresses
    not_ported = {"INPUT.CROP.CROP_INSTANCE", "INPUT.IS_ROTATE", "INPUT.HFLIP_TRAIN"}
    for key, value in ref.items():
        if key in not_ported:
            continue
        parts = key.split(".")
        if parts[0] in ("SOLVER", "INPUT") or parts[:2] in (["MODEL", "FCOS"], ["MODEL", "CONDINST"]):
            node = cfg
            for part in parts:
                node = node[part]
            node = list(node) if isinstance(node, tuple) else node
            assert node == value, key


def test_training_mask_loss_is_the_same_for_both_head_formulations(condinst_cfg, gt_inputs):
    """bmm trains through the fused, blocked loss; grouped_conv through the published
    computation: equal losses and gradients."""
    torch.manual_seed(0)
    state = build_model(condinst_cfg()).state_dict()
    grads = []
    for impl in ("grouped_conv", "bmm"):
        model = build_model(condinst_cfg("MODEL.CONDINST.MASK_HEAD.IMPL", impl))
        model.load_state_dict(state)
        model.train()
        torch.manual_seed(1)
        losses = model(gt_inputs(masks="bitmasks"))
        losses["loss_mask"].backward()
        grads.append((losses["loss_mask"].detach(), model.controller.weight.grad, model.mask_branch.predictor.weight.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_inference_is_the_same_for_both_head_formulations(condinst_cfg, gt_inputs):
    """bmm predicts through the fused, blocked probabilities; grouped_conv through the
    published computation: the same detections and masks."""
    torch.manual_seed(0)
    opts = ("MODEL.FCOS.INFERENCE_TH_TEST", "0.0")
    state = build_model(condinst_cfg(*opts)).state_dict()
    inputs = gt_inputs(2)
    outs = []
    for impl in ("grouped_conv", "bmm"):
        model = build_model(condinst_cfg("MODEL.CONDINST.MASK_HEAD.IMPL", impl, *opts))
        model.load_state_dict(state)
        model.eval()
        with torch.no_grad():
            outs.append([r["instances"] for r in model(inputs)])
    for a, b in zip(*outs):
        assert len(a) > 0 and len(a) == len(b)
        torch.testing.assert_close(a.scores, b.scores)
        inter = (a.pred_masks & b.pred_masks).sum((1, 2)).float()
        union = (a.pred_masks | b.pred_masks).sum((1, 2)).float()
        iou = torch.where(union > 0, inter / union.clamp(min=1), 1.0)  # both empty: equal
        assert iou.min() >= 0.999 and (union > 0).any()


def test_finer_pyramid_variant_trains_and_predicts_full_size_masks(quickstart_cfg, gt_inputs):
    """condinst_R18_p2_shapes.yaml: FCOS on P2-P6, mask branch from P2 (stride 4), masks
    at stride 2; narrowed like the other tests' models."""
    cfg = quickstart_cfg(
        "condinst_R18_p2_shapes.yaml", "MODEL.FCOS.NUM_CLASSES", "4", "MODEL.CONDINST.MASK_BRANCH.CHANNELS", "32",
        "MODEL.CONDINST.MASK_BRANCH.NUM_CONVS", "1", "MODEL.FCOS.INFERENCE_TH_TEST", "0.0",
    )
    model = build_model(cfg)
    assert model.mask_branch.out_stride == 4 and model.mask_out_stride == 2
    assert [s.stride for s in model.backbone.output_shape().values()] == [4, 8, 16, 32, 64]
    model.train()
    losses = model(gt_inputs())
    assert torch.isfinite(sum(losses.values())) and 0 < losses["loss_mask"] <= 1
    sum(losses.values()).backward()
    assert not [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.eval()
    with torch.no_grad():
        inst = model(gt_inputs(1))[0]["instances"]
    assert inst.pred_masks.shape == (len(inst), 192, 320)


@pytest.mark.parametrize("n", [0, 1, 7])
def test_masks_pasted_in_chunks_equal_the_masks_pasted_at_once(n):
    """postprocess_masks keeps one chunk of float masks at a time: any chunk size gives
    the same masks as one chunk of every instance."""
    torch.manual_seed(0)
    global_masks = torch.rand(n, 1, 25, 42)
    args = ((100, 168), (97, 161), (130, 211))  # padded, resized image, output (H, W)
    at_once = postprocess_masks(global_masks, *args, chunk_bytes=1 << 40)
    assert at_once.shape == (n, 130, 211) and at_once.dtype == torch.bool
    for chunk_bytes in (1, 4 * (100 * 168 + 130 * 211) * 3):  # one instance, three instances per chunk
        assert torch.equal(postprocess_masks(global_masks, *args, chunk_bytes=chunk_bytes), at_once)
    if n:
        assert 0 < at_once.float().mean() < 1


@pytest.mark.cuda
def test_trains_and_predicts_on_cuda_as_on_the_cpu(condinst_cfg, gt_inputs):
    torch.manual_seed(0)
    cpu = build_model(condinst_cfg("MODEL.FCOS.INFERENCE_TH_TEST", "0.0", "MODEL.DEVICE", "cpu"))
    cuda = build_model(condinst_cfg("MODEL.FCOS.INFERENCE_TH_TEST", "0.0", "MODEL.DEVICE", "cuda"))
    cuda.load_state_dict(cpu.state_dict())
    inputs = gt_inputs(2)
    cpu.train(), cuda.train()
    losses_cpu, losses_cuda = cpu(inputs), cuda(inputs)
    for k in losses_cpu:
        torch.testing.assert_close(losses_cuda[k].cpu(), losses_cpu[k], atol=1e-3, rtol=1e-3)
    sum(losses_cuda.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in cuda.parameters() if p.grad is not None)
    cpu.eval(), cuda.eval()
    image = gt_inputs(1)
    with torch.no_grad():
        a, b = cpu(image)[0]["instances"], cuda(image)[0]["instances"].to("cpu")
    assert len(a) == len(b) and b.pred_masks.shape == a.pred_masks.shape
