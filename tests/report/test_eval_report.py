"""tools/eval_report.py: the report from a saved results json."""
import json

import pytest
from builders.tools import load_tool


@pytest.fixture(scope="module")
def tool():
    return load_tool("eval_report")


def test_report_from_a_results_json_and_a_gt_json(tool, synthetic, tmp_path, capsys):
    out = tmp_path / "report"
    code = tool.main(["--results", synthetic["results_json"], "--gt-json", synthetic["json"],
                      "--image-root", synthetic["image_root"], "--output", str(out),
                      "TEST.REPORT.GALLERY_IMAGES", "1", "TEST.REPORT.IOU", "0.6"])
    assert code == 0
    assert f"Evaluation report of {synthetic['json']}: {out / 'index.html'}" in capsys.readouterr().out
    page = (out / "index.html").read_text()
    assert "IoU &ge; 0.6" in page and page.count('src="gallery/') == 2 * 2
    for name in ("bbox_confusion.png", "segm_errors.png", "segm_per_category.csv"):
        assert (out / name).stat().st_size > 0


def test_report_of_a_registered_dataset_lands_beside_the_results(tool, tmp_path, monkeypatch, capsys):
    from pycocotools.coco import COCO

    from synthetic_detections import synthetic_results

    from condseg.data.shapes import generate_shapes_dataset

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    gt = generate_shapes_dataset("val", 2, 96, 128, seed=1, num_workers=1)
    results = tmp_path / "eval" / "coco_instances_results.json"
    results.parent.mkdir()
    results.write_text(json.dumps(synthetic_results(COCO(gt))))
    opts = ["DATASETS.SHAPES.NUM_VAL", "2", "DATASETS.SHAPES.MIN_SIZE", "96", "DATASETS.SHAPES.MAX_SIZE", "128",
            "TEST.REPORT.GALLERY_IMAGES", "1"]
    assert tool.main(["--results", str(results), "--dataset", "condseg_shapes_val", *opts]) == 0
    assert (tmp_path / "eval" / "report" / "index.html").exists()
    assert "Evaluation report of condseg_shapes_val" in capsys.readouterr().out


def test_errors_name_the_file_and_the_id(tool, synthetic, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{**synthetic["results"][0], "category_id": 77}]))
    assert tool.main(["--results", str(bad), "--gt-json", synthetic["json"], "--output", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "category id 77" in err
    missing = tmp_path / "nothing.json"
    assert tool.main(["--results", str(missing), "--gt-json", synthetic["json"]]) == 1
    assert f"results file {missing} does not exist" in capsys.readouterr().err
