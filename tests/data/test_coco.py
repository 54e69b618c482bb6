"""condseg.data.coco: each real-world COCO json quirk is handled, and COCO evaluation works."""
import copy
import json
import logging
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import builders.quirky_coco as qc
from builders.logs import caplog_on
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_dict
from detectron2.structures import BoxMode

from condseg.data.coco import load_coco_instances, register_coco_instances
from condseg.data.coco.clean import clean_segmentation

LOGGER = "condseg.data.coco"
ANN_KEYS = {"bbox", "bbox_mode", "category_id", "segmentation", "iscrowd"}


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def dicts(quirky):
    return load_coco_instances(quirky["json"], quirky["root"])


@pytest.fixture
def coco_log(caplog):
    """caplog attached to condseg.data.coco directly (works even if a logger up the tree
    stops propagation)."""
    with caplog_on(caplog, LOGGER, logging.DEBUG, logger_level=logging.DEBUG):
        yield caplog


def _by_image(dataset_dicts):
    return {d["image_id"]: d for d in dataset_dicts}


def _raw_by_id(raw):
    return {a["id"]: a for a in raw["annotations"]}


def _dict_ann(raw, dataset_dicts, ann_id):
    """The dataset-dict annotation made from raw annotation ``ann_id`` (dicts keep the json's
    order within an image, minus the dropped annotations)."""
    ann = _raw_by_id(raw)[ann_id]
    kept = [a["id"] for a in raw["annotations"]
            if a["image_id"] == ann["image_id"] and a["id"] not in qc.DROPPED_ANN_IDS]
    annos = _by_image(dataset_dicts)[ann["image_id"]]["annotations"]
    assert len(annos) == len(kept)
    return annos[kept.index(ann_id)]


def _decode(segm, h, w):
    if isinstance(segm, dict):
        return mask_util.decode(segm).astype(bool)
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(segm, h, w))).astype(bool)


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)


# ------------------------------------------------------------------------- the fixture
def test_fixture_exhibits_every_quirk(quirky):
    raw = quirky["raw"]
    anns = _raw_by_id(raw)
    cat_ids = [c["id"] for c in raw["categories"]]
    assert cat_ids != sorted(cat_ids) and sorted(cat_ids) != list(range(1, len(cat_ids) + 1))
    assert qc.EMPTY_CATEGORY_ID not in {a["category_id"] for a in raw["annotations"]}
    assert any(isinstance(a["iscrowd"], bool) and a["iscrowd"] for a in raw["annotations"])
    assert any(isinstance(a["iscrowd"], bool) and not a["iscrowd"] for a in raw["annotations"])
    assert "keypoints" in anns[101] and "attributes" in anns[101]
    assert qc.EMPTY_IMAGE_ID not in {a["image_id"] for a in raw["annotations"]}
    assert isinstance(anns[102]["segmentation"]["counts"], str)
    assert isinstance(anns[103]["segmentation"]["counts"], list)
    assert "bbox" not in anns[103] and "area" not in anns[103]
    assert any(len(p) < 6 or len(p) % 2 for p in anns[201]["segmentation"])
    assert all(len(p) < 6 or len(p) % 2 for p in anns[203]["segmentation"])
    assert anns[204]["bbox"][2] == 0
    # a learnable dataset: 2-4 valid non-crowd objects per annotated image, 3 used classes
    for img in raw["images"]:
        n = sum(1 for a in raw["annotations"] if a["image_id"] == img["id"]
                and not a["iscrowd"] and a["id"] not in qc.DROPPED_ANN_IDS)
        assert n == 0 if img["id"] == qc.EMPTY_IMAGE_ID else 2 <= n <= 4
    assert len({a["category_id"] for a in raw["annotations"]}) == 3


def test_fixture_is_deterministic(tmp_path):
    j1, _ = qc.make_quirky_coco(tmp_path / "a")
    j2, _ = qc.make_quirky_coco(tmp_path / "b")
    assert open(j1).read() == open(j2).read()


# ------------------------------------------------------------------------------ quirks
def test_standard_dict_format(quirky, dicts):
    assert [d["image_id"] for d in dicts] == sorted(im["id"] for im in quirky["raw"]["images"])
    for d in dicts:
        assert set(d) == {"file_name", "height", "width", "image_id", "annotations"}
        assert os.path.isfile(d["file_name"]) and d["file_name"].startswith(quirky["root"])
        assert (d["height"], d["width"]) == (96, 128)
        for a in d["annotations"]:
            assert a["bbox_mode"] == BoxMode.XYWH_ABS and len(a["bbox"]) == 4


