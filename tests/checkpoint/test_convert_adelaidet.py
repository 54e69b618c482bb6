"""AdelaiDet CondInst -> condseg checkpoint conversion (condseg.checkpoint.adelaidet and
tools/convert_checkpoint.py) on synthetic checkpoints built from the reference model's
key list (fixture condinst/model_keys_MS_R_50_1x.json)."""
import os
import pickle
import subprocess
import sys

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

import condseg.modeling  # noqa: F401  (registers CondInst)
from condseg.checkpoint import adelaidet, load_checkpoint_state_dict, save_checkpoint
from condseg.checkpoint import common as checkpoint_common
from condseg.config import get_condseg_cfg

from convert_tool import TOOL, load_tool

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(ROOT, "configs", "condinst_R50_1x.yaml")
SOI = [64, 128, 256, 512, 1024]
RENAMED = {  # samples of the two renaming rules
    "proposal_generator.fcos_head.cls_logits.weight": "proposal_generator.head.cls_logits.weight",
    "proposal_generator.fcos_head.scales.4.scale": "proposal_generator.head.scales.4.scale",
    "mask_branch.tower.4.weight": "mask_branch.predictor.weight",
    "mask_branch.tower.4.bias": "mask_branch.predictor.bias",
}
DROPPED = {"mask_head._iter", "mask_head.sizes_of_interest"}
BN_STATS = ("weight", "bias", "running_mean", "running_var")
# AdelaiDet's semantic head (MASK_BRANCH.SEMANTIC_LOSS_ON) for 80 classes on 256-channel P3
SEMANTIC_HEAD = {
    **{f"mask_branch.seg_head.{i}.0.weight": [128, 256 if i == 0 else 128, 3, 3] for i in (0, 1)},
    **{f"mask_branch.seg_head.{i}.1.{p}": [128] for i in (0, 1) for p in BN_STATS},
    **{f"mask_branch.seg_head.{i}.1.num_batches_tracked": [] for i in (0, 1)},
    "mask_branch.logits.weight": [80, 128, 1, 1],
    "mask_branch.logits.bias": [80],
}


def synthetic_tensor(key, shape, dtype, gen):
    """Random values of a plausible scale, so that the network's outputs stay finite."""
    if key == "mask_head.sizes_of_interest":
        return torch.tensor(SOI, dtype=dtype)
    if key == "mask_head._iter":
        return torch.full(shape, 89999.0, dtype=dtype)
    if not dtype.is_floating_point:  # num_batches_tracked
        return torch.randint(0, 1000, shape, generator=gen, dtype=dtype)
    if key.endswith("running_var"):
        return torch.rand(shape, generator=gen) + 0.5
    if len(shape) == 4:  # conv weights, kaiming-like
        return torch.randn(shape, generator=gen) / (shape[1] * shape[2] * shape[3]) ** 0.5
    # around 1: norm weights, FCOS scales, and box regression biases (so that boxes are not empty)
    offset = 1.0 if key.endswith((".weight", ".scale", "bbox_pred.bias")) else 0.0
    return offset + 0.1 * torch.randn(shape, generator=gen)


@pytest.fixture(scope="module")
def reference(fixture):
    """A synthetic AdelaiDet CondInst R-50 state dict (do not modify: copy it)."""
    entries = fixture("condinst", "model_keys_MS_R_50_1x.json")["state_dict"]
    gen = torch.Generator().manual_seed(0)
    return {e["key"]: synthetic_tensor(e["key"], e["shape"], getattr(torch, e["dtype"]), gen) for e in entries}


def make_cfg(*opts):
    cfg = get_condseg_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.fixture(scope="module")
def model():
    """condseg's CondInst R-50 (tests only read its keys and shapes, or load weights into it)."""
    return build_model(make_cfg())


@pytest.fixture(scope="module")
def trainer_checkpoint(reference, tmp_path_factory):
    """The reference state dict saved as an AdelaiDet trainer checkpoint."""
    path = str(tmp_path_factory.mktemp("adelaidet") / "model_final.pth")
    torch.save({"model": reference, "optimizer": {"state": {}}, "scheduler": {}, "iteration": 89999}, path)
    return path


def with_changes(reference, remove=(), **changes):
    """A copy of the reference state dict without ``remove`` and with ``changes``."""
    state = {k: v for k, v in reference.items() if k not in remove}
    state.update(changes)
    return state


