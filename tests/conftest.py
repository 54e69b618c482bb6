import os
import sys

import pytest
import torch

FIXTURES = os.environ.get(
    "CONDSEG_FIXTURES", os.path.join(os.path.dirname(__file__), "fixtures")
)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "data"))  # quirky_coco builder
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "inference"))  # tiny_model builder

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def load_fixture(group: str, name: str) -> dict:
    path = os.path.join(FIXTURES, group, name)
    if not os.path.exists(path):
        pytest.fail(f"fixture {path} is missing (set CONDSEG_FIXTURES to the fixtures folder)")
    if name.endswith(".json"):
        import json

        with open(path) as f:
            return json.load(f)
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="session")
def fixture():
    return load_fixture


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """(config.yaml, model.pth) of a tiny CondInst whose masks are diamonds around its
    detections (see tests/inference/tiny_model.py)."""
    from tiny_model import make_tiny_model

    return make_tiny_model(str(tmp_path_factory.mktemp("tiny_model")))