def test_noncontiguous_category_ids_mapped_to_contiguous(quirky, dicts):
    name = "test_coco_catmap"
    load_coco_instances(quirky["json"], quirky["root"], name)
    meta = MetadataCatalog.get(name)
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 42: 2, 99: 3}
    assert meta.thing_classes == ["circle", "square", "triangle", "hexagon"]
    raw = quirky["raw"]
    for a in raw["annotations"]:
        if a["id"] in qc.DROPPED_ANN_IDS:
            continue
        got = _dict_ann(raw, dicts, a["id"])["category_id"]
        assert got == meta.thing_dataset_id_to_contiguous_id[a["category_id"]]
    MetadataCatalog.remove(name)


def test_category_without_annotations_is_kept(quirky, dicts):
    name = "test_coco_emptycat"
    load_coco_instances(quirky["json"], quirky["root"], name)
    meta = MetadataCatalog.get(name)
    assert "hexagon" in meta.thing_classes and len(meta.thing_classes) == 4
    assert 3 not in {a["category_id"] for d in dicts for a in d["annotations"]}
    MetadataCatalog.remove(name)


def test_boolean_iscrowd_becomes_int(quirky, dicts):
    raw = quirky["raw"]
    for ann_id, expected in ((101, 0), (103, 0), (202, 1)):
        iscrowd = _dict_ann(raw, dicts, ann_id)["iscrowd"]
        assert type(iscrowd) is int and iscrowd == expected
    assert all(type(a["iscrowd"]) is int for d in dicts for a in d["annotations"])


def test_unused_fields_dropped_and_detectron2_mapper_accepts_dicts(quirky, dicts):
    for d in dicts:
        for a in d["annotations"]:
            assert set(a) == ANN_KEYS
    # detectron2's own mapper (flip included) runs over every image
    from detectron2.data import DatasetMapper
    from detectron2.data import transforms as T

    mapper = DatasetMapper(
        is_train=True,
        augmentations=[T.RandomFlip(prob=1.0)],
        image_format="BGR",
        use_instance_mask=True,
        instance_mask_format="bitmask",
        use_keypoint=True,  # would need keypoint_hflip_indices if keypoints were still there
    )
    for d in copy.deepcopy(dicts):
        out = mapper(d)
        inst = out["instances"]
        n = sum(1 for a in d["annotations"] if not a["iscrowd"])
        assert len(inst) == n
        if n:
            assert inst.gt_masks.tensor.shape[1:] == (96, 128)


def test_image_without_annotations_is_kept(dicts):
    d = _by_image(dicts)[qc.EMPTY_IMAGE_ID]
    assert d["annotations"] == []
    # ... and detectron2's FILTER_EMPTY_ANNOTATIONS is what drops it for training
    from detectron2.data.build import filter_images_with_only_crowd_annotations

    kept = filter_images_with_only_crowd_annotations(copy.deepcopy(dicts))
    assert qc.EMPTY_IMAGE_ID not in {x["image_id"] for x in kept}


@pytest.mark.parametrize("ann_id", [102, 103, 202])  # compressed, uncompressed, crowd uncompressed
def test_rle_masks_decode_to_the_drawn_mask(quirky, dicts, ann_id):
    truth = qc.load_truth_masks(quirky["dir"])
    segm = _dict_ann(quirky["raw"], dicts, ann_id)["segmentation"]
    assert isinstance(segm, dict) and isinstance(segm["counts"], str) and segm["size"] == [96, 128]
    np.testing.assert_array_equal(_decode(segm, 96, 128), truth[ann_id])


def test_polygon_masks_rasterise_to_the_drawn_mask(quirky, dicts):
    truth = qc.load_truth_masks(quirky["dir"])
    for ann_id in (101, 201, 301):
        segm = _dict_ann(quirky["raw"], dicts, ann_id)["segmentation"]
        assert isinstance(segm, list) and all(len(p) >= 6 and len(p) % 2 == 0 for p in segm)
        np.testing.assert_array_equal(_decode(segm, 96, 128), truth[ann_id])


