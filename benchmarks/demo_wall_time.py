"""Wall time of `forecasting-pipeline demo` on the embedded default, from an empty FP_HOME.

Runs the demo twice (cold: new embedded PostgreSQL, schema, Dagster tables; warm: everything
exists, so the second run measures re-execution) and checks the second adds no rows.
Writes benchmarks/results/demo_wall_time.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "demo_wall_time.json"
CLI = [sys.executable, "-m", "forecasting_pipeline.cli"]


def _run(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([*CLI, *args], env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, done.stdout


def _prediction_rows(home: Path) -> int:
    done = subprocess.run(
        [
            "psql",
            "-h",
            str(home / "pgdata"),
            "-U",
            "postgres",
            "-tAc",
            "SELECT count(*) FROM forecasting.predictions",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout.strip())


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="fp-bench-"))
    home.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("FP_DATABASE_URL", "DAGSTER_HOME")}
    env["FP_HOME"] = str(home)
    try:
        cold, output = _run(["demo"], env)
        rows_after_first = _prediction_rows(home)
        warm, _ = _run(["demo"], env)
        rows_after_second = _prediction_rows(home)
    finally:
        subprocess.run([*CLI, "db", "stop"], env=env, check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    result = {
        "what": "forecasting-pipeline demo (default settings: NHITS max_steps=300, 2 hourly series)",
        "cold_s": round(cold, 1),
        "warm_s": round(warm, 1),
        "prediction_rows_after_first": rows_after_first,
        "prediction_rows_after_second": rows_after_second,
        "cpus": os.cpu_count(),
        "demo_output_tail": output.splitlines()[-12:],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
