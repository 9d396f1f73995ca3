"""A data scientist's first day with the CLI: every failure says what to do under a documented
exit code, every command and option explains itself, colours stay off where they should, and
long work shows its progress as lines in a log and as a bar on a terminal."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import click
import polars as pl
from click.testing import CliRunner

from forecasting_pipeline import operations
from forecasting_pipeline.cli import main
from forecasting_pipeline.console import EXIT_CODE_MEANINGS, ExitCode, Progress
from forecasting_pipeline_tests.cli_runs import run_cli as _cli
from forecasting_pipeline_tests.cli_runs import user_env as _env
from forecasting_pipeline_tests.conftest import _scratch_dir

ANSI = re.compile(r"\x1b\[")
UNREACHABLE_URL = "postgresql+psycopg2://x@127.0.0.1:1/x"


def _in_terminal(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal, as in an interactive shell."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "forecasting_pipeline.cli", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closes when the process exits
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=60), b"".join(chunks).decode("utf-8", errors="replace")


def _daily_csv(path: Path, store: str) -> Path:
    pl.DataFrame(
        {
            "store": [store] * 28,
            "day": [f"2024-03-{d:02d}" for d in range(1, 29)],
            "sales": [float(10 + d) for d in range(1, 29)],
        }
    ).write_csv(path)
    return path


COLUMNS = ("--id-column", "store", "--time-column", "day", "--target-column", "sales")


def _assert_expected_failure(result: subprocess.CompletedProcess, code: ExitCode, *phrases: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr[-2000:])


def test_each_expected_failure_exits_with_its_code_and_says_what_to_do(fresh_database, tmp_path):
    home = _scratch_dir("fp-ux-")
    url = fresh_database()

    usage = _cli(_env(home, url), "ingest", "--no-such-option")
    _assert_expected_failure(usage, ExitCode.USAGE, "No such option", "--help")

    configuration = _cli(_env(home, url, FP_DATE_CADENCE="fortnightly"), "db", "upgrade")
    _assert_expected_failure(
        configuration, ExitCode.CONFIGURATION, "error: FP_DATE_CADENCE='fortnightly'", "hint: fix or unset"
    )

    unreachable = _cli(_env(home, UNREACHABLE_URL), "leaderboard")
    _assert_expected_failure(
        unreachable, ExitCode.DATABASE_UNREACHABLE, "error: database unreachable", "hint:", "FP_DATABASE_URL"
    )

    # A file in the wrong encoding is rejected and set aside; a missing one is refused.
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(("unique_id,ds,y\n" + "caf\u00e9,2016-01-01,1\n").encode("latin-1"))
    rejected = _cli(_env(home, url), "ingest", str(latin1), str(tmp_path / "missing.csv"))
    _assert_expected_failure(
        rejected, ExitCode.INPUT_REJECTED, "error: nothing accepted", "hint: give a long"
    )
    assert "latin1.csv: rejected" in rejected.stdout and "missing.csv: not landed" in rejected.stdout
    assert "0 staged" in rejected.stdout and "2 rejected" in rejected.stdout
    shutil.rmtree(home, ignore_errors=True)


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


EXAMPLED = [
    ("demo",),
    ("ingest",),
    ("forecast",),
    ("leaderboard",),
    ("drivers",),
    ("champion",),
    ("champion", "restore"),
    ("champion", "history"),
    ("db", "upgrade"),
    ("backfill",),
    ("ui",),
]


def test_every_command_and_option_explains_itself():
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0
    for code, meaning in EXIT_CODE_MEANINGS.items():
        assert f"{int(code):>3}  {meaning}" in top.output
    commands = dict(_commands(main))
    assert {
        ("demo",),
        ("ingest",),
        ("forecast",),
        ("backfill",),
        ("champion", "history"),
        ("db", "stop"),
    } <= set(commands)
    for path, command in commands.items():
        shown = runner.invoke(main, [*path, "--help"], terminal_width=120)
        assert shown.exit_code == 0, (path, shown.output)
        assert (command.help or "").strip(), path
        for option in (p for p in command.params if isinstance(p, click.Option)):
            assert (option.help or "").strip(), (path, option.name)
            default = option.default
            if isinstance(default, str | int | float) and default != "" and not option.is_flag:
                assert f"[default: {default}" in " ".join(shown.output.split()), (path, option.name)
    for path in EXAMPLED:
        assert "Examples:" in runner.invoke(main, [*path, "--help"]).output, path


def test_colours_on_a_terminal_and_never_with_no_color():
    home = _scratch_dir("fp-ux-colour-")
    coloured, output = _in_terminal(_env(home, UNREACHABLE_URL, FP_DATE_CADENCE="x"), "db", "upgrade")
    assert coloured == ExitCode.CONFIGURATION and "\x1b[31m" in output and "hint:" in output
    plain, output = _in_terminal(
        _env(home, UNREACHABLE_URL, FP_DATE_CADENCE="x", NO_COLOR="1"), "db", "upgrade"
    )
    assert plain == ExitCode.CONFIGURATION and "error: FP_DATE_CADENCE" in output
    assert not ANSI.search(output), output
    shutil.rmtree(home, ignore_errors=True)


def test_ingest_in_a_pipe_prints_one_line_per_event_and_a_summary(fresh_database, tmp_path):
    home = _scratch_dir("fp-ux-ingest-")
    source = _daily_csv(tmp_path / "north.csv", "North")
    result = _cli(_env(home, fresh_database()), "ingest", str(source), *COLUMNS)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    for expected in (
        "staging landed files: 0/1 files",
        "staging landed files: 1/1 files, north.csv: staged: staged 28 of 28 rows (0 quarantined)",
        "ingestion runs: 1/1 runs, windows ",
        "history versions: 1/",
        "files: 1 staged, 0 unchanged, 0 held, 0 rejected; rows: 28 accepted, 0 quarantined",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, result.stdout)
    assert "\r" not in result.stdout and not ANSI.search(result.stdout)
    shutil.rmtree(home, ignore_errors=True)


def test_a_bar_on_a_terminal_keeps_notes_and_failures_above_it():
    screen = io.StringIO()
    progress = Progress("[4/5] ", stream=screen, tty=True)
    progress.start(3, "training", "steps")
    progress("a note")
    progress.advance(1, "training_panel")
    progress.advance(1, "global_models FAILED", "fail")
    progress.finish("run 1234abcd failed")
    progress.advance(1, "after the end is ignored")
    text = screen.getvalue()
    # Each redraw starts at the line's beginning and blanks the previous bar with spaces only.
    assert "\r" in text and not ANSI.search(text)
    kept = [line.split("\r")[-1] for line in text.split("\n") if line.split("\r")[-1]]
    assert kept == [
        "[4/5] a note",
        "[4/5] training: global_models FAILED",
        "[4/5] training: 2/3 steps, run 1234abcd failed",
    ]
    assert sys.stdout is not None and not hasattr(sys.stdout, "_progress")


class _Recorder:
    """A Tracker that keeps what it was told, to compare with what the run did."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def __call__(self, message: str) -> None:
        self.events.append(("note", message))

    def start(self, total: int, label: str, unit: str = "") -> None:
        self.events.append(("start", total, label, unit))

    def advance(self, n: int = 1, detail: str = "", status: str = "ok") -> None:
        self.events.append(("advance", n, detail, status))

    def finish(self, summary: str = "") -> None:
        self.events.append(("finish", summary))


