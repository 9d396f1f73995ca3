"""How long loading `forecasting_pipeline.definitions` takes in a fresh interpreter.

Every step subprocess, sensor tick and UI reload pays this, so heavy libraries are imported
inside assets. Writes benchmarks/results/definitions_load.json.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 7
RESULTS = Path(__file__).parent / "results" / "definitions_load.json"
PROBE = "import forecasting_pipeline.definitions as d; d.defs.resolve_asset_graph()"


def main() -> None:
    subprocess.run([sys.executable, "-c", PROBE], check=True)  # warm the OS file cache once
    timings = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", PROBE], check=True)
        timings.append(time.perf_counter() - started)
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE + "; import sys; print(sorted({'neuralforecast','torch',"
            "'great_expectations','mlflow','statsforecast'} & set(sys.modules)))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    result = {
        "what": "fresh-interpreter import of forecasting_pipeline.definitions + asset graph resolve",
        "runs": RUNS,
        "median_s": round(statistics.median(timings), 3),
        "max_s": round(max(timings), 3),
        "heavy_modules_loaded": heavy,
        "python": platform.python_version(),
        "cpus": __import__("os").cpu_count(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
