"""tools/convert_checkpoint.py as a module, for the converter tests (no test here)."""
from builders.tools import load_tool as _load
from builders.tools import tool_path

TOOL = tool_path("convert_checkpoint")


def load_tool():
    return _load("convert_checkpoint")
