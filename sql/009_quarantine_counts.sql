-- Quarantined rows per reason, kept by the statement that quarantines them (storage/staging.py),
-- in the same transaction: the metrics exporter reads these few rows every scrape instead of
-- counting the quarantine table, and a quarantine still being written is counted exactly when
-- it commits.
CREATE TABLE forecasting.quarantine_counts (
    reason     text PRIMARY KEY,
    rows       bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO forecasting.quarantine_counts (reason, rows)
SELECT reason, count(*) FROM forecasting.quarantine GROUP BY reason;