def test_rle_bytes_str_and_list_counts_normalise_to_the_same_str_rle():
    mask = np.zeros((7, 9), np.uint8)
    mask[2:5, 3:8] = 1
    enc = mask_util.encode(np.asfortranarray(mask))
    flat = mask.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    forms = [
        {"size": [7, 9], "counts": enc["counts"]},  # bytes
        {"size": [7, 9], "counts": enc["counts"].decode()},  # str
        {"size": [7, 9], "counts": runs},  # uncompressed
    ]
    outs = [clean_segmentation(f, 7, 9)[0] for f in forms]
    for out in outs:
        assert out == {"size": [7, 9], "counts": enc["counts"].decode()}
        np.testing.assert_array_equal(mask_util.decode(out), mask)
    # an RLE of another size than its image is unusable
    assert clean_segmentation(forms[1], 9, 7)[0] is None


def test_degenerate_polygons_dropped_with_warning_naming_ids(quirky, coco_log):
    dd = load_coco_instances(quirky["json"], quirky["root"])
    raw = quirky["raw"]
    # ann 201: its two degenerate polygons go, its valid one stays
    segm = _dict_ann(raw, dd, 201)["segmentation"]
    assert segm == [_raw_by_id(raw)[201]["segmentation"][2]]
    warnings = [r.getMessage() for r in coco_log.records if r.levelno == logging.WARNING]
    w201 = [m for m in warnings if "annotation 201" in m]
    assert len(w201) == 1 and "image 2" in w201[0] and quirky["json"] in w201[0]
    assert "polygon 0" in w201[0] and "polygon 1" in w201[0]
    # ann 203: no polygon left -> whole annotation dropped, with a warning
    w203 = [m for m in warnings if "annotation 203" in m]
    assert len(w203) == 1 and "image 2" in w203[0] and "dropped" in w203[0]
    assert len(_by_image(dd)[2]["annotations"]) == 4  # 201, 202, 205, 206


def test_zero_width_bbox_dropped_with_warning(quirky, coco_log):
    dd = load_coco_instances(quirky["json"], quirky["root"])
    warnings = [r.getMessage() for r in coco_log.records if r.levelno == logging.WARNING]
    w = [m for m in warnings if "annotation 204" in m]
    assert len(w) == 1 and "image 2" in w[0] and "bbox" in w[0]
    boxes = [a["bbox"] for a in _by_image(dd)[2]["annotations"]]
    assert all(b[2] > 0 and b[3] > 0 for b in boxes)


def test_missing_bbox_computed_from_mask(quirky, dicts):
    truth = qc.load_truth_masks(quirky["dir"])
    bbox = _dict_ann(quirky["raw"], dicts, 103)["bbox"]
    expected = mask_util.toBbox(mask_util.encode(np.asfortranarray(truth[103].astype(np.uint8))))
    np.testing.assert_allclose(bbox, expected)


def test_one_line_summary_logged(quirky, coco_log):
    load_coco_instances(quirky["json"], quirky["root"])
    infos = [r.getMessage() for r in coco_log.records if r.levelno == logging.INFO]
    summary = [m for m in infos if m.startswith("Loaded COCO json")]
    assert len(summary) == 1 and "\n" not in summary[0]
    n_anns = len(quirky["raw"]["annotations"]) - len(qc.DROPPED_ANN_IDS)
    for part in ("6 images", f"{n_anns} annotations", "4 classes", "hexagon", "degenerate polygon"):
        assert part in summary[0]


def test_warnings_are_aggregated(tmp_path, coco_log):
    images = [{"id": i, "file_name": f"{i}.png", "height": 10, "width": 10} for i in range(1, 31)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "segmentation": [[1, 1, 2, 2]],
             "bbox": [1, 1, 1, 1]} for i in range(1, 31)]
    jf = _write_json(tmp_path / "many.json", {"images": images, "annotations": anns,
                                              "categories": [{"id": 1, "name": "x"}]})
    dd = load_coco_instances(jf, str(tmp_path))
    assert sum(len(d["annotations"]) for d in dd) == 0 and len(dd) == 30
    warnings = [r.getMessage() for r in coco_log.records if r.levelno == logging.WARNING]
    assert len(warnings) <= 12
    assert any("20 more" in m and "30 x annotation without valid segmentation" in m for m in warnings)


