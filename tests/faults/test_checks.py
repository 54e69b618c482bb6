"""What is checked before anything trains, non-finite losses, images without instances,
and the command line."""
import json
import os

import pytest

pytestmark = pytest.mark.slow


def _error_lines(log):
    return [line for line in log.splitlines() if line.startswith("error: ")]


def test_more_categories_than_classes_is_one_message_naming_both_and_the_key(runs, tmp_path):
    code, log = runs.run(tmp_path / "out", "MODEL.FCOS.NUM_CLASSES", "3")
    assert code == 1 and "Traceback" not in log and "IndexError" not in log
    assert _error_lines(log) == [
        "error: dataset 'condseg_shapes_train' has 8 categories (ellipse, triangle, star, crescent, cross, ring, arrow, "
        "heart) but MODEL.FCOS.NUM_CLASSES is 3: set MODEL.FCOS.NUM_CLASSES 8"
    ]


def test_mask_rcnn_configs_are_checked_on_their_own_key(runs, tmp_path):
    from faultrun import ROOT

    config = os.path.join(ROOT, "configs", "quickstart", "mask_rcnn_R18_shapes.yaml")
    code, log = runs.run(tmp_path / "out", "MODEL.ROI_HEADS.NUM_CLASSES", "5", config=config)
    assert code == 1
    assert _error_lines(log)[0].endswith("but MODEL.ROI_HEADS.NUM_CLASSES is 5: set MODEL.ROI_HEADS.NUM_CLASSES 8")


def test_eval_only_with_weights_of_another_class_count_is_refused(runs, baseline, tmp_path):
    code, log = runs.run(tmp_path / "out", "MODEL.FCOS.NUM_CLASSES", "5", "MODEL.WEIGHTS", str(baseline / "model_final.pth"),
                         "DATASETS.TEST", "('condseg_shapes_val',)", args=("--eval-only",))
    assert code == 1 and "Evaluation results" not in log
    assert _error_lines(log) == [f"error: {baseline / 'model_final.pth'} was trained for 8 classes but MODEL.FCOS.NUM_CLASSES "
                                 "is 5: set MODEL.FCOS.NUM_CLASSES 8 (or use the config the weights came with)"]


def test_a_loss_that_becomes_nan_at_the_end_stops_once_without_evaluating(runs, tmp_path):
    out = tmp_path / "out"
    # the learning rate jumps a 1e8-fold at iteration 8 of 10: the last steps diverge
    code, log = runs.run(out, "SOLVER.MAX_ITER", "10", "SOLVER.STEPS", "(8,)", "SOLVER.GAMMA", "1e8",
                         "DATASETS.TEST", "('condseg_shapes_val',)", "DATALOADER.NUM_WORKERS", "0")
    assert code == 1
    errors = _error_lines(log)
    assert len(errors) == 1 and errors[0].startswith("error: the loss became infinite or NaN at iteration "), log[-3000:]
    assert "loss_mask" in errors[0] and "FloatingPointError" not in log and "Traceback" not in log
    assert "the final evaluation is skipped" in log and "Evaluation results" not in log
    assert sorted(p.name for p in out.glob("model_*.pth")) == ["model_0000004.pth"]  # the last good one, nothing after


def test_images_without_instances_train_condinst(runs, tmp_path):
    """DATALOADER.FILTER_EMPTY_ANNOTATIONS False on a COCO json with empty images."""
    from builders.quirky_coco import make_quirky_coco

    json_file, image_root = make_quirky_coco(str(tmp_path / "quirky"))
    with open(json_file) as f:
        data = json.load(f)
    annotated = {a["image_id"] for a in data["annotations"]}
    assert any(im["id"] not in annotated for im in data["images"])  # the json has images without instances
    code, log = runs.run(tmp_path / "out", "DATASETS.COCO", f"[['quirky', '{json_file}', '{image_root}']]",
                         "DATASETS.TRAIN", "('quirky',)", "MODEL.FCOS.NUM_CLASSES", str(len(data["categories"])),
                         "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "False", "SOLVER.MAX_ITER", "6", "DATALOADER.NUM_WORKERS", "0",
                         "SOLVER.STEPS", "(5,)")
    assert code == 0, log[-3000:]
    assert "needs gt_masks" not in log


def test_options_may_come_after_the_overrides(runs, baseline, tmp_path):
    out = tmp_path / "out"
    code, log = runs.run(out, "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "DATALOADER.NUM_WORKERS", "0")
    assert code == 0, log[-3000:]
    code, log = runs.run(out, "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(1,)", "DATALOADER.NUM_WORKERS", "0", "--resume")
    assert code == 0, log[-3000:]
    assert "Starting training from iteration 2" in log
