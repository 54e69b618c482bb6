"""tools/benchmark.py: the command line of condseg.benchmark (the cases are tested in
tests/benchmark): its help lists every registered case with its paragraph, and a case is
measured end to end in its own processes."""
import json

from condseg.benchmark import CASES
from builders.tools import load_tool


def _benchmark_tool():
    return load_tool("benchmark", "condseg_benchmark_tool")


def test_help_lists_every_case_with_its_paragraph():
    text = _benchmark_tool().build_parser().format_help()
    assert "{" + ",".join(sorted(CASES)) + "}" in text
    for name, case in CASES.items():
        first, *rest = case.help.strip("\n").split("\n")
        assert f"\n  {name:<12}{first}\n" in text
        assert all(f"\n{' ' * 14}{line}\n" in text for line in rest)
    assert "{cases}" not in text and "\nEvery measurement runs in fresh processes" in text


def test_a_case_runs_in_measuring_processes_and_writes_its_json(tmp_path):
    out = tmp_path / "dcn.json"
    _benchmark_tool().main(["dcn", "--device", "cpu", "--only", "stage=res5", "mode=infer", "impl=conv2d",
                            "--rounds", "2", "--repeats", "1", "--warmup", "0", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["meta"]["rounds"] == 2 and data["meta"]["cpu_allocator"] == "stable"
    assert data["meta"]["processor"].endswith(" CPUs") and "(" in data["meta"]["processor"]  # name (extensions), N CPUs
    [row] = data["results"]
    assert row["impl"] == "conv2d" and row["rounds"] == 2 and len(row["times_s"]) == 2 and row["median_s"] > 0


def test_report_prints_an_earlier_runs_tables_and_refuses_another_cases(tmp_path, capsys):
    import pytest

    row = {"case": "dcn", "device": "cpu", "mode": "infer", "impl": "conv2d", "stage": "res5", "batch": 2,
           "median_s": 0.25, "peak_mb": 3.0}
    meta = {"case": "dcn", "command": "python tools/benchmark.py dcn", "processor": "X (avx2), 2 CPUs",
            "torch": "2.x", "threads": 2, "cpu_allocator": "stable", "rounds": 1, "repeats": 1, "warmup": 0}
    path = tmp_path / "dcn.json"
    path.write_text(json.dumps({"meta": meta, "results": [row]}))
    _benchmark_tool().main(["dcn", "--report", str(path)])
    out = capsys.readouterr().out
    assert "python tools/benchmark.py dcn" in out and "X (avx2), 2 CPUs" in out and "| conv2d | 250.0 ms |" in out
    for bad, says in ((["odconv", "--report", str(path)], "not of 'odconv'"),
                      (["dcn", "--report", str(tmp_path / "missing.json")], "not a results file")):
        with pytest.raises(SystemExit):
            _benchmark_tool().main(bad)
        assert says in capsys.readouterr().err


def test_a_case_takes_its_own_options_and_defaults_and_prints_its_report(tmp_path, capsys):
    """The model case's options reach its plan, its own repeats and warm-up apply unless given,
    its report is printed; another case refuses them."""
    import pytest

    from condseg.benchmark import model

    out = tmp_path / "model.json"
    weights = str(tmp_path / "none.pth")
    _benchmark_tool().main(["model", "--device", "cpu", "--only", "mode=paste", "impl=chunked", "--rounds", "1",
                            "--condinst-weights", weights, "--json", str(out)])
    meta = json.loads(out.read_text())["meta"]
    assert meta["options"] == {"condinst_weights": weights, "mask_rcnn_weights": model.WEIGHTS["mask_rcnn"]}
    assert (meta["rounds"], meta["repeats"], meta["warmup"]) == (1, model.CASE.defaults["repeats"],
                                                                model.CASE.defaults["warmup"])
    assert "| chunked (32 MiB) | 100 | 1333x800 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _benchmark_tool().main(["dcn", "--condinst-weights", weights])
    assert "--condinst-weights is an option of the model case" in capsys.readouterr().err