def test_missing_image_size_read_from_file_and_missing_ann_id_assigned(quirky, tmp_path):
    raw = copy.deepcopy(quirky["raw"])
    del raw["images"][0]["height"], raw["images"][0]["width"]
    del raw["annotations"][0]["id"]
    jf = _write_json(tmp_path / "a.json", raw)
    register_coco_instances("test_coco_sizes", jf, quirky["root"])
    try:
        dd = DatasetCatalog.get("test_coco_sizes")
        assert (dd[0]["height"], dd[0]["width"]) == (96, 128)
        assert sum(len(d["annotations"]) for d in dd) == len(raw["annotations"]) - len(qc.DROPPED_ANN_IDS)
        # what COCOEvaluator evaluates against: the dicts converted by detectron2
        coco = convert_to_coco_dict("test_coco_sizes")
        ids = [a["id"] for a in coco["annotations"]]
        assert len(set(ids)) == len(ids) and all(isinstance(i, int) for i in ids)
        assert [(im["height"], im["width"]) for im in coco["images"]] == [(96, 128)] * len(raw["images"])
    finally:
        DatasetCatalog.remove("test_coco_sizes")
        MetadataCatalog.remove("test_coco_sizes")


# ----------------------------------------------------------------------------- errors
def _mutated(quirky, tmp_path, fn, name="bad.json"):
    raw = copy.deepcopy(quirky["raw"])
    fn(raw)
    return _write_json(tmp_path / name, raw)


def test_unknown_category_id_is_a_clear_error(quirky, tmp_path):
    jf = _mutated(quirky, tmp_path, lambda r: r["annotations"][4].update(category_id=5))
    ann_id = quirky["raw"]["annotations"][4]["id"]
    with pytest.raises(ValueError) as e:
        load_coco_instances(jf, quirky["root"])
    msg = str(e.value)
    assert jf in msg and f"annotation {ann_id}" in msg and "category_id 5" in msg


def test_duplicate_image_id_is_a_clear_error(quirky, tmp_path):
    jf = _mutated(quirky, tmp_path, lambda r: r["images"].append(dict(r["images"][2])))
    with pytest.raises(ValueError, match="duplicate image id 3") as e:
        load_coco_instances(jf, quirky["root"])
    assert jf in str(e.value)


def test_duplicate_annotation_id_is_a_clear_error(quirky, tmp_path):
    jf = _mutated(quirky, tmp_path, lambda r: r["annotations"][5].update(id=101))
    with pytest.raises(ValueError, match="duplicate annotation id 101") as e:
        load_coco_instances(jf, quirky["root"])
    assert jf in str(e.value)


