"""FCOS as a detectron2 model: built from the config, trains, and predicts Instances."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

import condseg  # noqa: F401

def test_backbone_gives_p3_to_p7_with_p6_from_p5(fcos_cfg):
    model = build_model(fcos_cfg())
    shapes = model.backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
    assert model.backbone.top_block.in_feature == "p5"
    feats = model.backbone(torch.rand(1, 3, 96, 128))
    assert feats["p6"].shape[-2:] == (2, 2) and feats["p7"].shape[-2:] == (1, 1)


def test_head_initialisation_follows_prior_prob(fcos_cfg):
    model = build_model(fcos_cfg())
    head = model.proposal_generator.head
    expected = -torch.log(torch.tensor((1 - 0.01) / 0.01))
    torch.testing.assert_close(head.cls_logits.bias, expected.expand(4))
    assert torch.all(head.bbox_pred.bias == 0) and len(head.scales) == 5


def test_training_step_gives_finite_losses_and_gradients_everywhere(fcos_cfg, gt_inputs):
    model = build_model(fcos_cfg())
    model.train()
    losses = model(gt_inputs(w=128, masks=None))
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad


def test_training_on_image_without_gt(fcos_cfg, gt_inputs):
    model = build_model(fcos_cfg())
    batch = gt_inputs(1, 96, 160, masks=None)  # P7 of 1x2: GroupNorm needs >1 value per group at batch 1
    empty = Instances((96, 160))
    empty.gt_boxes = Boxes(torch.zeros(0, 4))
    empty.gt_classes = torch.zeros(0, dtype=torch.int64)
    batch[0]["instances"] = empty
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())


def test_inference_returns_instances_at_requested_size(fcos_cfg, gt_inputs):
    model = build_model(fcos_cfg("MODEL.FCOS.INFERENCE_TH_TEST", "0.0", "MODEL.FCOS.THRESH_WITH_CTR", "False"))
    model.eval()
    with torch.no_grad():
        out = model(gt_inputs(2, w=128, masks=None))
    for o in out:
        inst = o["instances"]
        assert inst.image_size == (192, 256)
        assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes"}
        assert 0 < len(inst) <= 100
        b = inst.pred_boxes.tensor
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 256).all() and (b[:, 3] <= 192).all()
        assert torch.all(inst.scores[:-1] >= inst.scores[1:])


def test_misconfigured_strides_name_the_key(fcos_cfg):
    with pytest.raises(ValueError, match="MODEL.FCOS.FPN_STRIDES"):
        build_model(fcos_cfg("MODEL.FCOS.FPN_STRIDES", "[8, 16, 32, 64, 64]"))
