"""Whether the sensors and the schedule start with the daemon: FP_AUTOMATION, read once."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, DefaultSensorStatus

from forecasting_pipeline.settings import load_settings

AUTOMATION_ON = load_settings().automation_on
SENSOR_STATUS = DefaultSensorStatus.RUNNING if AUTOMATION_ON else DefaultSensorStatus.STOPPED
SCHEDULE_STATUS = DefaultScheduleStatus.RUNNING if AUTOMATION_ON else DefaultScheduleStatus.STOPPED
