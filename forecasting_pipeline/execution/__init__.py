"""Where steps execute: in the CLI's process, on Celery workers, or as Kubernetes jobs."""
