from .condinst import CondInst
from .mask_branch import MaskBranch

__all__ = ["CondInst", "MaskBranch"]
