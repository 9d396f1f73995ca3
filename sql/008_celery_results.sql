-- Celery's result backend (FP_EXECUTOR=celery with the deployment's database): its tables
-- `celery_taskmeta` and `celery_tasksetmeta` are created by Celery in this schema, away from
-- Dagster's tables in `public` and the domain tables in `forecasting`.
CREATE SCHEMA IF NOT EXISTS celery;
