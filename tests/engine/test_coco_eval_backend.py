"""TEST.COCO_EVAL_BACKEND: faster_coco_eval's results equal pycocotools' through the real
SkippingCOCOEvaluator, on the shapes dataset and the quirky COCO json (crowd, an empty
image, non-contiguous and unannotated categories); bad values and a missing package."""
import math
import os
import sys

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.structures import Boxes, Instances

from condseg.benchmark.coco_eval import detections_for
from condseg.config import get_condseg_cfg
from condseg.data.coco import register_coco_instances
from condseg.data.shapes import generate_shapes_dataset
from condseg.engine.evaluation import COCO_EVAL_BACKENDS, FASTER_COCO_EVAL, SkippingCOCOEvaluator, cocoeval_class
from condseg.engine.trainer import Trainer

SUMMARY = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """name -> detections per image of the two datasets, registered by condseg's COCO loader."""
    from builders.quirky_coco import make_quirky_coco

    root = tmp_path_factory.mktemp("coco_eval_backend")
    shapes = generate_shapes_dataset("val", 4, 256, 384, seed=1, root=str(root), num_workers=1)
    register_coco_instances("cocoeval_shapes", shapes, shapes.replace("annotations.json", "images"))
    register_coco_instances("cocoeval_quirky", *make_quirky_coco(root / "quirky", size=(320, 480)))
    return {"cocoeval_shapes": 40, "cocoeval_quirky": 30}


def _evaluator(name, backend, out, max_dets=100):
    return SkippingCOCOEvaluator(name, tasks=("bbox", "segm"), output_dir=str(out), distributed=False,
                                 use_fast_impl=False, max_dets_per_image=max_dets, allow_cached_coco=False,
                                 coco_eval_backend=backend)


def _model_outputs(evaluator, per_image, shuffle_scores=False):
    """(inputs, outputs) pairs, one per image, of jittered ground truth (misses, wrong classes,
    duplicates, false positives) as a model's Instances (contiguous classes, bool masks);
    ``shuffle_scores``: each image's scores permuted, so that true positives rank anywhere."""
    coco_gt = evaluator._coco_api
    to_contiguous = evaluator._metadata.thing_dataset_id_to_contiguous_id
    detections = detections_for(coco_gt, seed=0, num=per_image)
    rng = np.random.default_rng(0)
    pairs = []
    for image_id in sorted(coco_gt.getImgIds()):
        h, w = coco_gt.imgs[image_id]["height"], coco_gt.imgs[image_id]["width"]
        dets = [d for d in detections if d["image_id"] == image_id]
        inst = Instances((h, w))
        xywh = torch.tensor([d["bbox"] for d in dets], dtype=torch.float32).reshape(-1, 4)
        inst.pred_boxes = Boxes(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1))
        inst.scores = torch.tensor([d["score"] for d in dets])
        if shuffle_scores:
            inst.scores = inst.scores[torch.from_numpy(rng.permutation(len(dets)))]
        inst.pred_classes = torch.tensor([to_contiguous[d["category_id"]] for d in dets])
        inst.pred_masks = torch.from_numpy(np.stack([mask_util.decode(d["segmentation"]) for d in dets]).astype(bool))
        pairs.append(([{"image_id": image_id, "height": h, "width": w}], [{"instances": inst}]))
    return pairs


def _results(name, backend, pairs, out, max_dets=100, left_out=()):
    """The results dict of ``pairs`` evaluated by ``backend``; the images ``left_out`` (ids)
    as unreadable ones are (condseg.engine.evaluation.SkippingLoader)."""
    evaluator = _evaluator(name, backend, out / backend, max_dets)
    evaluator.reset()
    for inputs, outputs in pairs:
        if inputs[0]["image_id"] in left_out:
            evaluator.left_out.append((inputs[0]["image_id"], f"{inputs[0]['image_id']}.png"))
        else:
            evaluator.process(inputs, outputs)
    return evaluator.evaluate()


def _differences(ours, ref, tol=1e-4):
    """The numbers of two results dicts that differ by more than ``tol`` (NaN only equals NaN)."""
    bad = []
    for task in ref:
        assert set(ours[task]) == set(ref[task]), task
        for key, r in ref[task].items():
            o = ours[task][key]
            if (math.isnan(r) != math.isnan(o)) or (not math.isnan(r) and abs(o - r) > tol):
                bad.append(f"{task}/{key}: faster_coco_eval {o} != pycocotools {r}")
    return bad


@pytest.mark.parametrize("name,max_dets", [("cocoeval_shapes", 100), ("cocoeval_quirky", 100),
                                           ("cocoeval_quirky", 10)])