def test_files_runs_and_steps_are_counted_as_they_finish(deployment, instance):
    from forecasting_pipeline.automation import launch

    hours = pl.datetime_range(
        pl.datetime(2016, 10, 2), pl.datetime(2016, 10, 8, 23), "1h", eager=True
    ).dt.strftime("%Y-%m-%d %H:%M:%S")
    frame = pl.concat(
        [
            pl.DataFrame({"unique_id": s, "ds": hours, "y": pl.int_range(hours.len(), eager=True) % 24 + i})
            for i, s in enumerate(("ux-a", "ux-b"))
        ]
    )
    deployment.settings.landing_dir.mkdir(parents=True, exist_ok=True)
    frame.write_csv(deployment.settings.landing_dir / "ux.csv")

    recorder = _Recorder()
    ingested = operations.ingest(instance, deployment, progress=recorder)
    assert ingested.latest_window == "2016-10-02"
    starts = [e for e in recorder.events if e[0] == "start"]
    assert starts[0] == ("start", 1, "staging landed files", "files")
    assert ("start", len(ingested.run_ids) - len(ingested.windows), "ingestion runs", "runs") in starts
    assert ("advance", 1, "ux.csv: staged: staged 336 of 336 rows (0 quarantined)", "ok") in recorder.events

    steps = _Recorder()
    run = operations._execute(
        instance, "history of 2016-10-02", partial(launch.version_history, instance, "2016-10-02"), steps
    )
    assert run.success
    assert steps.events[0] == ("start", 1, "history of 2016-10-02", "steps")
    assert steps.events[1] == ("advance", 1, "observation_history", "ok")
    assert steps.events[2][0] == "finish" and "succeeded" in steps.events[2][1]
    assert len(steps.events) == 3  # each step counted once, whether the poller or the run saw it
