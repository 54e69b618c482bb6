"""The measuring process of the benchmarks, started by
:func:`condseg.benchmark.harness.run_in_subprocess`: ``python -m condseg.benchmark.worker
SPEC REPEATS WARMUP`` measures the spec (JSON) in this fresh process and prints the result
as one line of JSON."""
import json
import sys

from condseg.benchmark import CASES
from condseg.benchmark.harness import measure

if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    print(json.dumps(measure(CASES[spec["case"]], spec, int(sys.argv[2]), int(sys.argv[3]))))
