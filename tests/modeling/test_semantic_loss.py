"""The auxiliary semantic loss of the CondInst mask branch (MASK_BRANCH.SEMANTIC_LOSS_ON)."""
import torch
from detectron2.modeling import build_model

from condseg.layers import sigmoid_focal_loss
from condseg.modeling.condinst.mask_branch import semantic_loss, semantic_targets



def test_semantic_targets_take_the_smallest_covering_mask_at_cell_centres():
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, :, :12] = True  # large, class 2
    masks[1, 4:12, 4:12] = True  # small, class 0, inside the large one
    out = semantic_targets(masks, torch.tensor([2, 0]), stride=4)  # samples rows/cols 2, 6, 10, 14
    expected = torch.tensor([
        [3, 3, 3, 0],
        [3, 1, 1, 0],
        [3, 1, 1, 0],
        [3, 3, 3, 0],
    ])
    assert torch.equal(out, expected)


def test_semantic_targets_without_gts_are_background():
    out = semantic_targets(torch.zeros(0, 8, 8, dtype=torch.bool), torch.zeros(0, dtype=torch.int64), 4)
    assert out.shape == (2, 2) and not out.any()


def test_semantic_loss_is_focal_loss_over_one_hot_classes_per_foreground_pixel():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    targets = torch.randint(0, 4, (2, 4, 6))  # wider than the logits: cropped
    one_hot = torch.stack([(targets[:, :, :5] == c + 1) for c in range(3)], 1).float()
    expected = sigmoid_focal_loss(logits, one_hot, 0.25, 2.0).sum() / one_hot.sum()
    assert torch.allclose(semantic_loss(logits, targets, 0.25, 2.0), expected)
    # no foreground at all: divided by 1, not 0
    zero = torch.zeros(2, 4, 5, dtype=torch.int64)
    assert torch.isfinite(semantic_loss(logits, zero, 0.25, 2.0))


def test_semantic_loss_trains_the_semantic_head_and_is_off_by_default(condinst_cfg, gt_inputs):
    assert not hasattr(build_model(condinst_cfg()).mask_branch, "seg_head")
    model = build_model(condinst_cfg("MODEL.CONDINST.MASK_BRANCH.SEMANTIC_LOSS_ON", "True"))
    assert model.mask_branch.logits.out_channels == 4
    model.train()
    losses = model(gt_inputs())
    assert "loss_sem" in losses and torch.isfinite(losses["loss_sem"]) and losses["loss_sem"] > 0
    sum(losses.values()).backward()
    assert model.mask_branch.logits.weight.grad.abs().sum() > 0
    assert model.mask_branch.seg_head[0][0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(gt_inputs(1))
    assert out[0]["instances"].has("pred_masks")
