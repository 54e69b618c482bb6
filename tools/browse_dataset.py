#!/usr/bin/env python
"""Look at a dataset before training on it: its ground truth drawn on a sample of its
images, and its statistics.

  python tools/browse_dataset.py --config-file configs/quickstart/condinst_R18_shapes.yaml --output out/browse
  python tools/browse_dataset.py --config-file CFG --augment --num 16 --seed 1 --output out/browse_aug
  python tools/browse_dataset.py --config-file CFG --dataset mine_val --output out/mine_val \\
      DATASETS.COCO "[['mine_val', 'data/val.json', 'data/images']]"

The dataset is the config's first DATASETS.TRAIN unless --dataset names another
registered one (the built-in condseg_shapes_train / condseg_shapes_val, the names of
DATASETS.COCO, detectron2's built-in ones). --augment draws what training feeds the model:
each image through CondsegDatasetMapper(cfg, is_train=True) (INPUT.MIN_SIZE_TRAIN resize,
INPUT.RANDOM_FLIP; crowd annotations removed), with the augmentation drawn from --seed.
Without it, the images and annotations as stored (crowd ones labelled "crowd").

Writes into --output: one PNG per drawn image, contact_sheet.png (all of them; --sheet
puts it elsewhere), statistics.png and statistics.json (the whole dataset's numbers, also
printed). Trailing KEY VALUE pairs override the config. Exit status 0; 1 with a one-line
error (unknown dataset, missing files), or when some drawn images could not be read (they
are listed, the others are written); 2 a bad command line.
"""
import argparse
import json
import os
import sys
import warnings

import condseg  # noqa: F401  (first: registers condseg's datasets and keeps detectron2's import quiet)

PROGRESS_MIN_IMAGES = 20  # a progress bar when at least this many images are drawn
STATISTICS_PROGRESS_MIN_IMAGES = 20000  # ... or counted (the statistics read only the annotations)


class BrowseError(Exception):
    """Nothing can be drawn: the message names the dataset, key or file."""


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default="", metavar="FILE", help="config (yaml); its DATASETS and INPUT are used")
    p.add_argument("--dataset", metavar="NAME", help="a registered dataset (default: the config's first DATASETS.TRAIN)")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the PNGs and statistics (created)")
    p.add_argument("--num", type=int, default=8, help="images to draw (default 8)")
    p.add_argument("--seed", type=int, default=0, help="which images are drawn, and their augmentation (default 0)")
    p.add_argument("--augment", action="store_true",
                   help="draw the images as training sees them (CondsegDatasetMapper(cfg, is_train=True))")
    p.add_argument("--columns", type=int, default=4, help="contact sheet: images per row (default 4)")
    p.add_argument("--cell", type=int, default=320, help="contact sheet: the side of each image's square in px")
    p.add_argument("--sheet", metavar="FILE.png", help="where the contact sheet goes (default: DIR/contact_sheet.png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides")
    return p


def registered_names(cfg):
    """condseg's and the config's datasets: the built-in shapes and DATASETS.COCO."""
    return ["condseg_shapes_train", "condseg_shapes_val", *(entry[0] for entry in cfg.DATASETS.COCO)]


def dataset_name(cfg, requested):
    """--dataset, else the config's first DATASETS.TRAIN; a name detectron2 does not know
    is an error listing condseg's and the config's."""
    from detectron2.data import DatasetCatalog

    name = requested or (cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None)
    if name is None:
        raise BrowseError("no dataset: the config has no DATASETS.TRAIN; name one with --dataset")
    if name not in DatasetCatalog.list():
        where = "--dataset" if requested else "DATASETS.TRAIN[0]"
        raise BrowseError(f"{where}: dataset {name!r} is not registered; condseg's and the config's are: "
                          f"{', '.join(registered_names(cfg))} (add your own json with DATASETS.COCO "
                          "\"[['NAME', 'train.json', 'images/']]\"; detectron2's built-in names work too)")
    return name


def load(name):
    from detectron2.data import DatasetCatalog

    try:
        return DatasetCatalog.get(name)
    except (OSError, ValueError) as e:  # a missing json or image folder, a json that is not COCO
        raise BrowseError(f"dataset {name!r}: {e}") from e


def write_statistics(dicts, name, meta, output, progress):
    from condseg.data.statistics import dataset_statistics, draw_statistics, format_statistics

    stats = dataset_statistics(dicts, meta.get("thing_classes", None),
                               progress=progress and len(dicts) >= STATISTICS_PROGRESS_MIN_IMAGES)
    print(format_statistics(stats, name))
    with open(os.path.join(output, "statistics.json"), "w") as f:
        json.dump({"dataset": name, **stats}, f, indent=1)
    draw_statistics(stats, os.path.join(output, "statistics.png"), title=name)


