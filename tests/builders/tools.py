"""The command-line tools of ``tools/`` as modules, for tests that call their functions in
this process (they are scripts, not a package)."""
import importlib.util
import os

TOOLS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "tools"))


def tool_path(name: str) -> str:
    """``tools/<name>.py``."""
    return os.path.join(TOOLS, f"{name}.py")


def load_tool(name: str, module_name: str = ""):
    """``tools/<name>.py`` loaded as a fresh module (named ``module_name``, default ``name``)."""
    spec = importlib.util.spec_from_file_location(module_name or name, tool_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
