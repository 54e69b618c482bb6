"""detectron2's Mask R-CNN on condseg's slim ResNet-FPN: the quickstart's equal-budget baseline."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage


@pytest.fixture
def mask_rcnn_cfg(quickstart_cfg):
    return lambda *opts: quickstart_cfg("mask_rcnn_R18_shapes.yaml", *opts)


def test_backbone_is_detectrons_p2_to_p6_pyramid_on_a_slim_resnet(mask_rcnn_cfg):
    backbone = build_model(mask_rcnn_cfg()).backbone
    shapes = backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    assert backbone.bottom_up.stem.conv1.out_channels == 16


def test_mask_rcnn_trains_on_condseg_data_and_predicts_masks(gt_inputs, mask_rcnn_cfg):
    model = build_model(mask_rcnn_cfg())
    model.train()
    with EventStorage(0):
        losses = model(gt_inputs(masks="bitmasks"))
    assert {"loss_mask", "loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model(gt_inputs(1))
    assert out[0]["instances"].has("pred_masks")
