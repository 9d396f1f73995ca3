-- Incremental ingestion: a manifest of landed files, a staging area that holds each validated
-- batch until a run accepts it, an audit of restated values, per-cell content versions and the
-- results of the data-quality checks.

-- Any series id is kept as it is; the partition key is derived from it (readable, collision-free).
ALTER TABLE forecasting.series
    ADD COLUMN partition_key text,
    ADD COLUMN freq_reason   text,  -- why no frequency could be inferred (too short, irregular)
    ADD COLUMN attributes    jsonb NOT NULL DEFAULT '{}'::jsonb;
UPDATE forecasting.series SET partition_key = series_id WHERE partition_key IS NULL;
ALTER TABLE forecasting.series ALTER COLUMN partition_key SET NOT NULL;
CREATE UNIQUE INDEX series_partition_key_idx ON forecasting.series (partition_key);

-- One row per version of a landed file. A file is parsed and validated once, when it is staged.
CREATE TABLE forecasting.landed_files (
    file_id          bigserial PRIMARY KEY,
    path             text NOT NULL,
    file_name        text NOT NULL,
    size_bytes       bigint NOT NULL,
    modified_at      timestamptz,
    content_hash     text NOT NULL,
    file_format      text,
    column_mapping   jsonb NOT NULL DEFAULT '{}'::jsonb,
    status           text NOT NULL CHECK (status IN ('staged', 'ingested', 'held', 'rejected')),
    reason           text,      -- why a file was rejected or held
    warnings         jsonb NOT NULL DEFAULT '[]'::jsonb,
    rows_read        bigint NOT NULL DEFAULT 0,
    rows_accepted    bigint NOT NULL DEFAULT 0,
    rows_quarantined bigint NOT NULL DEFAULT 0,
    first_ts         timestamp,
    last_ts          timestamp,
    series_count     integer NOT NULL DEFAULT 0,
    series_ids       text[] NOT NULL DEFAULT '{}',
    staged_at        timestamptz NOT NULL DEFAULT now(),
    ingested_at      timestamptz,
    batch_id         text,      -- files staged together are checked together
    dagster_run_id   text,      -- the run that accepted the file's rows
    CHECK (status = 'rejected' OR rows_read = rows_accepted + rows_quarantined)
);
CREATE INDEX landed_files_hash_idx ON forecasting.landed_files (content_hash);
CREATE INDEX landed_files_status_idx ON forecasting.landed_files (status) WHERE status IN ('staged', 'held');

-- Validated rows waiting for the `raw_observations` run of their cell; deleted once accepted.
-- Windows are not stored: a cell is a (series, time range). No indexes: the table only holds
-- what is pending, every read of it is a scan joined to a handful of cells, and a COPY of
-- millions of rows runs at twice the speed without index maintenance.
CREATE TABLE forecasting.staged_observations (
    file_id    bigint NOT NULL,  -- landed_files; no foreign key: its per-row check tripled COPY time
    line       bigint NOT NULL,
    series_id  text NOT NULL,
    ts         timestamp NOT NULL,
    y          double precision NOT NULL,
    drivers    jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Observations are only ever written from staged rows, whose series are registered in the same
-- transaction: the per-row foreign-key check and the unused window index tripled the cost of
-- accepting millions of rows.
ALTER TABLE forecasting.observations ADD COLUMN file_id bigint;
ALTER TABLE forecasting.observations DROP CONSTRAINT observations_series_id_fkey;
DROP INDEX forecasting.observations_window_idx;

-- Quarantined rows now say which landed file version and line they came from.
ALTER TABLE forecasting.quarantine
    ADD COLUMN file_id bigint REFERENCES forecasting.landed_files (file_id),
    ADD COLUMN line    bigint;
CREATE INDEX quarantine_file_idx ON forecasting.quarantine (file_id);

-- The old value of every restated observation, with where the new one came from.
CREATE TABLE forecasting.observation_revisions (
    revision_id    bigserial PRIMARY KEY,
    series_id      text NOT NULL,
    ts             timestamp NOT NULL,
    window_key     text NOT NULL,
    old_y          double precision NOT NULL,
    new_y          double precision NOT NULL,
    old_drivers    jsonb NOT NULL,
    new_drivers    jsonb NOT NULL,
    old_source     text NOT NULL,
    new_file_id    bigint REFERENCES forecasting.landed_files (file_id),
    new_source     text NOT NULL,
    dagster_run_id text NOT NULL,
    revised_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX observation_revisions_series_idx ON forecasting.observation_revisions (series_id, ts);

-- Content fingerprint of each series × window cell, and of each window's whole history; these
-- are the Dagster data versions that make downstream partitions stale when data changes.
CREATE TABLE forecasting.cell_versions (
    series_id      text NOT NULL,
    window_key     text NOT NULL,
    rows           bigint NOT NULL,
    hash_sum       numeric NOT NULL,  -- sum of the rows' hashes: updated from changed rows only
    content_hash   text NOT NULL,
    dagster_run_id text NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (series_id, window_key)
);

-- One row per expectation per landed batch (the files staged together), checked as landed.
CREATE TABLE forecasting.data_quality_results (
    result_id           bigserial PRIMARY KEY,
    batch_id            text NOT NULL,
    check_name          text NOT NULL,
    expectation         text NOT NULL,
    blocking            boolean NOT NULL,
    success             boolean NOT NULL,
    evaluated           bigint NOT NULL,
    unexpected          bigint NOT NULL,
    unexpected_fraction double precision NOT NULL,
    details             jsonb NOT NULL DEFAULT '{}'::jsonb,
    file_ids            bigint[] NOT NULL DEFAULT '{}',
    checked_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (batch_id, check_name)
);
CREATE INDEX data_quality_results_files_idx ON forecasting.data_quality_results USING gin (file_ids);

-- Windows whose cells changed since their history was last versioned: `ingest` versions every
-- window from the earliest one here, then clears them, so a run killed in between is finished
-- by the next ingest instead of leaving a window's history version behind its data.
CREATE TABLE forecasting.history_pending (
    window_key text PRIMARY KEY,
    marked_at  timestamptz NOT NULL DEFAULT now()
);