def run_tool(*args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=300, env=env)


# ---- conversion and checks ----------------------------------------------------------------


def test_every_reference_key_is_renamed_kept_or_dropped(reference, model):
    converted, report = adelaidet.convert_adelaidet_condinst(reference)
    assert len(reference) == 372
    assert set(report.dropped) == DROPPED
    assert report.sizes_of_interest == SOI
    assert all(report.renamed[old] == new for old, new in RENAMED.items())
    assert len(report.renamed) == 43 + 2  # the FCOS head and the mask branch output conv
    for key in reference:
        name = report.renamed.get(key, key)
        assert key in report.dropped or converted[name] is reference[key], key  # carried over, not copied
    expected = model.state_dict()
    assert list(converted) == list(expected)  # nothing left over, nothing missing, same order
    assert all(converted[k].shape == v.shape and converted[k].dtype == v.dtype for k, v in expected.items())


def test_fit_to_model_checks_sizes_of_interest_keys_and_shapes(reference, model):
    converted, report = adelaidet.convert_adelaidet_condinst(reference)
    fitted = adelaidet.fit_to_model(converted, model, report)
    assert list(fitted) == list(converted) and all(fitted[k] is v for k, v in converted.items())
    assert not report.warnings
    assert len(report.checks) == 2 and "[64, 128, 256, 512, 1024]" in report.checks[0]
    summary = report.summary(len(fitted))
    assert "372 tensors read, 370 converted (45 renamed, 325 unchanged), 2 dropped" in summary
    assert "proposal_generator.fcos_head.* -> proposal_generator.head.* (43)" in summary
    assert "mask_branch.tower.4.* -> mask_branch.predictor.* (2)" in summary
    assert "mask_head._iter: training step counter (89999)" in summary


def test_output_conv_index_comes_from_the_checkpoint(reference):
    """A mask branch with NUM_CONVS = 2: tower.2 is the output conv, tower.0/1 stay."""
    last_three = tuple(f"mask_branch.tower.{i}." for i in (2, 3, 4))
    state = with_changes(reference, remove=[k for k in reference if k.startswith(last_three)])
    state["mask_branch.tower.2.weight"] = reference["mask_branch.tower.4.weight"]
    state["mask_branch.tower.2.bias"] = reference["mask_branch.tower.4.bias"]
    converted, report = adelaidet.convert_adelaidet_condinst(state)
    assert converted["mask_branch.predictor.weight"] is reference["mask_branch.tower.4.weight"]
    assert "mask_branch.tower.1.0.weight" in converted
    assert report.renamed["mask_branch.tower.2.bias"] == "mask_branch.predictor.bias"


def test_converted_checkpoint_loads_with_model_weights_and_runs(reference, trainer_checkpoint, model, tmp_path):
    state, report = adelaidet.convert_file(trainer_checkpoint, model)
    out = str(tmp_path / "condinst_R50_converted.pth")
    save_checkpoint(state, out)
    assert os.listdir(tmp_path) == ["condinst_R50_converted.pth"]  # no temporary file left
    saved = torch.load(out, weights_only=True)
    assert saved["__author__"] == "condseg" and saved["matching_heuristics"] is False

    class Recording(DetectionCheckpointer):
        def _load_model(self, checkpoint):
            self.incompatible = super()._load_model(checkpoint)
            return self.incompatible

    cfg = make_cfg("MODEL.WEIGHTS", out)
    checkpointer = Recording(model)
    checkpointer.load(cfg.MODEL.WEIGHTS)
    assert not checkpointer.incompatible.missing_keys
    assert not checkpointer.incompatible.unexpected_keys
    assert not checkpointer.incompatible.incorrect_shapes
    loaded = model.state_dict()
    for key, value in reference.items():
        if key not in DROPPED:
            assert torch.equal(loaded[report.renamed.get(key, key)], value), key  # bit for bit
    assert torch.equal(loaded["controller.weight"], reference["controller.weight"])
    assert torch.equal(loaded["mask_branch.predictor.weight"], reference["mask_branch.tower.4.weight"])

    model.eval()
    image = torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        instances = model([{"image": image, "height": 128, "width": 160}])[0]["instances"]
    assert len(instances) > 0
    assert instances.pred_masks.shape[1:] == (128, 160) and instances.pred_masks.dtype == torch.bool
    assert torch.isfinite(instances.scores).all()


