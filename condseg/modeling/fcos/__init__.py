from .detector import FCOSDetector
from .fcos import FCOS
from .head import FCOSHead

__all__ = ["FCOS", "FCOSDetector", "FCOSHead"]
