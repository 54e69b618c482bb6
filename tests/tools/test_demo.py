"""tools/demo.py end to end on a tiny model: the rendered video and its json agree with
each other and with the model; image folders; every bad input gets a clear message."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from condseg import Predictor
from condseg.data import SHAPES_CLASSES
from condseg.inference import predictor as predictor_module
from condseg.inference.render import color_of, draw_instances, instance_labels
from condseg.inference.results import decode_segmentation
from builders.classes import QUIRKY_CLASSES
from builders.videos import corrupt_mjpeg_frame, shapes_video
from builders.tools import load_tool

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


demo = load_tool("demo")


def _run(tiny_model, *args):
    config, weights = tiny_model
    return demo.main(["--config-file", config, "--confidence-threshold", "0", "--no-progress", *args,
                      "--opts", "MODEL.WEIGHTS", weights])


def _decode_all(path):
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    fps = cap.get(cv2.CAP_PROP_FPS)
    return frames, fps


@pytest.fixture(scope="module")
def video_run(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("demo_video")
    src = shapes_video(str(d / "moving.mp4"), frames=16, width=160, height=120, fps=12.0)
    rc = _run(tiny_model, "--video-input", src, "--output", str(d / "out.mp4"), "--json", str(d / "out.json"),
              "--batch-size", "2")
    with open(d / "out.json") as f:
        return rc, src, str(d / "out.mp4"), json.load(f)


def test_video_output_has_the_inputs_frames_size_and_rate(video_run):
    rc, src, out, data = video_run
    assert rc == 0
    frames, fps = _decode_all(out)
    assert len(frames) == 16 and frames[0].shape == (120, 160, 3) and fps == pytest.approx(12.0)
    assert data["num_frames"] == 16 and data["complete"] and data["errors"] == []
    assert (data["width"], data["height"], data["fps"]) == (160, 120, 12.0)
    assert [f["frame"] for f in data["frames"]] == list(range(16))


def test_json_holds_what_the_model_predicts(video_run, tiny_model):
    _, src, _, data = video_run
    predictor = Predictor(*tiny_model, confidence_threshold=0.0)
    inputs, _ = _decode_all(src)
    for frame, rec in zip(inputs, data["frames"]):
        inst = predictor(frame)
        assert [r["score"] for r in rec["instances"]] == pytest.approx(inst.scores.tolist(), abs=1e-4)
        for r, m in zip(rec["instances"], inst.pred_masks.numpy()):
            assert (decode_segmentation(r["segmentation"]) != m).mean() < 1e-3


def test_masks_are_drawn_where_the_model_predicted_them(video_run):
    _, src, out, data = video_run
    inputs, _ = _decode_all(src)
    outputs, _ = _decode_all(out)
    tinted = 0
    for frame_in, frame_out, rec in zip(inputs, outputs, data["frames"]):
        # both videos are mp4 (lossy): unchanged pixels differ by a few levels, more near
        # drawn edges (8x8 and 16x16 coding blocks); a tinted mask by tens of levels
        diff = np.abs(frame_out.astype(np.int16) - frame_in).mean(axis=2)
        inside = []
        for r in rec["instances"]:
            mask = decode_segmentation(r["segmentation"]).astype(np.uint8)
            inner = cv2.erode(mask, np.ones((5, 5), np.uint8)).astype(bool)  # away from outlines
            if inner.sum() > 20:
                inside.append(diff[inner].mean())
        drawn = np.zeros(diff.shape, bool)
        for r in rec["instances"]:
            drawn |= decode_segmentation(r["segmentation"])
            x, y, w, h = (int(round(v)) for v in r["bbox"])
            drawn[max(y - 16, 0): y + h + 4, max(x - 4, 0): x + w + 4] = True  # box, outline and label tab
        far = cv2.erode((~drawn).astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
        noise = diff[far].mean() if far.sum() > 100 else 0.0
        assert noise < 12, f"frame {rec['frame']}: drawing outside the predictions ({noise:.1f})"
        for value in inside:
            assert value > 25 and value > 2.5 * noise, f"frame {rec['frame']}: mask not tinted ({value:.1f})"
        tinted += len(inside)
    assert tinted >= 16  # the tiny model predicts 1 to 3 masks per frame


def test_video_agrees_with_its_json(video_run, tiny_model):
    """Redrawing each frame from the json alone gives the rendered video's frame, and
    redrawing it from another frame's json does not."""
    _, src, out, data = video_run
    names = [c["name"] for c in data["categories"]]
    ids = [c["id"] for c in data["categories"]]
    inputs, _ = _decode_all(src)
    outputs, _ = _decode_all(out)

    def redraw(frame, rec):
        insts = sorted(rec["instances"], key=lambda r: r["score"])
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in insts)]).reshape(-1, 4)
        masks = np.stack([decode_segmentation(r["segmentation"]) for r in insts]) if insts else None
        labels = instance_labels([ids.index(r["category_id"]) for r in insts], [r["score"] for r in insts], names)
        return draw_instances(frame, boxes, masks, labels, [color_of(r["track_id"]) for r in insts])

    for k in range(16):
        same = np.abs(redraw(inputs[k], data["frames"][k]).astype(np.int16) - outputs[k]).mean()
        other = np.abs(redraw(inputs[k], data["frames"][(k + 8) % 16]).astype(np.int16) - outputs[k]).mean()
        assert same < 10.0 and other > 2 * same, (k, same, other)


