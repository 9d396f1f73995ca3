# Images for the forecasting pipeline. Two build targets:
#
#   mlflow  small MLflow tracking server (backend store in PostgreSQL, artifacts proxied)
#             docker build --target mlflow -t forecasting-mlflow .
#   app     the Dagster code server / webserver / daemon image (default: last stage)
#             docker build -t forecasting-pipeline .
#
# Both run as unprivileged users. Secrets are never baked in: they come from the
# environment at run time (see docker-compose.yml and .env.example).

# --------------------------------------------------------------------------- mlflow
FROM python:3.11-slim AS mlflow

ARG MLFLOW_VERSION=3.17.2

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN pip install --no-cache-dir "mlflow==${MLFLOW_VERSION}" "psycopg2-binary>=2.9"

# /mlartifacts is created here, owned by the runtime user, so that an empty named
# volume mounted on it inherits that ownership.
RUN groupadd --system --gid 10002 mlflow \
 && useradd --system --uid 10002 --gid mlflow --create-home --home-dir /home/mlflow \
        --shell /usr/sbin/nologin mlflow \
 && mkdir -p /mlartifacts \
 && chown mlflow:mlflow /mlartifacts

USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
# docker-compose.yml passes the full command line; this default serves a local
# SQLite store, which is only useful for a quick smoke test of the image.
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", \
     "--artifacts-destination", "/mlartifacts", "--serve-artifacts"]

# --------------------------------------------------------------------------- app
FROM python:3.11-slim AS app

# Optional: install torch from another index before the project's dependencies,
# e.g. --build-arg TORCH_INDEX_URL=<PyTorch CPU wheel index URL> for a
# CPU-only image. Empty (the default) keeps PyPI's Linux wheel, which is the CUDA
# build a GPU host wants. Keep TORCH_VERSION equal to the pin in pyproject.toml
# (a "+cpu" local version still satisfies the "==" pin).
ARG TORCH_INDEX_URL=""
ARG TORCH_VERSION=2.13.0
# Optional extras of pyproject.toml, comma-separated: `kubernetes` (dagster-k8s, for
# FP_EXECUTOR=k8s) and `s3` (s3fs, for FP_STORAGE_URI=s3://...), e.g. --build-arg EXTRAS=kubernetes,s3.
ARG EXTRAS=""

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    DAGSTER_HOME=/opt/dagster/home \
    FP_HOME=/var/lib/forecasting

RUN groupadd --system --gid 10001 dagster \
 && useradd --system --uid 10001 --gid dagster --create-home --home-dir /home/dagster \
        --shell /usr/sbin/nologin dagster

WORKDIR /opt/dagster/app

RUN if [ -n "${TORCH_INDEX_URL}" ]; then \
        pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"; \
    fi

# Dependencies first, against a stub package, so this (large) layer is rebuilt only
# when pyproject.toml or README.md change, not on every source edit.
COPY pyproject.toml README.md ./
RUN mkdir -p forecasting_pipeline \
 && touch forecasting_pipeline/__init__.py \
 && pip install --no-cache-dir -e ".${EXTRAS:+[${EXTRAS}]}" \
 && rm -rf forecasting_pipeline

# The project itself. The editable install keeps sql/ next to the package, so the
# migrations are found at /opt/dagster/app/sql.
COPY forecasting_pipeline/ forecasting_pipeline/
COPY sql/ sql/
COPY dagster.yaml workspace.yaml ./
COPY docker/workspace.yaml docker/workspace.yaml
RUN pip install --no-cache-dir --no-deps -e .

# DAGSTER_HOME holds the instance config; DAGSTER_HOME/storage (compute logs, local
# artifacts) and FP_HOME are mounted as shared named volumes by docker-compose.yml,
# so they are created here with the runtime user's ownership. lightning_logs/ is the
# only place under the (root-owned, read-only) code tree the runtime user may write:
# PyTorch Lightning defaults to the working directory for its logs and checkpoints.
RUN mkdir -p "${DAGSTER_HOME}/storage" "${FP_HOME}" /opt/dagster/app/lightning_logs \
 && cp dagster.yaml "${DAGSTER_HOME}/dagster.yaml" \
 && chown -R dagster:dagster "${DAGSTER_HOME}" "${FP_HOME}" /opt/dagster/app/lightning_logs

USER dagster
EXPOSE 3000 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "forecasting_pipeline.definitions"]
