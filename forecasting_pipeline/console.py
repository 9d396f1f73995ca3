"""The terminal side of the CLI: exit codes, errors that say what to do, colours, progress.

One home for what a user (or a script calling `forecasting-pipeline`) sees: the exit codes are
defined once here and listed in the top-level `--help`; an expected failure prints one red
`error:` line and one yellow `hint:` line instead of a traceback; long work shows a bar on a
terminal and one plain line per event in a log or a pipe. Colours follow click (off when the
output is not a terminal) and the NO_COLOR convention (https://no-color.org).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from enum import IntEnum
from typing import IO, TYPE_CHECKING, Any, ClassVar

import click

if TYPE_CHECKING:
    import polars as pl


class ExitCode(IntEnum):
    """What `forecasting-pipeline` returns; scripts branch on these, so they never change meaning."""

    OK = 0
    RUN_FAILED = 1
    USAGE = 2
    CONFIGURATION = 3
    INPUT_REJECTED = 4
    DATABASE_UNREACHABLE = 5
    INTERRUPTED = 130


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.RUN_FAILED: "a pipeline run or step failed, or the command found nothing to act on",
    ExitCode.USAGE: "usage error: unknown command or option, bad or missing value",
    ExitCode.CONFIGURATION: "configuration error: a bad FP_* environment variable or settings file",
    ExitCode.INPUT_REJECTED: "input data rejected: files refused, rejected or held, nothing accepted",
    ExitCode.DATABASE_UNREACHABLE: "the PostgreSQL database cannot be reached or refused the connection",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


def exit_codes_help() -> str:
    """The exit-code table as a click epilog (`\\b` keeps click from re-wrapping it)."""
    lines = [f"  {int(code):>3}  {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items()]
    return "\b\nExit codes:\n" + "\n".join(lines)


def colour_wanted() -> bool | None:
    """False when NO_COLOR is set to anything non-empty; otherwise None: click decides (TTY or not)."""
    return False if os.environ.get("NO_COLOR") else None


class CliError(click.ClickException):
    """An expected failure: what went wrong and what to do next, under a documented exit code."""

    exit_code: ClassVar[int] = int(ExitCode.RUN_FAILED)
    default_hint: ClassVar[str] = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint if hint is not None else self.default_hint

    def show(self, file: IO[Any] | None = None) -> None:
        stream = file or click.get_text_stream("stderr")
        click.secho(
            f"error: {self.format_message()}", file=stream, fg="red", bold=True, color=self.show_color
        )
        if self.hint:
            click.secho(f"hint: {self.hint}", file=stream, fg="yellow", color=self.show_color)


class RunFailedError(CliError):
    exit_code = int(ExitCode.RUN_FAILED)
    default_hint = (
        "open the run named above in `forecasting-pipeline ui` (Runs) for the failed step's logs, "
        "fix the cause and run the command again"
    )


class ConfigurationError(CliError):
    exit_code = int(ExitCode.CONFIGURATION)
    default_hint = "fix or unset the variable named above (README: Configuration) and run again"


class InputRejectedError(CliError):
    exit_code = int(ExitCode.INPUT_REJECTED)
    default_hint = (
        "give a long table (CSV, CSV.GZ or Parquet) with a series id, a timestamp and a numeric "
        "target; name other columns with --id-column, --time-column and --target-column"
    )


class DatabaseUnreachableError(CliError):
    exit_code = int(ExitCode.DATABASE_UNREACHABLE)
    default_hint = (
        "check that PostgreSQL runs and that FP_DATABASE_URL "
        "(postgresql+psycopg2://user:password@host:5432/db) names it; unset FP_DATABASE_URL to use "
        "the embedded server under FP_HOME"
    )


class InterruptError(CliError):
    exit_code = int(ExitCode.INTERRUPTED)
    default_hint = (
        "what finished is kept; run the same command again when you are ready (a run left STARTED "
        "is marked failed when the next command starts)"
    )


# Words of a driver's error that mean the server was never reached, or turned us away.
_UNREACHABLE = (
    "could not connect",
    "connection refused",
    "connection to server",
    "could not translate host name",
    "timeout expired",
    "server closed the connection",
    "password authentication failed",
    "no password supplied",
    "does not exist",
    "name or service not known",
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def known_failure(exc: BaseException) -> click.ClickException | None:
    """The CLI error for an exception the user can act on, or None for a bug (keeps its traceback).

    Modules are looked up, not imported: an exception of a library that was never imported
    cannot be one of its errors, and importing Dagster only to say so costs seconds.
    """
    from forecasting_pipeline.settings import SettingsError

    if isinstance(exc, KeyboardInterrupt):
        return InterruptError("interrupted")
    if isinstance(exc, SettingsError):
        return ConfigurationError(str(exc))
    operations = sys.modules.get("forecasting_pipeline.operations")
    if operations is not None and isinstance(exc, operations.PipelineInterruptedError):
        return InterruptError(str(exc))
    if operations is not None and isinstance(exc, operations.PipelineRunError):
        return RunFailedError(str(exc))
    dagster_errors = sys.modules.get("dagster._core.errors")
    if dagster_errors is not None and isinstance(exc, dagster_errors.DagsterExecutionInterruptedError):
        return InterruptError("interrupted while a run was executing")
    sqlalchemy_errors = sys.modules.get("sqlalchemy.exc")
    lost = (
        _cause_of_type(exc, (sqlalchemy_errors.OperationalError, sqlalchemy_errors.InterfaceError))
        if sqlalchemy_errors is not None
        else None
    )
    if lost is not None:
        # Also found beneath another library's error: Dagster's storage gives up on a database
        # that went away mid-run with its own exception, raised from the driver's.
        message = _first_line(lost.orig or lost)
        if any(words in message.lower() for words in _UNREACHABLE):
            return DatabaseUnreachableError(f"database unreachable: {message}")
    return None


def _cause_of_type(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> Any:
    """`exc` or the first exception of its cause chain that is one of `kinds`, else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def pipeline_failure(exc: Exception) -> click.ClickException:
    """The CLI error of a run that failed (exit 1) or that Ctrl-C stopped (exit 130)."""
    return known_failure(exc) or RunFailedError(str(exc))