def test_tracks_follow_the_objects_of_the_video(tiny_model, tmp_path, monkeypatch):
    """The demo with an oracle model (each frame's detections are the video's own shapes):
    every object keeps one track id for as long as it stays in view, and no two objects
    share one (an object hidden longer than the tracker's memory may come back with a new
    one)."""
    from detectron2.structures import Boxes, Instances

    from condseg.data.shapes import _layout
    from condseg.data.shapes_video import moving_scenes

    frames, width, height = 30, 200, 150
    src = shapes_video(str(tmp_path / "moving.mp4"), frames=frames, width=width, height=height)
    truth = []  # per frame: [(shape index, class, mask)]
    for scene in moving_scenes(frames, width, height, seed=3):
        masks = _layout(scene)[1]
        truth.append([(i, s.category_id - 1, m) for i, (s, m) in enumerate(zip(scene.shapes, masks)) if m is not None])
    calls = iter(truth)

    class Oracle(Predictor):
        def predict_batch(self, images):
            out = []
            for image in images:
                objects = next(calls)
                inst = Instances(image.shape[:2])
                boxes = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] for ys, xs in (np.nonzero(m) for _, _, m in objects)]
                inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
                inst.scores = torch.full((len(objects),), 0.9)
                inst.pred_classes = torch.tensor([c for _, c, _ in objects])
                inst.pred_masks = torch.from_numpy(np.stack([m for _, _, m in objects]))
                out.append(inst)
            return out

    monkeypatch.setattr(demo, "Predictor", Oracle)
    rc = _run(tiny_model, "--video-input", src, "--json", str(tmp_path / "out.json"), "--batch-size", "2")
    assert rc == 0
    records = json.loads((tmp_path / "out.json").read_text())["frames"]
    assert len(records) == frames
    runs = {}  # (shape index, first frame of a run of frames it is seen in) -> track ids it was given
    start, owner = {}, {}
    for t, (objects, rec) in enumerate(zip(truth, records)):
        assert len(rec["instances"]) == len(objects) >= 2
        for (index, _, _), inst in zip(objects, rec["instances"]):
            if t == 0 or index not in {i for i, _, _ in truth[t - 1]}:
                start[index] = t  # (re)appears: hidden objects may come back with a new id
            runs.setdefault((index, start[index]), set()).add(inst["track_id"])
            assert owner.setdefault(inst["track_id"], index) == index, "two objects share a track id"
    assert all(len(v) == 1 for v in runs.values()), str(runs)  # each object keeps its id while in view
    assert len(owner) >= 3


def test_image_folder_mode_goes_on_past_bad_files(tiny_model, tmp_path, capsys):
    d = tmp_path / "pics"
    d.mkdir()
    for i in range(2):
        frame = np.random.default_rng(i).integers(0, 255, (90, 120, 3), dtype=np.uint8)
        cv2.imwrite(str(d / f"img{i}.png"), frame)
    (d / "notes.txt").write_text("hello")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    out, js = tmp_path / "rendered", tmp_path / "preds.json"
    rc = _run(tiny_model, "--input", str(d), str(tmp_path / "absent.png"), "--output", str(out), "--json", str(js))
    err = capsys.readouterr().err
    assert rc == 1
    assert sorted(os.listdir(out)) == ["img0.png", "img1.png"]
    for name in ("notes.txt", "broken.jpg", "absent.png"):
        assert name in err
    data = json.loads(js.read_text())
    assert [im["file_name"] for im in data["images"]] == [str(d / "img0.png"), str(d / "img1.png")]
    predictor = Predictor(*tiny_model, confidence_threshold=0.0)
    for image in data["images"]:
        expected = predictor(cv2.imread(image["file_name"]))
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        assert [a["score"] for a in anns] == pytest.approx(expected.scores.tolist(), abs=1e-4)
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])


