-- Where each trained model is tracked in MLflow: its run and its model registry version.
ALTER TABLE forecasting.models
    ADD COLUMN mlflow_run_id    text,
    ADD COLUMN registry_version text;
