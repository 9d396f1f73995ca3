"""Names of the Celery queues steps are routed to; importable without Celery or Dagster."""

CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
QUEUES = (CPU_QUEUE, GPU_QUEUE)