class PipelineGroup(click.Group):
    """The top-level group: NO_COLOR honoured, expected failures mapped to their exit codes.

    Sub-groups run inside this group's `invoke`, so one translation covers every command.
    """

    def main(self, *args: Any, **extra: Any) -> Any:
        if colour_wanted() is False:
            extra.setdefault("color", False)
        return super().main(*args, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            failure = known_failure(exc)
            if failure is None:
                raise
            raise failure from exc


# --- colours -------------------------------------------------------------------------------------

STATUS_COLOURS = {"ok": "green", "warn": "yellow", "fail": "red"}


def style_expr(expr: pl.Expr, **style: Any) -> pl.Expr:
    """`expr` wrapped in the ANSI codes of click.style(**style): colours a whole column of lines
    in one polars expression; click.echo strips them again when colour is off."""
    import polars as pl

    before, after = click.style("\0", **style).split("\0")
    return pl.concat_str([pl.lit(before), expr, pl.lit(after)])


def echo_lines(lines: pl.DataFrame | pl.Series) -> None:
    """Print a one-column frame (or a series) of formatted lines at once."""
    series = lines.to_series() if hasattr(lines, "to_series") else lines
    if series.len():
        click.echo("\n".join(series.to_list()))


def fixed(expr: pl.Expr, decimals: int = 2) -> pl.Expr:
    """A number as text with exactly `decimals` decimals (polars casts drop trailing zeros)."""
    import polars as pl

    scale = 10**decimals
    scaled = (expr.cast(pl.Float64) * scale).round(0).cast(pl.Int64)
    whole = (scaled.abs() // scale).cast(pl.String)
    fraction = (scaled.abs() % scale).cast(pl.String).str.pad_start(decimals, "0")
    sign = pl.when(scaled < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    return pl.concat_str([sign, whole, pl.lit("."), fraction]).fill_null("-")


def heading(text: str) -> None:
    """A table's title: bold on a terminal."""
    click.secho(text, bold=True)


def examples(*lines: str) -> str:
    """A command's epilog of example invocations, kept verbatim by click (`\b`)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


# --- progress ------------------------------------------------------------------------------------


def _is_tty(stream: IO[Any]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _BarAwareStream:
    """sys.stdout while a bar is drawn: lines printed by anyone (Dagster step lines, click.echo)
    land above the bar, which is redrawn under them, instead of after it on the same line."""

    def __init__(self, stream: IO[str], progress: Progress) -> None:
        self._stream = stream
        self._progress = progress

    def write(self, text: str) -> int:
        with self._progress.lock:
            self._progress.clear_bar()
            written = self._stream.write(text)
            if text.endswith("\n"):
                self._progress.draw_bar()
            return written

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class Progress:
    """Counted work (files, runs, steps) shown as it happens.

    On a terminal: one bar, redrawn in place, with the notes and other output scrolling above
    it. Elsewhere (a pipe, a CI log, the tests): one plain line per event and no carriage
    returns, so logs stay readable and greppable. Callable with a message, so it goes wherever
    a plain message callback goes; `operations` drives it through its `Tracker` protocol.
    """

    def __init__(self, prefix: str = "", *, stream: IO[str] | None = None, tty: bool | None = None) -> None:
        self.prefix = prefix
        self._stream = stream or sys.stdout
        self._tty = _is_tty(self._stream) if tty is None else tty
        self.lock = threading.RLock()
        self._label = ""
        self._unit = ""
        self._total = 0
        self._done = 0
        self._detail = ""
        self._started = 0.0
        self._active = False
        self._drawn = False
        self._drawn_width = 0
        self._saved_stdout: Any = None

    # Tracker protocol ----------------------------------------------------------------------
    def __call__(self, message: str) -> None:
        """A note: a line of its own, above the bar when one is drawn."""
        self._line(f"{self.prefix}{message}")

    def start(self, total: int, label: str, unit: str = "") -> None:
        with self.lock:
            if self._active:
                self.finish()
            self._label, self._unit, self._total = label, unit, max(0, total)
            self._done, self._detail, self._started = 0, "", time.perf_counter()
            self._active = True
            if self._tty:
                self._take_stdout()
                self.draw_bar()
            else:
                self._plain(f"{self.prefix}{label}: 0/{self._total} {unit}".rstrip())

    def advance(self, n: int = 1, detail: str = "", status: str = "ok") -> None:
        """`n` more units done; a detail that is not "ok" stays on screen as its own line."""
        with self.lock:
            if not self._active:
                return
            self._done = min(self._total, self._done + n) if self._total else self._done + n
            self._detail = detail
            count = f"{self._done}/{self._total}" + (f" {self._unit}" if self._unit else "")
            if not self._tty:
                self._plain(
                    f"{self.prefix}{self._label}: {count}" + (f", {detail}" if detail else ""), status
                )
                return
            if status != "ok" and detail:
                self._line(f"{self.prefix}{self._label}: {detail}", status)
            else:
                self.clear_bar()
                self.draw_bar()

    def finish(self, summary: str = "") -> None:
        """Close the bar (it stays as one finished line) and print the summary, if any."""
        with self.lock:
            if not self._active:
                return
            self._active = False
            if self._tty:
                self.clear_bar()
                self._release_stdout()
                line = f"{self.prefix}{self._label}: {self._done}/{self._total} {self._unit}".rstrip()
                self._plain(line + (f", {summary}" if summary else ""))
            elif summary:
                self._plain(f"{self.prefix}{self._label}: {summary}")

    # drawing -------------------------------------------------------------------------------
    def _plain(self, text: str, status: str = "ok") -> None:
        colour = STATUS_COLOURS.get(status) if status != "ok" else None
        click.echo(click.style(text, fg=colour) if colour else text, file=self._stream)

    def _line(self, text: str, status: str = "ok") -> None:
        with self.lock:
            self.clear_bar()
            self._plain(text, status)
            self.draw_bar()

    def clear_bar(self) -> None:
        # Spaces, not an erase-line escape: with NO_COLOR the terminal gets no escape sequence at all.
        if self._drawn:
            self._stream.write("\r" + " " * self._drawn_width + "\r")
            self._drawn = False

    def draw_bar(self) -> None:
        """One line, never wider than the terminal: a wrapped line could not be redrawn in place."""
        if not (self._tty and self._active) or self._drawn:
            return
        room = shutil.get_terminal_size((100, 20)).columns - 1
        elapsed = time.perf_counter() - self._started
        tail = f" {self._done}/{self._total} {self._unit} {elapsed:.0f}s".rstrip()
        head = f"{self.prefix}{self._label} "[: max(0, room - len(tail) - 10)]
        size = max(0, min(24, room - len(head) - len(tail)))
        filled = size * min(self._done, self._total) // (self._total or 1)
        bar = click.style("█" * filled, fg="green") + click.style("·" * (size - filled), dim=True)
        left = room - len(head) - size - len(tail) - 2
        detail = f"  {self._detail[:left]}" if self._detail and left > 8 else ""
        line = f"{head}{bar}{tail}{detail}"
        click.echo(line, file=self._stream, nl=False)
        self._stream.flush()
        self._drawn = True
        self._drawn_width = len(click.unstyle(line))

    def _take_stdout(self) -> None:
        if self._saved_stdout is None and self._stream is sys.stdout:
            self._saved_stdout = sys.stdout
            sys.stdout = _BarAwareStream(self._stream, self)  # type: ignore[assignment]

    def _release_stdout(self) -> None:
        if self._saved_stdout is not None:
            sys.stdout = self._saved_stdout
            self._saved_stdout = None