def test_bare_state_dict_and_pkl_inputs(reference, model, tmp_path):
    bare = str(tmp_path / "bare.pth")
    torch.save(reference, bare)
    pkl = str(tmp_path / "model.pkl")
    with open(pkl, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in reference.items()}, "__author__": "AdelaiDet"}, f)
    for path in (bare, pkl):
        state, report = adelaidet.convert_file(path, model)
        assert list(state) == list(model.state_dict()) and report.source == path
        assert torch.equal(state["mask_branch.predictor.bias"], reference["mask_branch.tower.4.bias"])
        assert state["backbone.bottom_up.stem.conv1.weight"].dtype == torch.float32
    assert report.sizes_of_interest == SOI


def semantic_head_tensors():
    gen = torch.Generator().manual_seed(1)
    return {k: synthetic_tensor(k, s, torch.float32 if s else torch.int64, gen) for k, s in SEMANTIC_HEAD.items()}


def test_semantic_head_is_dropped_with_a_warning_when_the_model_has_none(reference, model):
    semantic = semantic_head_tensors()
    converted, report = adelaidet.convert_adelaidet_condinst(with_changes(reference, **semantic))
    assert all(converted[k] is v for k, v in semantic.items())  # kept by name
    fitted = adelaidet.fit_to_model(converted, model, report)
    assert list(fitted) == list(model.state_dict())
    assert set(report.dropped) == DROPPED | set(SEMANTIC_HEAD)
    assert len(report.warnings) == 1
    assert "mask_branch.seg_head.*" in report.warnings[0] and "SEMANTIC_LOSS_ON is False" in report.warnings[0]


def test_semantic_head_is_kept_when_the_model_has_one(reference):
    semantic_model = build_model(make_cfg("MODEL.CONDINST.MASK_BRANCH.SEMANTIC_LOSS_ON", "True"))
    converted, report = adelaidet.convert_adelaidet_condinst(with_changes(reference, **semantic_head_tensors()))
    fitted = adelaidet.fit_to_model(converted, semantic_model, report)
    assert set(fitted) == set(semantic_model.state_dict()) and not report.warnings


# ---- errors (library) ---------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        adelaidet.convert_file(path)


@pytest.mark.parametrize(
    "content, words",
    [
        ({"iteration": 5, "optimizer": {}}, "iteration"),
        ([1, 2, 3], "list"),
        ({}, "dict"),
        (b"garbage", "cannot be read"),
    ],
)
def test_file_without_a_state_dict(tmp_path, content, words):
    path = str(tmp_path / "bad.pth")
    if isinstance(content, bytes):
        with open(path, "wb") as f:
            f.write(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match="bad.pth") as info:
        load_checkpoint_state_dict(path)
    assert words in str(info.value)