def test_faster_coco_eval_gives_every_number_of_pycocotools(datasets, name, max_dets, tmp_path):
    """Every AP of the results (bbox and segm: the 6 summary APs and each category's) to 1e-4
    AP points, from the same model outputs through two evaluators; the AP is neither 0 nor
    100, and the quirky json's unannotated category has no AP under either backend.
    ``max_dets`` 10 (TEST.DETECTIONS_PER_IMAGE), with shuffled scores: fewer than the
    detections per image and category, so the limit changes the AP (detectron2 evaluates
    with its own pycocotools subclass then)."""
    probe = _evaluator(name, "pycocotools", tmp_path / "probe", max_dets)
    pairs = _model_outputs(probe, datasets[name], shuffle_scores=max_dets < 100)
    ref = _results(name, "pycocotools", pairs, tmp_path, max_dets)
    ours = _results(name, "faster_coco_eval", pairs, tmp_path, max_dets)
    if max_dets < 100:
        assert _results(name, "pycocotools", pairs, tmp_path / "100")["segm"]["AP"] != ref["segm"]["AP"]
    assert set(ref) == {"bbox", "segm"}
    for task in ref:
        assert 5 < ref[task]["AP"] < 95, (task, ref[task])
        assert all(k in ref[task] for k in SUMMARY)
        assert sum(not math.isnan(v) for k, v in ref[task].items() if k.startswith("AP-")) >= 3
    if name == "cocoeval_quirky":
        assert math.isnan(ref["segm"]["AP-hexagon"]) and math.isnan(ours["segm"]["AP-hexagon"])
    assert not _differences(ours, ref), "\n".join(_differences(ours, ref))


def test_images_left_out_are_left_out_by_both_backends(datasets, tmp_path):
    """Unreadable images (their ground truth too) are out of both evaluations, to the same AP."""
    probe = _evaluator("cocoeval_quirky", "pycocotools", tmp_path / "probe")
    pairs = _model_outputs(probe, datasets["cocoeval_quirky"])
    ref = _results("cocoeval_quirky", "pycocotools", pairs, tmp_path / "out", left_out={1, 2})
    ours = _results("cocoeval_quirky", "faster_coco_eval", pairs, tmp_path / "out", left_out={1, 2})
    assert ref.pop("images_left_out") == ours.pop("images_left_out") == {"count": 2}
    assert ref["segm"]["AP"] != _results("cocoeval_quirky", "pycocotools", pairs, tmp_path / "all")["segm"]["AP"]
    assert not _differences(ours, ref), "\n".join(_differences(ours, ref))


def test_backends_see_different_detections_differently(datasets, tmp_path):
    """The comparison above can fail: fewer detections give another AP under both backends."""
    probe = _evaluator("cocoeval_quirky", "pycocotools", tmp_path / "probe")
    pairs = _model_outputs(probe, datasets["cocoeval_quirky"])
    fewer = [(i, [{"instances": o[0]["instances"][:2]}]) for i, o in pairs]
    ref = _results("cocoeval_quirky", "pycocotools", pairs, tmp_path / "all")
    ours = _results("cocoeval_quirky", "faster_coco_eval", fewer, tmp_path / "fewer")
    assert any(d.startswith("segm/AP:") for d in _differences(ours, ref))


def test_build_evaluator_reads_the_key(datasets, tmp_path):
    cfg = get_condseg_cfg()
    assert cfg.TEST.COCO_EVAL_BACKEND == "pycocotools"
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path), "MODEL.MASK_ON", "True",
                         "TEST.COCO_EVAL_BACKEND", "faster_coco_eval"])
    from faster_coco_eval import COCOeval_faster

    assert Trainer.build_evaluator(cfg, "cocoeval_quirky")._cocoeval_fn is COCOeval_faster
    cfg.TEST.COCO_EVAL_BACKEND = "pycocotools"
    assert Trainer.build_evaluator(cfg, "cocoeval_quirky")._cocoeval_fn is None  # detectron2's own evaluation


def test_a_bad_value_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match=r"TEST.COCO_EVAL_BACKEND must be one of \('pycocotools', "
                                         r"'faster_coco_eval'\), got 'faster'"):
        cocoeval_class("faster")
    assert COCO_EVAL_BACKENDS == ("pycocotools", "faster_coco_eval")


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install faster-coco-eval==\d+\.\d+\.\d+.*TEST.COCO_EVAL_BACKEND "
                                          r"pycocotools"):
        cocoeval_class("faster_coco_eval")
    assert cocoeval_class("pycocotools").__module__ == "pycocotools.cocoeval"
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "requirements.txt")) as f:
        assert FASTER_COCO_EVAL in f.read().split("\n")  # the hint installs the pinned version
