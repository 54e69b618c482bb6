"""AtomicCheckpointer: writes that cannot be half-done, a resume that skips damaged files."""
import errno
import os

import pytest
import torch
from torch import nn

from condseg.engine import checkpointer as ckpt
from condseg.engine.checkpointer import AtomicCheckpointer, CheckpointWriteError, NoIntactCheckpointError, checkpoint_files


def _model(value=0.0):
    m = nn.Linear(3, 2)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


def test_save_writes_the_file_and_last_checkpoint_through_a_rename(tmp_path):
    c = AtomicCheckpointer(_model(1.0), str(tmp_path))
    c.save("model_0000004", iteration=4)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth"]  # no temporary file left
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert torch.load(tmp_path / "model_0000004.pth", weights_only=False)["iteration"] == 4


def test_every_save_carries_the_class_entry_it_was_given(tmp_path):
    entry = {"thing_classes": ["a", "b"], "thing_dataset_id_to_contiguous_id": {5: 0, 9: 1}, "datasets": ["mine"]}
    (tmp_path / "named").mkdir()
    (tmp_path / "plain").mkdir()
    AtomicCheckpointer(_model(), str(tmp_path / "named"), classes=entry).save("model_0000004", iteration=4)
    AtomicCheckpointer(_model(), str(tmp_path / "plain")).save("model_0000004", iteration=4)
    named = torch.load(tmp_path / "named" / "model_0000004.pth", weights_only=False)
    assert named["classes"] == entry and named["iteration"] == 4
    assert "classes" not in torch.load(tmp_path / "plain" / "model_0000004.pth", weights_only=False)


def test_a_failing_write_leaves_the_previous_checkpoints_as_they_were(tmp_path, monkeypatch):
    c = AtomicCheckpointer(_model(1.0), str(tmp_path))
    c.save("model_0000004")
    before = (tmp_path / "model_0000004.pth").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError, match=rf"could not write model_0000009.pth in {tmp_path}: No space left"):
        c.save("model_0000009")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth"]
    assert (tmp_path / "model_0000004.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"


def _folder_with(tmp_path, *iterations):
    for it in iterations:
        AtomicCheckpointer(_model(float(it)), str(tmp_path)).save(f"model_{it:07d}", iteration=it)
    return tmp_path


def test_checkpoint_files_are_listed_newest_first(tmp_path):
    _folder_with(tmp_path, 4, 14, 9)
    (tmp_path / "model_final.pth").write_bytes(b"")
    names = [os.path.basename(f) for f in checkpoint_files(str(tmp_path))]
    assert names == ["model_final.pth", "model_0000014.pth", "model_0000009.pth", "model_0000004.pth"]


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_resume_passes_over_a_damaged_last_checkpoint(tmp_path, damage, caplog):
    _folder_with(tmp_path, 4, 9)
    path = tmp_path / "model_0000009.pth"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"not a checkpoint"}[damage])
    m = _model(-1.0)
    extra = AtomicCheckpointer(m, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 4 and torch.all(m.weight == 4.0)
    assert "model_0000009.pth does not load" in caplog.text


@pytest.mark.parametrize("tag", ["", "model_0000099.pth", None])
def test_a_missing_empty_or_dangling_last_checkpoint_falls_back_to_the_newest_file(tmp_path, tag):
    _folder_with(tmp_path, 4, 9)
    if tag is None:
        os.remove(tmp_path / "last_checkpoint")
    else:
        (tmp_path / "last_checkpoint").write_text(tag)
    m = _model(-1.0)
    c = AtomicCheckpointer(m, str(tmp_path))
    assert c.has_checkpoint()
    assert c.resume_or_load("", resume=True)["iteration"] == 9 and torch.all(m.weight == 9.0)


def test_nothing_intact_is_an_error_naming_the_files(tmp_path):
    (tmp_path / "model_0000004.pth").write_bytes(b"")
    (tmp_path / "last_checkpoint").write_text("model_0000004.pth")
    with pytest.raises(NoIntactCheckpointError, match="none of the 1 checkpoints .* loads .model_0000004.pth"):
        AtomicCheckpointer(_model(), str(tmp_path)).resume_or_load("", resume=True)


def test_no_checkpoint_loads_the_given_weights(tmp_path):
    os.makedirs(tmp_path / "w")
    os.makedirs(tmp_path / "out")
    AtomicCheckpointer(_model(7.0), str(tmp_path / "w")).save("weights")
    m = _model(-1.0)
    c = AtomicCheckpointer(m, str(tmp_path / "out"))
    assert not c.has_checkpoint()
    c.resume_or_load(str(tmp_path / "w" / "weights.pth"), resume=True)
    assert torch.all(m.weight == 7.0)