def draw(cfg, dicts, meta, args):
    """Draw the sampled images; returns (written paths, the drawings at the contact sheet's
    cell size, [(file, reason)])."""
    import cv2
    from tqdm import tqdm

    from condseg.data import CondsegDatasetMapper, UnreadableImage
    from condseg.report.browse import (augmented_ground_truth, draw_ground_truth, map_for_training, resize_ground_truth,
                                     select_indices, stored_ground_truth)

    mapper = None
    if args.augment:
        mapper = CondsegDatasetMapper(cfg, is_train=True)
        print(f"augmented as for training: {mapper.augmentations}")
        if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:  # what training leaves out is not drawn either
            fed = [d for d in dicts if any(not a.get("iscrowd", 0) for a in d.get("annotations", []))]
            if len(fed) < len(dicts):
                print(f"not drawn: {len(dicts) - len(fed)} image(s) without annotations (or with only crowd ones), "
                      "which training leaves out (DATALOADER.FILTER_EMPTY_ANNOTATIONS)")
            dicts = fed
    if not dicts:
        raise BrowseError("no image to draw")
    indices = select_indices(len(dicts), args.num, args.seed)
    classes, colors = meta.get("thing_classes", []), meta.get("thing_colors", None)
    written, drawn, problems = [], [], []
    bar = tqdm(indices, unit="image", desc="drawing", dynamic_ncols=True,
               disable=args.no_progress or len(indices) < PROGRESS_MIN_IMAGES)
    for k, i in enumerate(bar):
        d = dicts[i]
        try:
            if mapper is None:
                gt = stored_ground_truth(d)
            else:
                gt = augmented_ground_truth(map_for_training(mapper, d, args.seed, int(i)), cfg.INPUT.FORMAT)
        except (OSError, UnreadableImage, ValueError) as e:  # ValueError: detectron2's image size mismatch
            problems.append((d.get("file_name", "?"), str(e).splitlines()[0]))
            continue
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        path = os.path.join(args.output, f"{k:03d}_{stem}.png")
        cv2.imwrite(path, draw_ground_truth(gt, classes, colors))
        written.append(path)
        drawn.append(draw_ground_truth(resize_ground_truth(gt, args.cell), classes, colors))  # labels at full size
    return written, drawn, problems


def run(args) -> int:
    import cv2
    from detectron2.data import MetadataCatalog

    from condseg.config_setup import setup_cfg
    from condseg.report.browse import contact_sheet

    if len(args.opts) % 2:
        raise BrowseError(f"overrides must be KEY VALUE pairs, got an odd number: {' '.join(args.opts)}")
    if args.config_file and not os.path.isfile(args.config_file):
        raise BrowseError(f"--config-file: no such file: {args.config_file}")
    if args.num < 1 or args.columns < 1 or args.cell < 16:
        raise BrowseError("--num and --columns must be at least 1, --cell at least 16")
    try:
        cfg = setup_cfg(args.config_file, args.opts)
    except (KeyError, AssertionError) as e:  # yacs: a key the config does not have (in the file / an override)
        raise BrowseError(f"config: {e.args[0] if e.args else e}") from e
    except (OSError, ValueError) as e:  # a DATASETS.COCO entry malformed or naming missing files (said)
        raise BrowseError(str(e)) from e
    name = dataset_name(cfg, args.dataset)
    dicts = load(name)
    if not dicts:
        raise BrowseError(f"dataset {name!r} has no images")
    meta = MetadataCatalog.get(name)
    os.makedirs(args.output, exist_ok=True)
    write_statistics(dicts, name, meta, args.output, not args.no_progress)
    with warnings.catch_warnings():
        # detectron2's mapper makes tensors of pycocotools' read-only masks: harmless, and not the user's
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        written, drawn, problems = draw(cfg, dicts, meta, args)
    if drawn:
        sheet = args.sheet or os.path.join(args.output, "contact_sheet.png")
        os.makedirs(os.path.dirname(os.path.abspath(sheet)), exist_ok=True)
        cv2.imwrite(sheet, contact_sheet(drawn, args.columns, args.cell), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"{len(written)} images of {name}{' (augmented)' if args.augment else ''} drawn into "
              f"{args.output}; contact sheet {sheet}; statistics.png, statistics.json")
    for file_name, reason in problems:
        print(f"cannot draw {file_name}: {reason}", file=sys.stderr)
    return 1 if problems else 0


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return run(args)
    except BrowseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
