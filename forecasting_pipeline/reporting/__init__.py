"""Pictures and documents for people: PNG plots for the Dagster UI and the self-contained HTML report."""
