"""tools/train_net.py end to end on tiny generated data: training, evaluation, DDP."""
import json
import math
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart", "fcos_R18_shapes.yaml")
CONDINST_QUICKSTART = os.path.join(ROOT, "configs", "quickstart", "condinst_R18_shapes.yaml")
MASK_RCNN_QUICKSTART = os.path.join(ROOT, "configs", "quickstart", "mask_rcnn_R18_shapes.yaml")
TINY_BACKBONE = ["MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "MODEL.RESNETS.RES2_OUT_CHANNELS", "16"]
TINY_DATA = [
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128",
    "DATASETS.SHAPES.NUM_TRAIN", "16", "DATASETS.SHAPES.NUM_VAL", "6",
    "DATASETS.SHAPES.MIN_SIZE", "96", "DATASETS.SHAPES.MAX_SIZE", "128",
    "DATALOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_ITERS", "5", "SOLVER.CHECKPOINT_PERIOD", "100000",
]
TINY = [
    *TINY_BACKBONE,
    # 64 channels = 2 per GroupNorm group: GN needs > 1 value per group even on a 1x1 P7
    "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.FCOS.NUM_CLS_CONVS", "1", "MODEL.FCOS.NUM_BOX_CONVS", "1",
    *TINY_DATA,
    # an untrained model may score below the default threshold: keep every candidate
    "MODEL.FCOS.INFERENCE_TH_TEST", "0.0",
]


def run_train_net(tmp_path, *args, timeout=600):
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"train_net failed ({proc.returncode}):\n{log[-6000:]}"
    return log


def read_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_tiny_training_loss_decreases_and_evaluation_reports_ap(tmp_path):
    out = tmp_path / "out"
    log = run_train_net(
        tmp_path, "--config-file", QUICKSTART, *TINY,
        "SOLVER.IMS_PER_BATCH", "4", "SOLVER.BASE_LR", "0.01", "SOLVER.MAX_ITER", "60",
        "SOLVER.STEPS", "(50,)", "OUTPUT_DIR", str(out),
    )
    metrics = read_metrics(out)
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert len(losses) >= 3 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0], losses
    final = metrics[-1]
    for key in ("bbox/AP", "bbox/AP50", "bbox/APs", "bbox/APm", "bbox/APl"):
        assert key in final, sorted(final)
    assert 0.0 <= final["bbox/AP"] <= 100.0
    assert "Evaluation results for bbox" in log and "copypaste: AP,AP50,AP75,APs,APm,APl" in log  # AP table
    assert "condseg_shapes_val bbox: AP" in log and "Outputs (checkpoints" in log  # closing summary
    assert (out / "model_final.pth").exists()
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out))


@pytest.mark.slow
def test_condinst_trains_and_reports_segm_and_bbox_ap(tmp_path):
    out = tmp_path / "out"
    log = run_train_net(
        tmp_path, "--config-file", CONDINST_QUICKSTART, *TINY, "MODEL.CONDINST.MASK_BRANCH.CHANNELS", "16",
        "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "30", "SOLVER.STEPS", "(25,)", "OUTPUT_DIR", str(out),
    )
    metrics = read_metrics(out)
    masks = [m["loss_mask"] for m in metrics if "loss_mask" in m]
    assert masks and all(0 <= x <= 1 for x in masks)
    final = metrics[-1]
    assert "segm/AP" in final and "bbox/AP" in final, sorted(final)
    assert "condseg_shapes_val segm: AP" in log and "condseg_shapes_val bbox: AP" in log


@pytest.mark.slow
def test_mask_rcnn_baseline_trains_through_the_same_cli(tmp_path):
    out = tmp_path / "out"
    log = run_train_net(
        tmp_path, "--config-file", MASK_RCNN_QUICKSTART, *TINY_BACKBONE, *TINY_DATA,
        "MODEL.RPN.POST_NMS_TOPK_TEST", "100", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "4",
        "OUTPUT_DIR", str(out),
    )
    assert "condseg_shapes_val segm: AP" in log and "condseg_shapes_val bbox: AP" in log


