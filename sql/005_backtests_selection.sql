-- Backtests, leaderboard, champions and published forecasts.

-- One row per (series, window, candidate, fold cutoff, step) of a rolling-origin backtest. A
-- candidate is a catalog family or an ensemble of them; every fold keeps its own cutoff so any
-- row can be checked against the data that existed then.
ALTER TABLE forecasting.backtest_folds DROP CONSTRAINT IF EXISTS backtest_folds_pkey;
ALTER TABLE forecasting.backtest_folds
    ADD COLUMN step          integer NOT NULL CHECK (step >= 1),
    ADD COLUMN partition_key text NOT NULL,
    ADD COLUMN freq_group    text NOT NULL,
    ADD COLUMN candidate     text NOT NULL DEFAULT 'family' CHECK (candidate IN ('family', 'ensemble')),
    ADD COLUMN model_version text NOT NULL,
    ADD COLUMN model_id      bigint REFERENCES forecasting.models (model_id) ON DELETE SET NULL,
    ADD CONSTRAINT backtest_folds_key PRIMARY KEY (series_id, window_key, model_name, cutoff, step);
CREATE INDEX backtest_folds_run_idx ON forecasting.backtest_folds (dagster_run_id);

-- Backtest metrics: per series (series_id set, step null), per horizon step of a frequency group
-- (series_id null, step set) and per group overall (both null).
CREATE TABLE forecasting.backtest_metrics (
    window_key     text NOT NULL,
    freq_group     text NOT NULL,
    series_id      text,
    model_name     text NOT NULL,
    step           integer,
    metric         text NOT NULL,
    value          double precision,
    dagster_run_id text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (window_key, freq_group, series_id, model_name, step, metric)
);
CREATE INDEX backtest_metrics_series_idx ON forecasting.backtest_metrics (series_id, window_key);

-- Conformal quantiles of scaled backtest residuals per (window, group, model, step, level), and
-- each series' scale: a published interval is yhat ± quantile × scale.
CREATE TABLE forecasting.interval_calibration (
    window_key     text NOT NULL,
    freq_group     text NOT NULL,
    model_name     text NOT NULL,
    step           integer NOT NULL,
    level          integer NOT NULL,
    quantile       double precision NOT NULL,
    samples        integer NOT NULL,
    -- 'conformal', or 'native' where the model's own intervals covered within tolerance on
    -- the held-out fold; heldout_coverage is the chosen method's coverage there (percent).
    method           text NOT NULL CHECK (method IN ('conformal', 'native')),
    heldout_coverage double precision,
    dagster_run_id text NOT NULL,
    PRIMARY KEY (window_key, freq_group, model_name, step, level)
);
CREATE TABLE forecasting.series_scales (
    series_id      text NOT NULL REFERENCES forecasting.series (series_id),
    window_key     text NOT NULL,
    scale          double precision NOT NULL,
    dagster_run_id text NOT NULL,
    PRIMARY KEY (series_id, window_key)
);

-- Ensembles are candidates like the families: a models row per (ensemble, group, window) and
-- the members each series' combination used.
ALTER TABLE forecasting.models DROP CONSTRAINT IF EXISTS models_scope_check;
ALTER TABLE forecasting.models
    ADD CONSTRAINT models_scope_check CHECK (scope IN ('global', 'local', 'ensemble'));
CREATE TABLE forecasting.ensemble_members (
    window_key     text NOT NULL,
    series_id      text NOT NULL REFERENCES forecasting.series (series_id),
    ensemble       text NOT NULL,
    member         text NOT NULL,
    dagster_run_id text NOT NULL,
    PRIMARY KEY (window_key, series_id, ensemble, member)
);

-- What model_selection proposed per series and window, and why. A proposal becomes a champion
-- only through the blocking check and publication.
CREATE TABLE forecasting.selection_decisions (
    series_id        text NOT NULL REFERENCES forecasting.series (series_id),
    window_key       text NOT NULL,
    freq_group       text NOT NULL,
    metric           text NOT NULL,
    margin           double precision NOT NULL,
    champion         text,
    challenger       text NOT NULL,
    champion_score   double precision,
    challenger_score double precision NOT NULL,
    candidates       integer NOT NULL,
    decision         text NOT NULL CHECK (decision IN ('first', 'promote', 'keep', 'replace')),
    reason           text NOT NULL,
    dagster_run_id   text NOT NULL,
    decided_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (series_id, window_key)
);

-- Every change of a series' champion: first choice, promotion of a challenger, or a restore.
-- The current champion is the newest event; nothing is ever overwritten.
CREATE TABLE forecasting.champion_events (
    event_id        bigserial PRIMARY KEY,
    series_id       text NOT NULL REFERENCES forecasting.series (series_id),
    model_name      text NOT NULL,
    previous_model  text,
    window_key      text NOT NULL,
    event           text NOT NULL CHECK (event IN ('first', 'promote', 'restore')),
    metric          text,
    score           double precision,
    previous_score  double precision,
    reason          text NOT NULL,
    dagster_run_id  text,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX champion_events_series_idx ON forecasting.champion_events (series_id, event_id DESC);

CREATE VIEW forecasting.current_champions AS
SELECT DISTINCT ON (series_id) series_id, model_name, window_key, event, recorded_at
FROM forecasting.champion_events
ORDER BY series_id, event_id DESC;

-- Per series and model, its rank on the window's backtest for every metric (1 = best).
CREATE VIEW forecasting.leaderboard AS
SELECT m.window_key, m.freq_group, m.series_id, m.model_name, m.metric, m.value,
       rank() OVER (PARTITION BY m.window_key, m.series_id, m.metric ORDER BY m.value) AS rank
FROM forecasting.backtest_metrics m
WHERE m.series_id IS NOT NULL AND m.step IS NULL AND m.value IS NOT NULL;

-- What consumers read: each series' champion forecast from its newest origin, with calibrated
-- intervals and the provenance of the model that made it. Every candidate's forecasts stay in
-- forecasting.predictions.
CREATE TABLE forecasting.published_forecasts (
    series_id       text NOT NULL REFERENCES forecasting.series (series_id),
    window_key      text NOT NULL,
    partition_key   text NOT NULL,
    model_name      text NOT NULL,
    model_version   text NOT NULL,
    model_id        bigint REFERENCES forecasting.models (model_id) ON DELETE SET NULL,
    freq_group      text NOT NULL,
    cutoff          timestamp NOT NULL,
    step            integer NOT NULL CHECK (step >= 1),
    ds              timestamp NOT NULL,
    yhat            double precision NOT NULL,
    lo_80           double precision,
    hi_80           double precision,
    lo_95           double precision,
    hi_95           double precision,
    interval_method text NOT NULL,
    dagster_run_id  text NOT NULL,
    published_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (series_id, window_key, step)
);

-- Backtests record what they cost like tuning and training do.
ALTER TABLE forecasting.resource_stats DROP CONSTRAINT IF EXISTS resource_stats_stage_check;
ALTER TABLE forecasting.resource_stats
    ADD CONSTRAINT resource_stats_stage_check CHECK (stage IN ('tuning', 'training', 'backtest'));
