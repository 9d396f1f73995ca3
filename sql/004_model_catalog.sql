-- Many model families per window: frequency groups, forecast history, tuning studies and the
-- resources each training used.

-- Forecast history: a forecast is identified by its series, model family, origin (the last
-- observed timestamp it was made from) and step. Re-forecasting the same origin replaces its
-- rows; a later origin adds rows beside the earlier ones, so every forecast can be scored.
ALTER TABLE forecasting.predictions
    DROP CONSTRAINT IF EXISTS predictions_series_id_window_key_model_name_step_key;
ALTER TABLE forecasting.predictions
    ADD COLUMN model_id   bigint REFERENCES forecasting.models (model_id),
    ADD COLUMN freq_group text,
    ADD CONSTRAINT predictions_origin_key UNIQUE (series_id, model_name, cutoff, step);
CREATE INDEX predictions_window_idx ON forecasting.predictions (window_key, series_id);

-- What consumers read: each series' newest forecast per model family.
CREATE VIEW forecasting.current_predictions AS
SELECT p.*
FROM forecasting.predictions p
WHERE p.cutoff = (
    SELECT max(q.cutoff) FROM forecasting.predictions q
    WHERE q.series_id = p.series_id AND q.model_name = p.model_name
);

-- A model version is one (family, frequency group, window, run), with what it was made from.
ALTER TABLE forecasting.models
    ADD COLUMN freq_group   text,
    ADD COLUMN data_version text,
    ADD COLUMN code_version text,
    ADD COLUMN series_count integer;

-- Series a window could not forecast, with why (too short, constant, irregular).
CREATE TABLE forecasting.forecast_exclusions (
    series_id      text NOT NULL REFERENCES forecasting.series (series_id),
    window_key     text NOT NULL,
    freq_group     text,
    reason         text NOT NULL,
    detail         text NOT NULL,
    dagster_run_id text NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (series_id, window_key)
);

-- One hyper-parameter study per (family, frequency group, window); trials live in schema optuna.
CREATE TABLE forecasting.experiments (
    study_name        text PRIMARY KEY,
    model_name        text NOT NULL,
    freq_group        text NOT NULL,
    window_key        text NOT NULL,
    trial_budget      integer NOT NULL,
    finished_trials   integer NOT NULL,
    best_value        double precision,
    best_params       jsonb NOT NULL DEFAULT '{}'::jsonb,
    warm_started_from text,
    dagster_run_id    text NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX experiments_window_idx ON forecasting.experiments (window_key, model_name, freq_group);

-- What each tuning or training step cost, on which device.
CREATE TABLE forecasting.resource_stats (
    stat_id         bigserial PRIMARY KEY,
    dagster_run_id  text NOT NULL,
    stage           text NOT NULL CHECK (stage IN ('tuning', 'training')),
    model_name      text NOT NULL,
    freq_group      text NOT NULL,
    window_key      text NOT NULL,
    model_id        bigint REFERENCES forecasting.models (model_id) ON DELETE SET NULL,
    series_count    integer NOT NULL,
    wall_seconds    double precision NOT NULL,
    peak_rss_mb     double precision NOT NULL,
    device          text NOT NULL,
    gpu_peak_mb     double precision,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resource_stats_run_idx ON forecasting.resource_stats (dagster_run_id);

-- Which drivers of a dataset are known ahead (future exogenous) and which only historically.
ALTER TABLE forecasting.datasets
    ADD COLUMN future_drivers text[] NOT NULL DEFAULT '{}';
