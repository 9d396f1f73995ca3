"""Monitoring: Prometheus metrics of the pipeline, its data and its models (docs/monitoring.md)."""
