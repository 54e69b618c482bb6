"""condseg's config keys.

``add_condseg_config(cfg)`` adds every key condseg reads on top of detectron2's
defaults. Defaults equal the published CondInst/FCOS implementation (AdelaiDet,
``configs/CondInst/Base-CondInst.yaml`` + its ``defaults.py``), so a COCO config
reads like AdelaiDet's. Each key carries a one-line comment saying what it does.

Usage::

    from detectron2.config import get_cfg
    from condseg.config import get_condseg_cfg   # get_cfg() + add_condseg_config()
    cfg = get_condseg_cfg()
    cfg.merge_from_file("configs/Base-FCOS.yaml")
"""
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = ["add_condseg_config", "get_condseg_cfg"]


def add_condseg_config(cfg: CN) -> None:
    """Add condseg's keys (with published defaults) to a detectron2 config, in place."""
    _C = cfg

    # ---------------------------------------------------------------- FCOS
    _C.MODEL.FCOS = CN()
    _C.MODEL.FCOS.NUM_CLASSES = 80  # foreground classes (background is index NUM_CLASSES)
    _C.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]  # FPN levels the head runs on
    _C.MODEL.FCOS.FPN_STRIDES = [8, 16, 32, 64, 128]  # stride (px) of each IN_FEATURES level
    _C.MODEL.FCOS.PRIOR_PROB = 0.01  # initial foreground probability of the class logits
    _C.MODEL.FCOS.INFERENCE_TH_TRAIN = 0.05  # AdelaiDet's key, kept so its configs load; condseg makes no detections in training
    _C.MODEL.FCOS.INFERENCE_TH_TEST = 0.05  # score threshold before NMS at test time
    _C.MODEL.FCOS.NMS_TH = 0.6  # IoU threshold of the class-aware NMS
    _C.MODEL.FCOS.PRE_NMS_TOPK_TRAIN = 1000  # AdelaiDet's key, kept so its configs load; not read
    _C.MODEL.FCOS.PRE_NMS_TOPK_TEST = 1000  # candidates kept per level and image before NMS (test)
    _C.MODEL.FCOS.POST_NMS_TOPK_TRAIN = 100  # AdelaiDet's key, kept so its configs load; not read
    _C.MODEL.FCOS.POST_NMS_TOPK_TEST = 100  # detections kept per image after NMS (test)
    _C.MODEL.FCOS.TOP_LEVELS = 2  # number of extra FPN levels on top of the backbone's (P6, P7)
    _C.MODEL.FCOS.NORM = "GN"  # norm in the towers: "GN", "BN", "SyncBN" or "" (none)
    _C.MODEL.FCOS.USE_SCALE = True  # learnable scalar per level multiplying the box regression
    _C.MODEL.FCOS.BOX_QUALITY = "ctrness"  # quality branch on the box tower (only "ctrness")
    _C.MODEL.FCOS.THRESH_WITH_CTR = False  # threshold sigmoid(cls)*sigmoid(ctr) instead of sigmoid(cls)
    _C.MODEL.FCOS.LOSS_ALPHA = 0.25  # focal loss alpha
    _C.MODEL.FCOS.LOSS_GAMMA = 2.0  # focal loss gamma
    _C.MODEL.FCOS.LOSS_NORMALIZER_CLS = "fg"  # classification loss normaliser: "fg" (positives) or "moving_fg"
    _C.MODEL.FCOS.LOSS_WEIGHT_CLS = 1.0  # weight of the classification loss
    _C.MODEL.FCOS.SIZES_OF_INTEREST = [64, 128, 256, 512]  # box-size boundaries (px) between levels
    _C.MODEL.FCOS.USE_RELU = True  # kept for config compatibility; regression always ends in ReLU
    _C.MODEL.FCOS.USE_DEFORMABLE = False  # deformable conv in the last tower layer (backbone issue)
    _C.MODEL.FCOS.NUM_CLS_CONVS = 4  # convs in the classification tower
    _C.MODEL.FCOS.NUM_BOX_CONVS = 4  # convs in the box tower
    _C.MODEL.FCOS.NUM_SHARE_CONVS = 0  # convs shared by both towers, before them
    _C.MODEL.FCOS.CENTER_SAMPLE = True  # positives only near the GT centre (mask centroid if masks)
    _C.MODEL.FCOS.POS_RADIUS = 1.5  # centre-sampling radius, in strides
    _C.MODEL.FCOS.LOC_LOSS_TYPE = "giou"  # box loss: "iou", "linear_iou" or "giou"
    _C.MODEL.FCOS.YIELD_PROPOSAL = False  # kept for config compatibility (unused)
    _C.MODEL.FCOS.YIELD_BOX_FEATURES = False  # kept for config compatibility (unused)

    # ------------------------------------------------------------ CondInst
    _C.MODEL.CONDINST = CN()
    _C.MODEL.CONDINST.MASK_OUT_STRIDE = 4  # stride of the predicted (and supervised) mask logits
    _C.MODEL.CONDINST.BOTTOM_PIXELS_REMOVED = -1  # kept for config compatibility (BoxInst only)
    _C.MODEL.CONDINST.MAX_PROPOSALS = -1  # training: random subset of at most this many positives (-1: all)
    _C.MODEL.CONDINST.TOPK_PROPOSALS_PER_IM = -1  # training: top-k positives per image (-1: off)
    _C.MODEL.CONDINST.MASK_HEAD = CN()
    _C.MODEL.CONDINST.MASK_HEAD.CHANNELS = 8  # channels of the dynamic mask head's hidden layers
    _C.MODEL.CONDINST.MASK_HEAD.NUM_LAYERS = 3  # 1x1 conv layers of the dynamic mask head
    _C.MODEL.CONDINST.MASK_HEAD.USE_FP16 = False  # kept for config compatibility (unused)
    _C.MODEL.CONDINST.MASK_HEAD.DISABLE_REL_COORDS = False  # drop the 2 relative-coordinate inputs
    _C.MODEL.CONDINST.MASK_HEAD.IMPL = "auto"  # how heads run: "grouped_conv" (published), "bmm" (matmuls, fused loss), "auto" = bmm
    _C.MODEL.CONDINST.MASK_BRANCH = CN()
    _C.MODEL.CONDINST.MASK_BRANCH.OUT_CHANNELS = 8  # channels of the shared mask feature map
    _C.MODEL.CONDINST.MASK_BRANCH.IN_FEATURES = ["p3", "p4", "p5"]  # FPN levels fused (first = output stride)
    _C.MODEL.CONDINST.MASK_BRANCH.CHANNELS = 128  # width of the mask branch convs
    _C.MODEL.CONDINST.MASK_BRANCH.NORM = "BN"  # norm of the mask branch convs
    _C.MODEL.CONDINST.MASK_BRANCH.NUM_CONVS = 4  # 3x3 convs after the fusion
    _C.MODEL.CONDINST.MASK_BRANCH.SEMANTIC_LOSS_ON = False  # auxiliary semantic-segmentation loss

    # ------------------------------------------------- dynamic convolutions
    # Per-stage convolution of the ResNet blocks (res2..res5). detectron2's own keys
    # MODEL.RESNETS.DEFORM_ON_PER_STAGE / DEFORM_MODULATED / DEFORM_NUM_GROUPS select
    # DCNv2 (modulated) or DCNv1 on the 3x3 convs (condseg.layers.DeformConv2d: torchvision's
    # deform_conv2d, or grid_sample + one matmul, much faster on CPUs).
    # ODConv (the OD-ResNet layout) replaces every block conv (1x1 and 3x3) of a stage;
    # the stem and the shortcut convs stay plain. A stage cannot be both.
    _C.MODEL.RESNETS.DEFORM_IMPL = "auto"  # deformable conv: "auto" (grid_sample on CPU, torchvision on CUDA), "torchvision", "grid_sample"
    _C.MODEL.ODCONV = CN()
    _C.MODEL.ODCONV.ON_PER_STAGE = [False, False, False, False]  # ODConv in the blocks of res2..res5
    _C.MODEL.ODCONV.KERNEL_NUM = 4  # candidate kernels n per ODConv (1 = "ODConv 1x", 4 = "4x")
    _C.MODEL.ODCONV.REDUCTION = 0.0625  # attention hidden width = max(int(C_in * REDUCTION), 16)
    _C.MODEL.ODCONV.IMPL = "auto"  # formulation: "auto" (fastest for shape/device) or one of condseg.layers.odconv.IMPLS
    # How IMPL "auto" picks, like detectron2's CUDNN_BENCHMARK: True measures every
    # formulation at the first use of each layer and input shape and keeps the fastest,
    # cached per machine in $CONDSEG_CACHE_DIR, else ~/.cache/condseg (condseg.layers.odconv_autotune);
    # False applies the fixed rule (auto_impl), the same choice on every machine and run.
    _C.MODEL.ODCONV.AUTOTUNE = False  # IMPL "auto": measure at first use (True) or the fixed rule (False)
    _C.MODEL.ODCONV.ATTENTION_BN_EVAL = True  # attention BNs use running stats in training too (published norm_eval)
    _C.MODEL.ODCONV.TEMPERATURE_INIT = 1.0  # attention temperature at iteration 0 (published ImageNet training: 30)
    _C.MODEL.ODCONV.TEMPERATURE_ITERS = 0  # anneal linearly to 1 over this many iterations (0: constant 1)

    # ------------------------------------------------------------- solver
    _C.SOLVER.OPTIMIZER = "SGD"  # "SGD" (detectron2's, with SOLVER.MOMENTUM) or "ADAMW"
    _C.SOLVER.CHECKPOINT_KEEP = 0  # periodic checkpoints kept, the newest ones (0: all)
    _C.SOLVER.LOG_PERIOD = 20  # iterations between writes of the console line, metrics.json and TensorBoard
    _C.SOLVER.MAX_NONFINITE_STEPS = 0  # non-finite steps in a row skipped before training stops (0: stop at the first)

    # --------------------------------------------------------------- data
    # Extra COCO-format datasets, registered at start-up: a list of
    # [name, json_file, image_root], e.g. [["mine_train", "a/train.json", "a/images"]].
    # Then use the names in DATASETS.TRAIN / DATASETS.TEST.
    _C.DATASETS.COCO = []  # extra COCO-format datasets: [[name, json_file, image_root], ...]
    # The built-in generated dataset (condseg_shapes_train / condseg_shapes_val).
    _C.DATASETS.SHAPES = CN()
    _C.DATASETS.SHAPES.NUM_TRAIN = 3000  # training images
    _C.DATASETS.SHAPES.NUM_VAL = 200  # validation images
    _C.DATASETS.SHAPES.MIN_SIZE = 256  # smallest image side (px)
    _C.DATASETS.SHAPES.MAX_SIZE = 384  # largest image side (px)
    _C.DATASETS.SHAPES.SEED = 0  # generator seed (train uses SEED, val SEED + 1)
    # Training images that cannot be read: "skip" (another image takes the place, with a
    # warning naming the file; counted in metrics.json) or "stop" (training stops, saved).
    _C.DATALOADER.BAD_IMAGES = "skip"  # "skip" or "stop" for an unreadable training image
    _C.DATALOADER.MAX_BAD_IMAGE_FRACTION = 0.2  # stop once more than this fraction of the images drawn was unreadable

    # --------------------------------------------------------------- test
    # Models built only for inference (condseg.Predictor, hence the demo and the benchmarks,
    # and tools/train_net.py --eval-only) fold their batch norms on fixed statistics into
    # the convolutions before them (condseg.layers.fold_batch_norms): the same outputs to
    # float rounding, faster and with a lower peak memory. The model being trained is never folded.
    _C.TEST.FOLD_BATCH_NORMS = True  # fold FrozenBN / eval BatchNorm into the preceding convs at inference
    # The COCO API that computes AP in the evaluation (condseg.engine.evaluation): the same
    # numbers either way (tests/engine/test_coco_eval_backend.py), faster_coco_eval is faster.
    _C.TEST.COCO_EVAL_BACKEND = "pycocotools"  # "pycocotools" (detectron2's evaluation) or "faster_coco_eval" (its C++ COCOeval_faster)
    # The evaluation report (condseg.report), written by every evaluation into
    # OUTPUT_DIR/inference/<dataset>/report/index.html, and by tools/eval_report.py.
    _C.TEST.REPORT = CN()
    _C.TEST.REPORT.ENABLED = True  # write the report after each evaluation (Trainer.test)
    _C.TEST.REPORT.IOU = 0.5  # IoU at which the confusion matrix and the gallery match detections to ground truth
    _C.TEST.REPORT.SCORE_THRESHOLD = -1.0  # confusion matrix and gallery: detections >= it (< 0: the best-F1 threshold)
    _C.TEST.REPORT.GALLERY_IMAGES = 4  # images drawn in each gallery (most missed, most false positives) per iou type


def get_condseg_cfg() -> CN:
    """detectron2's default config extended with :func:`add_condseg_config`."""
    cfg = get_cfg()
    add_condseg_config(cfg)
    return cfg
