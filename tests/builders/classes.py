"""Checkpoints that carry the classes they were trained on (:mod:`condseg.checkpoint.classes`).

* :func:`train_on_quirky_coco`: a real, very short training on a 4-class COCO json (the
  quirky one of :mod:`builders.quirky_coco`: ids 3, 7, 42, 99) with the architecture of
  the quickstart CondInst config, so that its checkpoints load with
  ``configs/quickstart/condinst_R18_shapes.yaml`` alone, whose dataset is the 8 built-in
  shapes: the case where the weights' own names matter. ``MODEL.FCOS.NUM_CLASSES`` stays
  the quickstart's 8 (the json's 4 classes fit).
* :func:`save_with_classes`: weights saved again by the training's checkpointer with a
  class entry (the tiny model's, to keep an export quick).
"""
import os
from dataclasses import dataclass

from detectron2.modeling import build_model

from builders.quirky_coco import CATEGORIES, make_quirky_coco

QUICKSTART = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "quickstart", "condinst_R18_shapes.yaml")
DATASET = "classes4_train"
MAX_ITER = 3
CHECKPOINT_PERIOD = 2  # a periodic checkpoint (model_0000001.pth) before model_final.pth
# what the quirky json's categories become: contiguous indices in the order of the sorted ids
QUIRKY_CLASSES = [c["name"] for c in sorted(CATEGORIES, key=lambda c: c["id"])]
QUIRKY_ID_MAP = {c["id"]: i for i, c in enumerate(sorted(CATEGORIES, key=lambda c: c["id"]))}


@dataclass
class CocoTraining:
    config: str  # the quickstart config the checkpoints fit
    output_dir: str
    json_file: str
    image_root: str

    @property
    def final(self) -> str:
        return os.path.join(self.output_dir, "model_final.pth")


def train_on_quirky_coco(folder: str) -> CocoTraining:
    """Train the quickstart CondInst :data:`MAX_ITER` iterations on tiny images of the
    quirky json under ``folder``, in this process: a periodic checkpoint
    (``model_0000001.pth``), ``model_final.pth`` and the resumable one a stopped run
    leaves (``model_0000000.pth``), in ``folder/out``."""
    from condseg.engine import Trainer
    from condseg.engine.setup import setup_cfg

    json_file, image_root = make_quirky_coco(os.path.join(folder, "data"))
    output_dir = os.path.join(folder, "out")
    cfg = setup_cfg(QUICKSTART, [
        "DATASETS.COCO", f"[['{DATASET}', '{json_file}', '{image_root}']]",
        "DATASETS.TRAIN", f"('{DATASET}',)", "DATASETS.TEST", "()",  # no evaluation
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", str(CHECKPOINT_PERIOD),
        "DATALOADER.NUM_WORKERS", "0", "SEED", "0", "OUTPUT_DIR", output_dir,
    ])
    os.makedirs(output_dir, exist_ok=True)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    trainer.save_resumable(0)
    return CocoTraining(QUICKSTART, output_dir, json_file, image_root)


def save_with_classes(config: str, weights: str, folder: str, classes: dict) -> str:
    """``weights`` (fitting ``config``) saved again as ``folder/model_final.pth`` by the
    training's :class:`~condseg.engine.checkpointer.AtomicCheckpointer` with ``classes``; its path."""
    from condseg.config_setup import setup_cfg
    from condseg.engine.checkpointer import AtomicCheckpointer
    from condseg.inference import load_weights_strict

    model = build_model(setup_cfg(config))
    load_weights_strict(model, weights)
    os.makedirs(folder, exist_ok=True)
    AtomicCheckpointer(model, folder, classes=classes).save("model_final")
    return os.path.join(folder, "model_final.pth")
