"""Which config keys a meta-architecture reads for its class count and its score threshold.

condseg's meta-architectures say it themselves (``num_classes_key``,
``score_threshold_overrides`` on the class); detectron2's own are listed here, so the
predictor and the consistency checks need not know any model's scoring.
"""
from typing import List

from detectron2.modeling import META_ARCH_REGISTRY

__all__ = ["config_value", "num_classes", "num_classes_key", "score_threshold_overrides"]

# detectron2's meta-architectures: (class-count key, final-score threshold key)
_DETECTRON2 = {
    "GeneralizedRCNN": ("MODEL.ROI_HEADS.NUM_CLASSES", "MODEL.ROI_HEADS.SCORE_THRESH_TEST"),
    "RetinaNet": ("MODEL.RETINANET.NUM_CLASSES", "MODEL.RETINANET.SCORE_THRESH_TEST"),
}


def _meta_arch(cfg):
    name = cfg.MODEL.META_ARCHITECTURE
    try:
        return name, META_ARCH_REGISTRY.get(name)
    except KeyError:
        raise KeyError(f"MODEL.META_ARCHITECTURE {name!r} is not registered") from None


def num_classes_key(cfg) -> str:
    """The config key holding the number of foreground classes of ``cfg``'s model."""
    name, arch = _meta_arch(cfg)
    key = getattr(arch, "num_classes_key", None) or _DETECTRON2.get(name, (None,))[0]
    if key is None:
        raise ValueError(f"MODEL.META_ARCHITECTURE {name!r} does not say which key holds its class count")
    return key


def config_value(cfg, key: str):
    """The value of a dotted ``key`` (``"MODEL.FCOS.NUM_CLASSES"``) in ``cfg``."""
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def num_classes(cfg) -> int:
    """The value of :func:`num_classes_key` in ``cfg``."""
    return int(config_value(cfg, num_classes_key(cfg)))


def score_threshold_overrides(cfg, threshold: float) -> List:
    """``KEY VALUE`` overrides that make ``cfg``'s model keep every detection whose final
    score can reach ``threshold`` (a caller still filters the final scores)."""
    name, arch = _meta_arch(cfg)
    if hasattr(arch, "score_threshold_overrides"):
        return list(arch.score_threshold_overrides(threshold))
    if name in _DETECTRON2:  # these threshold their final scores directly
        return [_DETECTRON2[name][1], float(threshold)]
    raise ValueError(f"MODEL.META_ARCHITECTURE {name!r} does not say how to set a score threshold")
