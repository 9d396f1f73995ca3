"""A Dagster logger for the terminal: one short line per asset message and per failed step.

The CLI selects it in run config (`loggers: {progress: {}}`); runs launched from the UI keep
Dagster's default console logger, since only configured loggers are instantiated.
"""

from __future__ import annotations

import logging
import sys

from dagster import InitLoggerContext, logger

# Where Dagster's log manager attaches its metadata to each record (dagster._core.log_manager).
_METADATA_ATTRIBUTE = "dagster_meta"


class _ProgressHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        metadata = getattr(record, _METADATA_ATTRIBUTE, None)
        if not metadata or not metadata.get("step_key"):
            return
        step, event = metadata["step_key"], metadata.get("dagster_event")
        if event is None:
            line = f"      {step}: {metadata.get('orig_message', record.getMessage())}"
        elif event.event_type_value == "STEP_FAILURE":
            line = f"      {step} FAILED: {metadata.get('orig_message', '')}"
        else:
            return
        print(line, file=sys.stdout, flush=True)


@logger(description="Compact progress lines on stdout, used by the forecasting-pipeline CLI.")
def progress_logger(init_context: InitLoggerContext) -> logging.Logger:
    progress = logging.getLogger("forecasting_pipeline.progress")
    progress.setLevel(logging.INFO)
    progress.handlers = [_ProgressHandler()]
    progress.propagate = False
    return progress
