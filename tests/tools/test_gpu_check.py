"""tools/gpu_check.py: without CUDA it stops at once and says why."""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine-without-CUDA path")
def test_without_cuda_it_exits_with_status_2_and_a_message(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu_check.py"), "--output", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no CUDA device here" in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing started, nothing written