def test_unknown_key_is_named(reference):
    state = with_changes(reference, **{"roi_heads.box_predictor.cls_score.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"ckpt\.pth: .*roi_heads\.box_predictor\.cls_score\.weight"):
        adelaidet.convert_adelaidet_condinst(state, source="ckpt.pth")


def test_mask_branch_output_must_be_a_1x1_conv(reference):
    state = with_changes(reference, remove=["mask_branch.tower.4.weight", "mask_branch.tower.4.bias"])
    with pytest.raises(ValueError, match=r"mask_branch\.tower\.3\.weight.*missing"):
        adelaidet.convert_adelaidet_condinst(state)


def test_wrong_sizes_of_interest_names_both(reference, model):
    state = with_changes(reference, **{"mask_head.sizes_of_interest": torch.tensor([32, 64, 128, 256, 512])})
    converted, report = adelaidet.convert_adelaidet_condinst(state, source="ckpt.pth")
    with pytest.raises(ValueError) as info:
        adelaidet.fit_to_model(converted, model, report)
    message = str(info.value)
    assert "ckpt.pth" in message and "[32, 64, 128, 256, 512]" in message and "[64, 128, 256, 512, 1024]" in message
    assert "MODEL.FCOS.SIZES_OF_INTEREST to [32, 64, 128, 256]" in message


def test_shape_mismatch_and_missing_keys_are_named(reference, model):
    state = with_changes(
        reference,
        remove=["controller.bias"],
        **{
            "proposal_generator.fcos_head.cls_logits.weight": torch.zeros(81, 256, 3, 3),
            "proposal_generator.fcos_head.cls_logits.bias": torch.zeros(81),
        },
    )
    converted, report = adelaidet.convert_adelaidet_condinst(state, source="ckpt.pth")
    with pytest.raises(ValueError) as info:
        adelaidet.fit_to_model(converted, model, report)
    message = str(info.value)
    assert message.startswith("ckpt.pth does not fit the model")
    assert "missing (in the model, not in the checkpoint): controller.bias" in message
    assert (
        "proposal_generator.head.cls_logits.weight (proposal_generator.fcos_head.cls_logits.weight in the "
        "checkpoint) is [81, 256, 3, 3] in the checkpoint, [80, 256, 3, 3] in the model"
    ) in message
    assert "cls_logits.bias" in message


def test_a_failed_save_leaves_no_file(reference, tmp_path, monkeypatch):
    out = tmp_path / "out.pth"
    out.write_bytes(b"previous")

    def failing_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_common.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"a": torch.zeros(1)}, str(out))
    assert os.listdir(tmp_path) == ["out.pth"] and out.read_bytes() == b"previous"
    with pytest.raises(ValueError, match="out.pkl: the output must be a .pth file"):
        save_checkpoint({"a": torch.zeros(1)}, str(tmp_path / "out.pkl"))


# ---- command line -------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_converts_a_trainer_checkpoint(trainer_checkpoint, tmp_path):
    out = str(tmp_path / "converted.pth")
    proc = run_tool("adelaidet-condinst", trainer_checkpoint, out, "--config-file", CONFIG)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "372 tensors read, 370 converted (45 renamed, 325 unchanged), 2 dropped" in proc.stdout
    assert "checked  keys and shapes equal the model's (370 tensors)" in proc.stdout
    assert f"wrote {out}" in proc.stdout and "Traceback" not in proc.stderr
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {"model", "__author__", "matching_heuristics"} and len(saved["model"]) == 370
    assert os.listdir(tmp_path) == ["converted.pth"]


@pytest.mark.slow
def test_cli_unknown_key_exits_2_and_writes_nothing(tmp_path):
    bad = str(tmp_path / "bad.pth")
    tiny = {
        "mask_branch.tower.0.0.weight": torch.zeros(1, 1, 3, 3),
        "mask_branch.tower.1.weight": torch.zeros(1, 1, 1, 1),
        "roi_heads.mask_head.predictor.weight": torch.zeros(1),
    }
    torch.save(tiny, bad)
    out = tmp_path / "out.pth"
    proc = run_tool("adelaidet-condinst", bad, str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "bad.pth" in proc.stderr and "roi_heads.mask_head.predictor.weight" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.parametrize(
    "opts, words",
    [
        (["MODEL.FCOS.NUM_CLASSES", "81"], "proposal_generator.fcos_head.cls_logits.weight in the checkpoint"),
        (["MODEL.FCOS.SIZES_OF_INTEREST", "[32, 64, 128, 256]"], "MODEL.FCOS.SIZES_OF_INTEREST to [64, 128, 256, 512]"),
        (["MODEL.FCOS.NO_SUCH_KEY", "1"], "NO_SUCH_KEY"),
    ],
)
def test_cli_errors_exit_2_and_write_nothing(trainer_checkpoint, tmp_path, capsys, opts, words):
    out = tmp_path / "out.pth"
    assert load_tool().main(["adelaidet-condinst", trainer_checkpoint, str(out), "--opts", *opts]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convert_checkpoint.py adelaidet-condinst: error:") and words in err
    assert os.listdir(tmp_path) == []


def test_cli_missing_input_and_bad_output_name(tmp_path, capsys):
    tool = load_tool()
    assert tool.main(["adelaidet-condinst", str(tmp_path / "missing.pth"), str(tmp_path / "out.pth")]) == 2
    assert "missing.pth: no such checkpoint file" in capsys.readouterr().err
    assert tool.main(["adelaidet-condinst", str(tmp_path / "missing.pth"), str(tmp_path / "out.pkl")]) == 2
    assert "out.pkl: the output must be a .pth file" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