def test_single_image_to_a_file(tiny_model, tmp_path):
    src = tmp_path / "one.jpg"
    cv2.imwrite(str(src), np.full((64, 80, 3), 128, np.uint8))
    assert _run(tiny_model, "--input", str(src), "--output", str(tmp_path / "drawn.jpg")) == 0
    assert cv2.imread(str(tmp_path / "drawn.jpg")).shape == (64, 80, 3)


def test_weights_trained_on_a_coco_json_draw_their_own_class_names(coco_training, tmp_path, condseg_log,
                                                                   monkeypatch):
    """The quickstart config (its dataset: the 8 shapes) with only MODEL.WEIGHTS of a model
    trained on a 4-class json: the drawing and the json use the json's names and ids."""
    drawn = []

    def recording(image, boxes, masks, labels, *args, **kwargs):
        drawn.extend(labels)
        return draw_instances(image, boxes, masks, labels, *args, **kwargs)

    monkeypatch.setattr(predictor_module, "draw_instances", recording)
    js = tmp_path / "preds.json"
    images = [os.path.join(coco_training.image_root, f"img_00{i}.png") for i in (1, 2)]
    rc = demo.main(["--config-file", coco_training.config, "--input", *images, "--output",
                    str(tmp_path / "rendered"), "--json", str(js), "--confidence-threshold", "0", "--no-progress",
                    "--opts", "MODEL.WEIGHTS", coco_training.final])
    assert rc == 0
    data = json.loads(js.read_text())
    names = QUIRKY_CLASSES + ["4", "5", "6", "7"]  # the quickstart model has 8 classes, the json 4
    assert [c["name"] for c in data["categories"]] == names
    ids = [c["id"] for c in data["categories"]]
    assert ids[:4] == [3, 7, 42, 99] and len(set(ids)) == 8
    assert data["annotations"] and {a["category_id"] for a in data["annotations"]} <= set(ids)
    assert drawn and {label.rsplit(" ", 1)[0] for label in drawn} <= set(names)
    line = ("the weights were trained on 4 classes (circle, square, triangle, hexagon); "
            "the config's dataset condseg_shapes_val has 8")
    assert condseg_log.text.count(line) == 1 and coco_training.final in condseg_log.text


def test_weights_without_class_names_keep_the_configs(tiny_model, tmp_path, condseg_log):
    src = tmp_path / "one.png"
    cv2.imwrite(str(src), np.full((64, 80, 3), 128, np.uint8))
    assert _run(tiny_model, "--input", str(src), "--json", str(tmp_path / "preds.json")) == 0
    data = json.loads((tmp_path / "preds.json").read_text())
    assert data["categories"] == [{"id": i, "name": n} for i, n in enumerate(SHAPES_CLASSES)]
    assert "trained on" not in condseg_log.text


def test_corrupt_frame_is_reported_with_its_index(tiny_model, tmp_path, capsys):
    avi = shapes_video(str(tmp_path / "clip.avi"), frames=10)
    bad = str(tmp_path / "bad.avi")
    corrupt_mjpeg_frame(avi, bad, 4)
    rc = _run(tiny_model, "--video-input", bad, "--output", str(tmp_path / "o.mp4"), "--json", str(tmp_path / "o.json"))
    assert rc == 1
    assert "bad.avi: frame 4 could not be decoded" in capsys.readouterr().out
    data = json.loads((tmp_path / "o.json").read_text())
    assert [f["frame"] for f in data["frames"]] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert len(_decode_all(str(tmp_path / "o.mp4"))[0]) == 9


@pytest.mark.parametrize("case", ["missing video", "unreadable video", "missing output folder",
                                  "missing image output folder", "missing json folder", "bad output extension",
                                  "webcam", "output is the input", "no images"])
