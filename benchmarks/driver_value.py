"""Do the drivers the studies choose improve the champions? The bundled replay, twice.

Runs `bundled_accuracy.py` once with the default driver rule (drivers that pass the Granger/FDR
screen are model inputs) and once with rule "none" (no drivers), each in its own fresh
database, on the same windows and settings, and compares: the champions' out-of-sample MASE and
sMAPE on the day after each cutoff, and the group-level backtest MASE of every candidate.

    python benchmarks/driver_value.py [--max-steps 200] [--trials 2] [--windows 2016-10-16 2016-10-23]

Results: benchmarks/results/driver_value.json (and one bundled_accuracy-style file per rule).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import RESULTS, write_result

RULES = ("screened", "none")


def _replay(rule: str, args: argparse.Namespace) -> dict:
    name = f"driver_value_{rule}"
    subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("bundled_accuracy.py")),
            "--max-steps",
            str(args.max_steps),
            "--trials",
            str(args.trials),
            "--driver-rule",
            rule,
            "--result-name",
            name,
            "--windows",
            *args.windows,
        ],
        check=True,
    )
    return json.loads((RESULTS / f"{name}.json").read_text())


def _model(result: dict, model: str) -> dict:
    return next((row for row in result["overall"] if row["model"] == model), {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--windows", nargs="+", default=["2016-10-16", "2016-10-23"])
    args = parser.parse_args()
    runs = {rule: _replay(rule, args) for rule in RULES}
    comparison = {
        rule: {
            "drivers_used": sorted({d["driver"] for d in run["drivers"] if d["selected"] in ("t", True)}),
            "champion_mase": _model(run, "champion").get("mase"),
            "champion_smape": _model(run, "champion").get("smape"),
            "nhits_mase": _model(run, "NHITS").get("mase"),
            "champions": run["champions"],
            "backtest_mase_by_candidate": run["backtest_mase_by_candidate"],
        }
        for rule, run in runs.items()
    }
    with_drivers, without = comparison["screened"], comparison["none"]
    verdict = (
        "the screened drivers improve the champions out of sample"
        if (with_drivers["champion_mase"] or 0) < (without["champion_mase"] or 0)
        else "the screened drivers do not improve the champions out of sample"
    )
    write_result(
        "driver_value",
        {
            "dataset": "epf_fr_be (bundled)",
            "windows": args.windows,
            "max_steps": args.max_steps,
            "trials": args.trials,
            "verdict": verdict,
            "by_rule": comparison,
        },
    )


if __name__ == "__main__":
    main()
