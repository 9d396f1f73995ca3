-- Automation: the new-data sensor's view of the landing folder, the retraining cascade's queue,
-- requests the sensors made, forecast accuracy, drift decisions and failed runs.

-- Every path the new-data sensor has looked at, with the size and modification time it had and
-- the manifest entry its content matched. A tick stats the folder and hashes only paths whose
-- size or time moved: thousands of settled files cost one directory scan and one query.
CREATE TABLE forecasting.landed_paths (
    path          text PRIMARY KEY,
    size_bytes    bigint NOT NULL,
    modified_ns   bigint NOT NULL,
    content_hash  text,
    file_id       bigint,
    seen_at       timestamptz NOT NULL DEFAULT now()
);

-- Cells whose observations changed and whose downstream has not been requested yet. A row is
-- claimed by one cascade request; a change landing after the claim re-queues the cell.
CREATE TABLE forecasting.cascade_queue (
    series_id   text NOT NULL,
    window_key  text NOT NULL,
    request_id  text,
    queued_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (series_id, window_key)
);
CREATE INDEX cascade_queue_request_idx ON forecasting.cascade_queue (request_id);

-- What a sensor asked Dagster for (one asset backfill each), so a restarted daemon re-submits
-- what it had not submitted and never submits anything twice.
CREATE TABLE forecasting.automation_requests (
    request_id   text PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('cascade', 'drift')),
    reason       text NOT NULL,
    windows      text[] NOT NULL DEFAULT '{}',
    series_ids   text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    submitted_at timestamptz,
    backfill_id  text
);
CREATE INDEX automation_requests_open_idx ON forecasting.automation_requests (kind) WHERE submitted_at IS NULL;

-- Every stored forecast (each candidate model, each origin) scored against the actuals of one
-- later window; `champion` marks the model that was the series' champion at that origin.
CREATE TABLE forecasting.forecast_accuracy (
    series_id       text NOT NULL,
    window_key      text NOT NULL,   -- window of the actuals
    cutoff          timestamp NOT NULL,  -- forecast origin: the last observation it saw
    model_name      text NOT NULL,
    origin_window   text NOT NULL,   -- window whose run made the forecast
    model_version   text NOT NULL,
    champion        boolean NOT NULL,
    points          integer NOT NULL,
    mae             double precision NOT NULL,
    rmse            double precision NOT NULL,
    smape           double precision,
    mase            double precision,  -- MAE over the series' scale at the origin (its backtest denominator)
    coverage_80     double precision,  -- of the model's own intervals
    coverage_95     double precision,
    backtest_mase   double precision,  -- what the origin window's backtest measured for the model
    dagster_run_id  text NOT NULL,
    scored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (series_id, window_key, cutoff, model_name)
);
CREATE INDEX forecast_accuracy_window_idx ON forecasting.forecast_accuracy (window_key);

-- Each degradation the drift sensor acted on: once per series and scored window.
CREATE TABLE forecasting.drift_events (
    series_id      text NOT NULL,
    window_key     text NOT NULL,   -- newest scored window of the rolling error
    rolling_mase   double precision NOT NULL,
    backtest_mase  double precision NOT NULL,
    ratio          double precision NOT NULL,
    threshold      double precision NOT NULL,
    windows_scored integer NOT NULL,
    request_id     text NOT NULL REFERENCES forecasting.automation_requests (request_id),
    detected_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (series_id, window_key)
);

-- Every failed run, as the run-failure sensor saw it.
CREATE TABLE forecasting.run_failures (
    dagster_run_id  text PRIMARY KEY,
    job_name        text NOT NULL,
    partition_range text,
    failed_steps    text[] NOT NULL DEFAULT '{}',
    message         text NOT NULL,
    tags            jsonb NOT NULL DEFAULT '{}'::jsonb,
    failed_at       timestamptz NOT NULL DEFAULT now()
);