def test_missing_json_file(tmp_path):
    path = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_coco_instances(path, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nope.json"):
        register_coco_instances("test_coco_missing", path, str(tmp_path))
    assert "test_coco_missing" not in DatasetCatalog.list()


@pytest.mark.parametrize("missing", ["images", "annotations", "categories"])
def test_json_that_is_not_coco(quirky, tmp_path, missing):
    jf = _mutated(quirky, tmp_path, lambda r: r.pop(missing))
    with pytest.raises(ValueError, match=f"missing key.*{missing}") as e:
        load_coco_instances(jf, quirky["root"])
    assert jf in str(e.value)


def test_json_that_is_a_list_or_not_json(tmp_path):
    jf = _write_json(tmp_path / "results.json", [{"image_id": 1, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(ValueError, match="not a COCO instances json") as e:
        load_coco_instances(jf, str(tmp_path))
    assert jf in str(e.value)
    bad = tmp_path / "broken.json"
    bad.write_text("{\"images\": [")
    with pytest.raises(ValueError, match="not valid JSON") as e:
        load_coco_instances(str(bad), str(tmp_path))
    assert str(bad) in str(e.value)


def test_missing_image_root(quirky, tmp_path):
    root = str(tmp_path / "no_images_here")
    with pytest.raises(FileNotFoundError, match="no_images_here"):
        load_coco_instances(quirky["json"], root)
    with pytest.raises(FileNotFoundError, match="no_images_here"):
        register_coco_instances("test_coco_noroot", quirky["json"], root)


# ------------------------------------------------------------------ registration / eval
def _files_under(*dirs):
    return sorted(os.path.join(r, f) for d in dirs for r, _, fs in os.walk(d) for f in fs)


def test_register_metadata_and_evaluation_json(quirky, tmp_path):
    name = "test_coco_register"
    register_coco_instances(name, quirky["json"], quirky["root"])
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco" and meta.image_root == quirky["root"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 42: 2, 99: 3}
    # the raw json needs cleaning: no json_file, so the evaluator converts the dicts
    assert not hasattr(meta, "json_file")
    san = convert_to_coco_dict(name)
    assert sorted(c["id"] for c in san["categories"]) == sorted(c["id"] for c in quirky["raw"]["categories"])
    assert {im["id"] for im in san["images"]} == {im["id"] for im in quirky["raw"]["images"]}
    assert len(san["annotations"]) == len(quirky["raw"]["annotations"]) - len(qc.DROPPED_ANN_IDS)
    for a in san["annotations"]:
        assert type(a["iscrowd"]) is int and a["area"] > 0 and len(a["bbox"]) == 4
        assert a["category_id"] in {3, 7, 42}
        if isinstance(a["segmentation"], dict):
            assert isinstance(a["segmentation"]["counts"], str)
        else:
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in a["segmentation"])
    # lazily loaded dicts agree with what evaluation sees
    dd = DatasetCatalog.get(name)
    assert sum(len(d["annotations"]) for d in dd) == len(san["annotations"])
    # deterministic: registering again gives the same metadata
    register_coco_instances(name, quirky["json"], quirky["root"])
    again = MetadataCatalog.get(name)
    assert again.thing_dataset_id_to_contiguous_id == meta.thing_dataset_id_to_contiguous_id
    assert again.thing_classes == meta.thing_classes and not hasattr(again, "json_file")
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_nothing_is_written_beside_the_json_or_in_a_user_cache(tmp_path, monkeypatch):
    jf, root = qc.make_quirky_coco(tmp_path / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = _files_under(tmp_path / "data")
    name = "test_coco_nowrite"
    register_coco_instances(name, jf, root)
    try:
        res = _evaluate_ground_truth(name, tmp_path / "eval")
        assert res["bbox"]["AP"] > 99 and res["segm"]["AP"] > 99
        assert _files_under(tmp_path / "data") == before
        assert not os.path.exists(tmp_path / "xdg")
        # the converted json lives in the evaluator's output folder
        assert MetadataCatalog.get(name).json_file == str(tmp_path / "eval" / f"{name}_coco_format.json")
        assert os.path.isfile(MetadataCatalog.get(name).json_file)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_clean_json_is_used_as_is(tmp_path):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 5:20] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 150.0,
             "bbox": [5, 5, 15, 10], "segmentation": [[5, 5, 20, 5, 20, 15, 5, 15]]},
            {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 150.0,
             "bbox": [5, 5, 15, 10], "segmentation": {"size": [20, 30], "counts": rle["counts"].decode()},
             "keypoints": [1, 1, 2]},  # unused fields alone need no conversion
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    jf = _write_json(tmp_path / "clean.json", coco)
    register_coco_instances("test_coco_clean", jf, str(tmp_path))
    assert MetadataCatalog.get("test_coco_clean").json_file == os.path.abspath(jf)
    DatasetCatalog.remove("test_coco_clean")
    MetadataCatalog.remove("test_coco_clean")


def test_reregistering_a_name_replaces_it(quirky, tmp_path):
    name = "test_coco_rereg"
    register_coco_instances(name, quirky["json"], quirky["root"])
    other = copy.deepcopy(quirky["raw"])
    other["categories"] = [{"id": 3, "name": "round"}, {"id": 7, "name": "box"}, {"id": 42, "name": "tri"}]
    jf = _write_json(tmp_path / "other.json", other)
    register_coco_instances(name, jf, quirky["root"])
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["round", "box", "tri"] and not hasattr(meta, "json_file")
    assert len(DatasetCatalog.get(name)) == len(other["images"])
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _gt_predictions(dataset_dicts):
    from detectron2.structures import Boxes, Instances

    inputs, outputs = [], []
    for d in dataset_dicts:
        h, w = d["height"], d["width"]
        annos = [a for a in d["annotations"] if not a["iscrowd"]]
        inst = Instances((h, w))
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.ones(len(annos))
        inst.pred_classes = torch.tensor([a["category_id"] for a in annos], dtype=torch.int64)
        masks = [torch.from_numpy(_decode(a["segmentation"], h, w)) for a in annos]
        inst.pred_masks = torch.stack(masks) if masks else torch.zeros((0, h, w), dtype=torch.bool)
        inputs.append({"image_id": d["image_id"], "height": h, "width": w, "file_name": d["file_name"]})
        outputs.append({"instances": inst})
    return inputs, outputs


def _evaluate_ground_truth(name, output_dir):
    """COCOEvaluator's results for predictions that are the ground truth of ``name``."""
    from detectron2.evaluation import COCOEvaluator

    evaluator = COCOEvaluator(
        name, tasks=("bbox", "segm"), distributed=False, output_dir=str(output_dir), use_fast_impl=False
    )
    inputs, outputs = _gt_predictions(DatasetCatalog.get(name))
    evaluator.reset()
    evaluator.process(inputs, outputs)
    return evaluator.evaluate()


def test_coco_evaluator_gives_ap_100_on_ground_truth_predictions(quirky, tmp_path):
    name = "test_coco_eval"
    register_coco_instances(name, quirky["json"], quirky["root"])
    try:
        res = _evaluate_ground_truth(name, tmp_path)
        assert res["bbox"]["AP"] > 99, res["bbox"]
        assert res["segm"]["AP"] > 99, res["segm"]
        for cls in ("circle", "square", "triangle"):
            assert res["segm"][f"AP-{cls}"] > 99
        # a wrong id mapping would show: predictions are written with the original ids
        with open(os.path.join(str(tmp_path), "coco_instances_results.json")) as f:
            assert {r["category_id"] for r in json.load(f)} == {3, 7, 42}
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_raw_quirky_json_would_break_pycocotools_evaluation(quirky):
    """Why the evaluator converts the cleaned dicts instead: pycocotools reads a 4-number polygon
    as a box and crashes (and the raw file lacks ``area`` on ann 103 and holds the dropped
    annotations)."""
    from pycocotools.coco import COCO

    gt = COCO(quirky["json"])
    with pytest.raises(Exception):
        gt.annToRLE(gt.anns[201])


def test_other_real_world_forms_are_normalised(tmp_path, coco_log):
    """Flat and point-pair polygons, string iscrowd, ``ignore: 1``, malformed bbox, RLE of the
    wrong size, annotation on an unknown image."""
    sq = [2.0, 2.0, 12.0, 2.0, 12.0, 9.0, 2.0, 9.0]
    pairs = [[sq[i], sq[i + 1]] for i in range(0, 8, 2)]
    ann = dict(image_id=1, category_id=1, bbox=[2, 2, 10, 7], area=70.0)
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}],
        "annotations": [
            dict(ann, id=1, segmentation=sq, iscrowd="0"),  # flat polygon
            dict(ann, id=2, segmentation=[pairs], iscrowd=0),  # [[x, y], ...]
            dict(ann, id=3, segmentation=[sq], iscrowd=0, ignore=1),  # ignore region
            dict(ann, id=4, segmentation=[sq], iscrowd=0, bbox=[2, 2, "x", 7]),  # malformed bbox
            dict(ann, id=5, segmentation={"size": [30, 20], "counts": [600]}, iscrowd=0),  # wrong size
            dict(ann, id=6, image_id=77, segmentation=[sq], iscrowd=0),  # unknown image
        ],
        "categories": [{"id": 1, "name": "a"}],
    }
    jf = _write_json(tmp_path / "forms.json", coco)
    (d,) = load_coco_instances(jf, str(tmp_path))
    annos = d["annotations"]
    assert [a["segmentation"] for a in annos] == [[sq]] * 4
    assert [a["iscrowd"] for a in annos] == [0, 0, 1, 0]
    assert annos[3]["bbox"] == [2.0, 2.0, 10.0, 7.0]
    warnings = " | ".join(r.getMessage() for r in coco_log.records if r.levelno == logging.WARNING)
    assert "annotation 4" in warnings and "annotation 5" in warnings and "annotation 6" in warnings
    crowd2 = dict(coco, annotations=[dict(ann, id=1, segmentation=[sq], iscrowd=2)])
    bad = _write_json(tmp_path / "crowd.json", crowd2)
    with pytest.raises(ValueError, match="annotation 1.*iscrowd=2"):
        load_coco_instances(bad, str(tmp_path))


def test_box_only_annotations_are_kept_for_detection(tmp_path):
    """A detection-style json (bbox, no segmentation) loads with its boxes."""
    import cv2
    import numpy as np

    from condseg.data.coco import load_coco_instances

    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((40, 50, 3), np.uint8))
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 50}],
        "categories": [{"id": 5, "name": "thing"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 5, "bbox": [2, 3, 10, 12], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 5, "bbox": [20, 5, 8, 8], "segmentation": []},
            {"id": 12, "image_id": 1, "category_id": 5},  # nothing usable
        ],
    }
    path = tmp_path / "det.json"
    path.write_text(json.dumps(data))
    dicts = load_coco_instances(str(path), str(tmp_path / "img"))
    annos = dicts[0]["annotations"]
    assert [a["bbox"] for a in annos] == [[2.0, 3.0, 10.0, 12.0], [20.0, 5.0, 8.0, 8.0]]
    assert all("segmentation" not in a for a in annos)