@pytest.mark.slow
def test_eval_only_reloads_weights(tmp_path):
    out = tmp_path / "out"
    run_train_net(tmp_path, "--config-file", QUICKSTART, *TINY, "SOLVER.IMS_PER_BATCH", "2",
                  "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(out))
    log = run_train_net(tmp_path, "--config-file", QUICKSTART, "--eval-only", *TINY,
                        "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(out))
    assert "Evaluation results for bbox" in log


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    out = tmp_path / "out"
    log = run_train_net(
        tmp_path, "--config-file", QUICKSTART, "--num-gpus", "2", "--dist-url", f"tcp://127.0.0.1:{free_port()}",
        *TINY, "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "6", "OUTPUT_DIR", str(out),
    )
    assert "World size: 2" in log
    assert "DistributedDataParallel" in log  # the model printed by the trainer is wrapped
    final = read_metrics(out)[-1]
    assert "bbox/AP" in final


@pytest.mark.slow
def test_quirky_coco_json_trains_and_evaluates_from_the_command_line(tmp_path):
    from builders.quirky_coco import make_quirky_coco

    json_file, image_root = make_quirky_coco(str(tmp_path / "quirky"))
    with open(json_file) as f:
        num_classes = len(json.load(f)["categories"])
    out = tmp_path / "out"
    log = run_train_net(
        tmp_path, "--config-file", QUICKSTART, *TINY,
        "DATASETS.COCO", f"[['quirky', '{json_file}', '{image_root}']]",
        "DATASETS.TRAIN", "('quirky',)", "DATASETS.TEST", "('quirky',)",
        "MODEL.FCOS.NUM_CLASSES", str(num_classes),
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", str(out),
    )
    assert "Evaluation results for bbox" in log
    assert "bbox/AP" in read_metrics(out)[-1]


ODCONV_COCO = os.path.join(ROOT, "configs", "condinst_odconv.yaml")


def test_coco_config_without_coco_fails_naming_the_missing_paths(tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "nowhere"), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", ODCONV_COCO]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert str(tmp_path / "nowhere" / "coco" / "annotations" / "instances_train2017.json") in proc.stderr
    assert "MODEL.WEIGHTS: checkpoints/od_resnet50_4x_d2.pth does not exist" in proc.stderr


def _fake_coco(root, num_images=4, size=(128, 160)):
    """A few images with COCO's 80 categories under ``root/coco``, laid out as COCO 2017."""
    import cv2
    import numpy as np
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    categories = [{"id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES if c["isthing"]]
    h, w = size
    for split in ("train2017", "val2017"):
        os.makedirs(os.path.join(root, "coco", split), exist_ok=True)
        images, annotations = [], []
        for i in range(num_images):
            image = np.full((h, w, 3), 40, np.uint8)
            x0, y0, bw, bh = 10 + 20 * i, 20 + 10 * i, 50, 40
            image[y0 : y0 + bh, x0 : x0 + bw] = (200, 80, 30)
            name = f"{i:012d}.jpg"
            cv2.imwrite(os.path.join(root, "coco", split, name), image)
            images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
            poly = [x0, y0, x0 + bw, y0, x0 + bw, y0 + bh, x0, y0 + bh]
            annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "area": bw * bh,
                                "bbox": [x0, y0, bw, bh], "segmentation": [poly]})
        os.makedirs(os.path.join(root, "coco", "annotations"), exist_ok=True)
        with open(os.path.join(root, "coco", "annotations", f"instances_{split}.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


@pytest.mark.slow
def test_odconv_coco_config_builds_and_trains_on_coco(tmp_path):
    """configs/condinst_odconv.yaml as shipped (R-50, ODConv 4x on res2-res5) on a stand-in COCO
    tree: the model builds and training steps run; only sizes and the budget are overridden."""
    _fake_coco(str(tmp_path / "datasets"))
    out = tmp_path / "out"
    log = run_train_net(
        tmp_path, "--config-file", ODCONV_COCO, "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "100000",
        "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160", "INPUT.MIN_SIZE_TEST", "128",
        "INPUT.MAX_SIZE_TEST", "160", "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out),
    )
    assert "ODConv2d" in log  # the printed model
    metrics = read_metrics(out)
    assert metrics and all(math.isfinite(m["total_loss"]) for m in metrics if "total_loss" in m)