def test_bad_inputs_stop_with_a_message_naming_them(case, tiny_model, tmp_path, capsys):
    clip = str(tmp_path / "c.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 500)
    args, expect = {
        "missing video": (["--video-input", str(tmp_path / "gone.mp4")], "gone.mp4: no such file"),
        "unreadable video": (["--video-input", str(junk)], "junk.mp4: cannot open this video"),
        "missing output folder": (["--video-input", clip, "--output", str(tmp_path / "no" / "o.mp4")],
                                  f"the folder {tmp_path / 'no'} does not exist"),
        "missing image output folder": (["--input", str(tmp_path / "i.png"), "--output", str(tmp_path / "a" / "b")],
                                        f"the folder {tmp_path / 'a'} does not exist"),
        "missing json folder": (["--video-input", clip, "--json", str(tmp_path / "no" / "r.json")],
                                f"the folder {tmp_path / 'no'} does not exist"),
        "bad output extension": (["--video-input", clip, "--output", str(tmp_path / "o.gif")], "must end in one of"),
        "webcam": (["--webcam", "97"], "webcam 97: cannot open the camera"),
        "output is the input": (["--video-input", clip, "--output", clip], "would overwrite the input"),
        "no images": (["--input", str(tmp_path / "none")], "no image to process"),
    }[case]
    shapes_video(clip, frames=2)
    cv2.imwrite(str(tmp_path / "i.png"), np.zeros((8, 8, 3), np.uint8))
    assert _run(tiny_model, *args) == 2
    err = capsys.readouterr().err
    assert "demo: error:" in err and expect in err, err
    assert "Traceback" not in err


def test_weights_that_do_not_match_the_config(tiny_model, tmp_path, capsys):
    config, _ = tiny_model
    clip = shapes_video(str(tmp_path / "c.mp4"), frames=2)
    other = str(tmp_path / "other.pth")
    import torch

    torch.save({"model": {"backbone.bottom_up.stem.conv1.weight": torch.zeros(3, 3, 3, 3)}}, other)
    rc = demo.main(["--config-file", config, "--video-input", clip, "--no-progress", "--opts", "MODEL.WEIGHTS", other])
    err = capsys.readouterr().err
    assert rc == 2 and "other.pth does not match the model built from" in err and config in err


@pytest.mark.slow
def test_command_line_shows_progress_and_summary(tiny_model, tmp_path):
    """The real command: a progress bar on stderr, the summary with model vs drawing time."""
    config, weights = tiny_model
    clip = shapes_video(str(tmp_path / "c.mp4"), frames=6)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "demo.py"), "--config-file", config, "--video-input", clip,
         "--output", str(tmp_path / "rendered"), "--opts", "MODEL.WEIGHTS", weights],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "6/6" in proc.stderr and "frame/s" in proc.stderr  # tqdm: frames done, rate
    assert "frames/s end to end" in proc.stdout and "per frame: model" in proc.stdout
    assert "frames per model call: alternating 1 and 2" in proc.stdout  # 6 frames: too few to settle
    assert os.path.isfile(tmp_path / "rendered" / "c.mp4")  # a folder output: named after the input


def test_video_files_measure_their_frames_per_model_call_by_default():
    parse = demo.get_parser().parse_args
    assert demo.batch_size(parse(["--config-file", "c.yaml", "--video-input", "v.mp4"])) is None  # measured
    assert demo.VIDEO_BATCHES == (1, 2)
    assert demo.batch_size(parse(["--config-file", "c.yaml", "--webcam"])) == 1  # a frame of latency otherwise
    assert demo.batch_size(parse(["--config-file", "c.yaml", "--input", "a.png"])) == 1
    assert demo.batch_size(parse(["--config-file", "c.yaml", "--video-input", "v.mp4", "--batch-size", "3"])) == 3


@pytest.mark.slow
def test_an_exported_model_renders_a_video_like_the_pytorch_model(tiny_model, tiny_onnx, video_run, tmp_path, capsys):
    _, src, _, pytorch = video_run
    out, out_json = str(tmp_path / "onnx.mp4"), str(tmp_path / "onnx.json")
    rc = demo.main(["--config-file", tiny_onnx, "--confidence-threshold", "0", "--no-progress", "--video-input", src,
                    "--output", out, "--json", out_json, "--batch-size", "2"])
    assert rc == 0
    frames, _ = _decode_all(out)
    with open(out_json) as f:
        data = json.load(f)
    assert len(frames) == 16 and data["complete"]
    assert [len(f["instances"]) for f in data["frames"]] == [len(f["instances"]) for f in pytorch["frames"]]
    # --opts cannot change an exported model
    assert demo.main(["--config-file", tiny_onnx, "--video-input", src, "--opts", "MODEL.DEVICE", "cpu"]) == 2
    assert "an exported model (.onnx) holds its config" in capsys.readouterr().err
