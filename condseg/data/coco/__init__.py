"""COCO-format instance datasets, with the quirks of real-world json handled deliberately.

``register_coco_instances(name, json_file, image_root)`` is a drop-in for detectron2's
function of the same name; ``load_coco_instances`` returns detectron2 dataset dicts.
Unlike ``pycocotools.COCO`` / ``detectron2.data.datasets.load_coco_json`` (which
silently accept, drop or crash on these), every quirk below is handled on purpose:

* non-contiguous category ids (3, 7, 42, ...) -> contiguous ``0..K-1`` in the dicts,
  sorted by id; ``thing_dataset_id_to_contiguous_id`` in the metadata maps them back;
* categories without annotations are kept as classes;
* ``iscrowd`` given as a boolean (or missing, or ``"0"``/``"1"``) -> int; ``ignore: 1``
  -> ``iscrowd: 1`` (both mean "do not train on it, do not count it in evaluation");
* annotation fields the model does not use (``keypoints``, ``attributes`` ...) are dropped:
  a dict's annotation holds exactly ``bbox``, ``bbox_mode``, ``category_id``,
  ``segmentation``, ``iscrowd``;
* images without annotations are kept (``annotations: []``); detectron2's
  ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` drops them for training;
* masks: polygons (also a flat list of numbers, or a list of ``[x, y]`` pairs), compressed
  RLE (``str`` or ``bytes`` counts -> ``str``) and uncompressed RLE (list counts ->
  compressed with ``pycocotools.mask.frPyObjects``); an RLE whose ``size`` is not the
  image's, or whose mask is empty, is dropped with a warning;
* degenerate polygons (fewer than 3 points, odd length, non-finite or zero area) are
  dropped with a warning naming the file, image id and annotation id; an annotation left
  without any polygon is dropped with a warning; one with no segmentation at all is
  kept as a box-only (detection) annotation, without a ``segmentation`` key;
* missing / malformed ``bbox`` -> computed from the mask; zero or negative width/height ->
  annotation dropped with a warning; missing ``area`` -> computed from the mask;
* missing annotation ids are assigned; annotations on unknown images are dropped with a
  warning; missing image ``height``/``width`` are read from the image file;
* hard errors, each naming the file and the offending id: ``category_id`` not in
  ``categories``, duplicate image / annotation / category ids, a json that is not COCO
  (missing ``images``/``annotations``/``categories``), an ``iscrowd`` that is not 0/1;
  ``FileNotFoundError`` for a missing json file or ``image_root`` directory.

Per-item warnings are logged one line each up to ``report.MAX_WARNINGS``, then summarised
with counts; every load logs a one-line summary (loggers under ``condseg.data.coco``).

Evaluation: when the raw json says what the dicts say, ``metadata.json_file`` is that
json and detectron2's ``COCOEvaluator`` reads it. When it would break pycocotools or
disagree with the training dicts (dropped annotations or polygons, boolean/missing
``iscrowd``, uncompressed RLE, missing ``bbox``/``area`` ...), the metadata has no
``json_file``, so the evaluator converts the cleaned dicts itself
(``convert_to_coco_json`` into its output folder, with the original category ids through
``thing_dataset_id_to_contiguous_id``). Nothing is written beside the user's json.

Files: :mod:`.parse` (the json -> dicts and the summary), :mod:`.clean` (one
annotation's mask, iscrowd, box and area), :mod:`.report` (warnings and counts),
:mod:`.register` (the two public functions and the metadata).
"""
from .register import load_coco_instances, register_coco_instances

__all__ = ["load_coco_instances", "register_coco_instances"]
