-- Feature tables and driver studies: what the drivers do, and which of them the models use.

-- One row per observation: the features of `feature_table` at that timestamp, computed only
-- from the series' own values at or before it. `feature_set` fingerprints the settings that
-- made them, so rows built under other settings are told apart.
CREATE TABLE forecasting.features (
    series_id      text NOT NULL,
    ts             timestamp NOT NULL,
    window_key     text NOT NULL,
    features       jsonb NOT NULL,
    feature_set    text NOT NULL,
    dagster_run_id text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (series_id, ts)
);
CREATE INDEX features_window ON forecasting.features (window_key, series_id);

-- `correlation_study`: target vs driver (kind 'driver', lag 0 with the best lead), the lagged
-- cross-correlation per lead (kind 'lagged') and each series' strongest peers in its
-- frequency group (kind 'cross_series', `other` = peer series id, `rank` 1 = strongest).
CREATE TABLE forecasting.correlations (
    window_key       text NOT NULL,
    freq_group       text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('driver', 'lagged', 'cross_series')),
    series_id        text NOT NULL,
    other            text NOT NULL,
    lag              integer NOT NULL DEFAULT 0,
    pearson          double precision,
    spearman         double precision,
    n                bigint NOT NULL,
    best_lag         integer,
    best_lag_pearson double precision,
    rank             integer,
    dagster_run_id   text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_key, kind, series_id, other, lag)
);

-- `granger_study`: one row per (series, cause, direction) and window. A series that cannot be
-- tested has testable = false and a reason instead of numbers. `adjusted_p` is the
-- Benjamini–Hochberg correction across every testable row of the window.
CREATE TABLE forecasting.granger_tests (
    window_key     text NOT NULL,
    series_id      text NOT NULL,
    partition_key  text NOT NULL,
    freq_group     text,
    cause          text NOT NULL,
    cause_kind     text NOT NULL CHECK (cause_kind IN ('driver', 'peer')),
    direction      text NOT NULL CHECK (direction IN ('driver_to_target', 'target_to_driver')),
    testable       boolean NOT NULL,
    reason         text,
    lag            integer,
    ic             text,
    statistic      double precision,
    p_value        double precision,
    adjusted_p     double precision,
    df_num         double precision,
    df_den         double precision,
    n_obs          bigint,
    diff_target    integer,
    diff_cause     integer,
    stationary     boolean,
    adf_p_target   double precision,
    kpss_p_target  double precision,
    adf_p_cause    double precision,
    kpss_p_cause   double precision,
    dagster_run_id text NOT NULL,
    tested_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_key, series_id, cause, direction),
    CHECK (testable OR reason IS NOT NULL)
);

-- Which drivers each frequency group's models take in a window, and the evidence: written by
-- `training_panel`, read by training and backtests so both use the same inputs.
CREATE TABLE forecasting.driver_selection (
    window_key      text NOT NULL,
    freq_group      text NOT NULL,
    driver          text NOT NULL,
    selected        boolean NOT NULL,
    rule            text NOT NULL,
    series_tested   integer NOT NULL,
    series_passing  integer NOT NULL,
    median_lag      double precision,
    reason          text NOT NULL,
    dagster_run_id  text NOT NULL,
    decided_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_key, freq_group, driver)
);

-- Permutation importance of each feature group on the champions' backtest error (an error
-- model fitted across folds): how much of that error a group explains that the champion missed.
CREATE TABLE forecasting.feature_importances (
    window_key      text NOT NULL,
    freq_group      text NOT NULL,
    feature_group   text NOT NULL,
    features        text[] NOT NULL,
    importance      double precision NOT NULL,
    importance_std  double precision,
    relative        double precision,
    rank            integer NOT NULL,
    baseline_error  double precision NOT NULL,
    model_error     double precision NOT NULL,
    rows            bigint NOT NULL,
    cutoffs         integer NOT NULL,
    method          text NOT NULL DEFAULT 'permutation_error_model',
    dagster_run_id  text NOT NULL,
    computed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_key, freq_group, feature_group)
);
