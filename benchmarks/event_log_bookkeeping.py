"""Dagster's bookkeeping per partition key: stock PostgreSQL storage against the deployment's.

One run of a trivial series × date asset (its body does nothing) over N keys, on a fresh
database, once with `dagster-postgres`'s storage as shipped and once with the deployment's
`DeploymentPostgresStorage` (`forecasting_pipeline/instance.py`: the run's planned events
written in bulk). Both with DAGSTER_EVENT_BATCH_SIZE=1000, as the deployment sets it. What is
left is the cost every per-series asset pays per key and run, whatever its own work.

Usage: python benchmarks/event_log_bookkeeping.py --keys 1000 10000 --stock-keys 1000
Writes benchmarks/results/event_log_bookkeeping.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from _common import fresh_database, write_result

REPO = Path(__file__).resolve().parents[1]
STORAGE = {
    "stock": "storage:\n  postgres:\n    postgres_url: {url}\n",
    "deployment": (
        "storage:\n  custom:\n    module: forecasting_pipeline.instance\n"
        "    class: DeploymentPostgresStorage\n    config: {{}}\n"
    ),
}
ONE_RUN = """
import sys, time
from dagster import (BackfillPolicy, DagsterInstance, Definitions, DynamicPartitionsDefinition,
                     MaterializeResult, MultiPartitionsDefinition, StaticPartitionsDefinition, asset,
                     define_asset_job)
keys = [f"s{i:05d}" for i in range(int(sys.argv[1]))]
cells = MultiPartitionsDefinition({"series": DynamicPartitionsDefinition(name="series"),
                                   "date": StaticPartitionsDefinition(["2024-01-07"])})
@asset(partitions_def=cells, backfill_policy=BackfillPolicy.single_run())
def cell_asset():
    return MaterializeResult()
definitions = Definitions(assets=[cell_asset], jobs=[define_asset_job("cells", [cell_asset])])
job = definitions.resolve_job_def("cells")
instance = DagsterInstance.get()
instance.add_dynamic_partitions("series", keys)
started = time.perf_counter()
result = job.execute_in_process(instance=instance, tags={
    "dagster/asset_partition_range_start": f"2024-01-07|{keys[0]}",
    "dagster/asset_partition_range_end": f"2024-01-07|{keys[-1]}"})
assert result.success
print(time.perf_counter() - started)
"""


def one_run(storage: str, keys: int) -> float:
    with fresh_database() as url:
        home = Path(tempfile.mkdtemp(prefix="fp-bench-"))
        (home / "dagster.yaml").write_text(
            STORAGE[storage].format(url=url) + "telemetry:\n  enabled: false\n"
        )
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "FP_DATABASE_URL": url,
            "DAGSTER_EVENT_BATCH_SIZE": "1000",
            "PYTHONPATH": str(REPO),
        }
        out = subprocess.run(
            [sys.executable, "-c", ONE_RUN, str(keys)], env=env, capture_output=True, text=True, check=True
        )
        return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--stock-keys", type=int, nargs="+", default=[1000])
    args = parser.parse_args()
    runs = []
    for storage, sizes in (("stock", args.stock_keys), ("deployment", args.keys)):
        for keys in sizes:
            seconds = one_run(storage, keys)
            runs.append(
                {
                    "storage": storage,
                    "keys": keys,
                    "run_s": round(seconds, 2),
                    "ms_per_key": round(1000 * seconds / keys, 2),
                }
            )
    write_result(
        "event_log_bookkeeping",
        {
            "what": "one in-process run of a do-nothing series × date asset over N keys, "
            "PostgreSQL 15 on this host",
            "date": datetime.now().isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
