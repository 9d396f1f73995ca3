-- Domain schema of forecasting-pipeline. Lives beside Dagster's own storage (schema public) in
-- one database, so predictions join to Dagster's runs and event log by run id.
-- Applied once by `forecasting-pipeline db upgrade`; later changes are new numbered files.

CREATE SCHEMA IF NOT EXISTS optuna;  -- Optuna keeps its own alembic_version: separate schema.

CREATE TABLE forecasting.datasets (
    dataset_id   text PRIMARY KEY,
    description  text,
    source       text,
    licence      text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE forecasting.series (
    series_id    text PRIMARY KEY,
    dataset_id   text REFERENCES forecasting.datasets (dataset_id),
    freq         text,
    first_ts     timestamp,
    last_ts      timestamp,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Dagster-side lineage for the domain rows: which code produced a run.
CREATE TABLE forecasting.runs (
    dagster_run_id text PRIMARY KEY,
    job_name       text NOT NULL,
    code_version   text NOT NULL,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE forecasting.observations (
    series_id      text NOT NULL REFERENCES forecasting.series (series_id),
    ts             timestamp NOT NULL,
    y              double precision NOT NULL,
    drivers        jsonb NOT NULL DEFAULT '{}'::jsonb,
    window_key     text NOT NULL,
    source         text NOT NULL,
    dagster_run_id text NOT NULL,
    ingested_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (series_id, ts)
);
CREATE INDEX observations_window_idx ON forecasting.observations (window_key, series_id);

-- Rows refused at ingestion, kept with the reason instead of being dropped.
CREATE TABLE forecasting.quarantine (
    quarantine_id  bigserial PRIMARY KEY,
    fingerprint    text NOT NULL UNIQUE,
    series_id      text,
    raw_ts         text,
    raw_row        jsonb NOT NULL,
    reason         text NOT NULL,
    source         text NOT NULL,
    dagster_run_id text,  -- NULL when refused before any run (e.g. an unusable series id)
    quarantined_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE forecasting.models (
    model_id       bigserial PRIMARY KEY,
    model_name     text NOT NULL,
    model_version  text NOT NULL,
    scope          text NOT NULL CHECK (scope IN ('global', 'local')),
    window_key     text NOT NULL,
    artifact_uri   text,
    params         jsonb NOT NULL DEFAULT '{}'::jsonb,
    device         text,
    dagster_run_id text NOT NULL,
    trained_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model_name, model_version)
);

CREATE TABLE forecasting.metrics (
    metric_id      bigserial PRIMARY KEY,
    model_id       bigint REFERENCES forecasting.models (model_id) ON DELETE CASCADE,
    series_id      text,
    window_key     text NOT NULL,
    metric         text NOT NULL,
    value          double precision NOT NULL,
    dagster_run_id text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (model_id, series_id, window_key, metric)
);

CREATE TABLE forecasting.backtest_folds (
    series_id      text NOT NULL,
    window_key     text NOT NULL,
    model_name     text NOT NULL,
    fold           integer NOT NULL,
    cutoff         timestamp NOT NULL,
    ds             timestamp NOT NULL,
    y              double precision,
    yhat           double precision,
    lo_80          double precision,
    hi_80          double precision,
    lo_95          double precision,
    hi_95          double precision,
    dagster_run_id text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (series_id, window_key, model_name, fold, ds)
);

-- One row per forecast step; a re-run of a partition replaces its rows (same unique key).
CREATE TABLE forecasting.predictions (
    prediction_id  bigserial PRIMARY KEY,
    series_id      text NOT NULL REFERENCES forecasting.series (series_id),
    window_key     text NOT NULL,
    partition_key  text NOT NULL,
    model_name     text NOT NULL,
    model_version  text NOT NULL,
    cutoff         timestamp NOT NULL,
    step           integer NOT NULL CHECK (step >= 1),
    ds             timestamp NOT NULL,
    yhat           double precision NOT NULL,
    lo_80          double precision,
    hi_80          double precision,
    lo_95          double precision,
    hi_95          double precision,
    dagster_run_id text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (series_id, window_key, model_name, step)
);
CREATE INDEX predictions_run_idx ON forecasting.predictions (dagster_run_id);
