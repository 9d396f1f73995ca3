"""Model catalog, frequencies and forecast-frame conventions; no Dagster in here."""
