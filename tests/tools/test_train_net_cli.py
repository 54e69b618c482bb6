"""tools/train_net.py's command line: options may follow the KEY VALUE overrides."""

import pytest
from builders.tools import load_tool

train_net = load_tool("train_net")


def test_options_after_the_overrides_are_options():
    args = train_net.parse_args(["--config-file", "c.yaml", "SOLVER.MAX_ITER", "5", "--resume", "OUTPUT_DIR", "o",
                                 "--num-gpus", "2", "--eval-only"])
    assert args.resume and args.eval_only and args.num_gpus == 2
    assert args.opts == ["SOLVER.MAX_ITER", "5", "OUTPUT_DIR", "o"]


def test_the_usual_order_is_unchanged():
    args = train_net.parse_args(["--config-file", "c.yaml", "--resume", "A.B", "1"])
    assert args.resume and args.opts == ["A.B", "1"] and args.config_file == "c.yaml"


def test_an_odd_override_list_says_what_is_wrong(capsys):
    with pytest.raises(SystemExit) as e:
        train_net.parse_args(["--config-file", "c.yaml", "SOLVER.MAX_ITER", "5", "--bogus"])
    assert e.value.code == 2
    assert "KEY VALUE pairs, got an odd number: SOLVER.MAX_ITER 5 --bogus" in capsys.readouterr().err
