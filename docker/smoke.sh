#!/usr/bin/env bash
# End-to-end smoke test of the docker-compose stack, on a host with a Docker engine.
#
#   docker/smoke.sh                  # build, start, run the bundled data through the daemon, check, stop
#   KEEP=1 docker/smoke.sh           # the same, but leave the stack running to look around
#   GPU=1 docker/smoke.sh            # add docker-compose.gpu.yml (NVIDIA Container Toolkit needed)
#
# What it does, in order:
#   1. creates .env from .env.example with random POSTGRES_PASSWORD and RABBITMQ_PASSWORD when
#      there is no .env (and adds a random RABBITMQ_PASSWORD to an older .env without one);
#   2. validates the compose files (`docker-compose config -q`);
#   3. `docker-compose up -d --build` under its own project name (forecasting-smoke), so its
#      containers and volumes are not those of a deployment of this checkout;
#   4. waits until postgres, mlflow, rabbitmq, code-server, webserver, daemon and the two Celery
#      workers (worker-cpu, worker-gpu) report healthy;
#   5. lands the bundled dataset (epf_fr_be: hourly prices of two markets) in the landing folder
#      of the code-server container and lets the automation do the rest: the daemon's
#      new_data_sensor stages it and requests the ingest runs, the retraining cascade submits
#      one asset backfill that studies, trains, backtests and publishes. On a fresh deployment
#      the first file decides the date calendar, so the script reloads the code location through
#      the webserver's GraphQL API once the calendar exists (the sensor's tick log asks for the
#      same), which also proves the webserver talks to the code server;
#   6. waits for published forecasts, fails on any row in forecasting.run_failures;
#   7. checks the webserver's /server_info, MLflow's /health and its model registry, lists the
#      runs through GraphQL and runs the CLI inside the image (leaderboard, champion history);
#   8. prints where to look, then `docker-compose down --volumes` unless KEEP=1.
#
# Settings (environment variables):
#   KEEP=1             leave the stack running at the end (and after a failure).
#   GPU=1              also use docker-compose.gpu.yml.
#   COMPOSE            the compose command (default: docker-compose, else `docker compose`).
#   COMPOSE_PROJECT_NAME  project name (default forecasting-smoke). Volumes are removed at the
#                      end only under the default name, never under one you chose.
#   FP_PRESET          preset of the automated runs; default: the value in .env, else `fast`
#                      (the compose default `medium` takes much longer on a CPU).
#   UP_TIMEOUT         seconds to wait for healthy services (default 900).
#   SMOKE_TIMEOUT      seconds to wait for published forecasts (default 3600).
#   TORCH_INDEX_URL    as in .env.example: a CPU-only torch wheel index builds a much smaller
#                      image on a host without a GPU.
# The smoke runs with FP_AUTOMATION=on whatever .env says: the daemon's sensors are what it tests.
set -euo pipefail

cd "$(dirname "$0")/.."

KEEP="${KEEP:-0}"
GPU="${GPU:-0}"
UP_TIMEOUT="${UP_TIMEOUT:-900}"
SMOKE_TIMEOUT="${SMOKE_TIMEOUT:-3600}"
DEFAULT_PROJECT=forecasting-smoke
PROJECT="${COMPOSE_PROJECT_NAME:-$DEFAULT_PROJECT}"
SERVICES=(postgres mlflow rabbitmq code-server webserver daemon worker-cpu worker-gpu metrics prometheus grafana)
LOCATION=forecasting_pipeline
DATASET_FILE=epf_fr_be.csv

log() { printf '[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() {
  log "FAILED: $*" >&2
  exit 1
}

# The value of a variable: the environment, else .env (docker-compose's own precedence), else $2.
setting() {
  local name=$1 fallback=$2 line
  if [[ -n "${!name:-}" ]]; then
    printf '%s' "${!name}"
    return
  fi
  line=$(grep -E "^[[:space:]]*${name}=" .env 2>/dev/null | tail -n 1 || true)
  if [[ -n "$line" ]]; then
    line=${line#*=}
    line=${line%\"}
    line=${line#\"}
    printf '%s' "$line"
  else
    printf '%s' "$fallback"
  fi
}

# --------------------------------------------------------------------------- tools
if [[ -n "${COMPOSE:-}" ]]; then
  read -r -a compose_cmd <<<"$COMPOSE"
elif command -v docker-compose >/dev/null 2>&1; then
  compose_cmd=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
else
  die "neither docker-compose nor the docker compose plugin is installed"
fi
command -v curl >/dev/null 2>&1 || die "curl is needed to check the webserver and MLflow"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"

compose=("${compose_cmd[@]}" -p "$PROJECT" -f docker-compose.yml)
if [[ "$GPU" == 1 ]]; then
  compose+=(-f docker-compose.gpu.yml)
fi

# --------------------------------------------------------------------------- .env
# Hex only: the passwords are placed verbatim in database and broker URLs (see .env.example).
random_password() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
if [[ ! -f .env ]]; then
  sed -e "s/^POSTGRES_PASSWORD=.*/POSTGRES_PASSWORD=$(random_password)/" \
    -e "s/^RABBITMQ_PASSWORD=.*/RABBITMQ_PASSWORD=$(random_password)/" \
    -e "s/^GRAFANA_ADMIN_PASSWORD=.*/GRAFANA_ADMIN_PASSWORD=$(random_password)/" .env.example >.env
  chmod 600 .env
  log "created .env from .env.example with random POSTGRES_PASSWORD, RABBITMQ_PASSWORD and GRAFANA_ADMIN_PASSWORD"
fi
if ! grep -qE '^RABBITMQ_PASSWORD=' .env; then
  printf 'RABBITMQ_PASSWORD=%s\n' "$(random_password)" >>.env
  log "added a random RABBITMQ_PASSWORD to .env (the Celery broker is new)"
fi
if ! grep -qE '^GRAFANA_ADMIN_PASSWORD=' .env; then
  printf 'GRAFANA_ADMIN_PASSWORD=%s\n' "$(random_password)" >>.env
  log "added a random GRAFANA_ADMIN_PASSWORD to .env (the monitoring stack is new)"
fi
grep -qE '^POSTGRES_PASSWORD=change-me$' .env && die ".env still has the placeholder POSTGRES_PASSWORD"
grep -qE '^RABBITMQ_PASSWORD=change-me$' .env && die ".env still has the placeholder RABBITMQ_PASSWORD"
grep -qE '^GRAFANA_ADMIN_PASSWORD=change-me$' .env && die ".env still has the placeholder GRAFANA_ADMIN_PASSWORD"

export FP_AUTOMATION=on
FP_PRESET=$(setting FP_PRESET fast)
export FP_PRESET
bind=$(setting FP_BIND_ADDRESS 127.0.0.1)
[[ "$bind" == 0.0.0.0 ]] && bind=127.0.0.1
web="http://${bind}:$(setting DAGSTER_WEBSERVER_PORT 3000)"
mlflow="http://${bind}:$(setting MLFLOW_PORT 5000)"

# --------------------------------------------------------------------------- teardown
started=0
finish() {
  local status=$?
  trap - EXIT
  if ((status != 0)) && ((started)); then
    log "state of the services:"
    "${compose[@]}" ps || true
    log "last log lines of each service:"
    "${compose[@]}" logs --tail=60 || true
  fi
  if ((started)) && [[ "$KEEP" != 1 ]]; then
    if [[ "$PROJECT" == "$DEFAULT_PROJECT" ]]; then
      log "docker-compose down --volumes (project $PROJECT)"
      "${compose[@]}" down --volumes || true
    else
      log "docker-compose down (project $PROJECT; its volumes are kept)"
      "${compose[@]}" down || true
    fi
  elif ((started)); then
    log "KEEP=1: the stack keeps running; stop it with: ${compose[*]} down --volumes"
  fi
  if ((status == 0)); then
    log "smoke test passed"
  else
    log "smoke test failed (exit status $status)" >&2
  fi
  exit "$status"
}
trap finish EXIT

# --------------------------------------------------------------------------- helpers
sql() {
  "${compose[@]}" exec -T postgres psql -U forecasting -d forecasting -tAX -v ON_ERROR_STOP=1 -c "$1"
}

in_code_server() {
  "${compose[@]}" exec -T code-server "$@"
}

graphql() {
  curl -fsS --max-time 60 -H 'Content-Type: application/json' --data "$1" "$web/graphql"
}

health() {
  local id
  id=$("${compose[@]}" ps -q "$1" 2>/dev/null || true)
  if [[ -z "$id" ]]; then
    printf 'missing'
    return
  fi
  docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id"
}

wait_healthy() {
  local deadline=$((SECONDS + UP_TIMEOUT)) service state pending
  while true; do
    pending=()
    for service in "${SERVICES[@]}"; do
      state=$(health "$service")
      case "$state" in
        running/healthy) ;;
        exited/* | dead/* | missing) die "service $service is $state" ;;
        *) pending+=("$service=$state") ;;
      esac
    done
    if ((${#pending[@]} == 0)); then
      return
    fi
    ((SECONDS < deadline)) || die "services not healthy after ${UP_TIMEOUT}s: ${pending[*]}"
    log "waiting for ${pending[*]}"
    sleep 10
  done
}

# --------------------------------------------------------------------------- 1-4: up
log "validating the compose files"
"${compose[@]}" config -q

log "building and starting the stack (project $PROJECT, preset $FP_PRESET, automation on)"
started=1
"${compose[@]}" up -d --build
wait_healthy
log "all services healthy"

curl -fsS --max-time 10 "$web/server_info" >/dev/null || die "$web/server_info does not answer"
[[ "$(curl -fsS --max-time 10 "$mlflow/health")" == OK ]] || die "$mlflow/health does not say OK"

# --------------------------------------------------------------------------- 5: land the data
log "landing the bundled dataset in the code server's landing folder"
in_code_server python -c '
from forecasting_pipeline.datasets import DEFAULT_DATASET, land_bundled_dataset
from forecasting_pipeline.settings import load_settings
print(land_bundled_dataset(DEFAULT_DATASET, load_settings().landing_dir))
'

file_status() {
  sql "SELECT status FROM forecasting.landed_files WHERE file_name = '${DATASET_FILE}' ORDER BY file_id DESC LIMIT 1"
}

reload_location() {
  local reply
  # shellcheck disable=SC2016 # $name is a GraphQL variable, not a shell one
  reply=$(graphql '{"query": "mutation Reload($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) { __typename ... on WorkspaceLocationEntry { locationOrLoadError { __typename ... on PythonError { message } } } ... on PythonError { message } } }", "variables": {"name": "'"$LOCATION"'"}}')
  grep -q '"RepositoryLocation"' <<<"$reply" || die "reloading the code location failed: $reply"
  log "reloaded code location $LOCATION"
}

deadline=$((SECONDS + SMOKE_TIMEOUT))
log "waiting for the new-data sensor to stage ${DATASET_FILE}"
until [[ -n "$(file_status)" ]]; do
  ((SECONDS < deadline)) || die "the new-data sensor did not stage ${DATASET_FILE}"
  sleep 10
done
# shellcheck disable=SC2016 # FP_HOME is expanded in the container
until in_code_server sh -c 'test -f "$FP_HOME/calendar.json"'; do
  ((SECONDS < deadline)) || die "no date calendar was saved"
  sleep 5
done
reload_location

log "waiting for the ingest runs"
last_reload=$SECONDS
while true; do
  status=$(file_status)
  case "$status" in
    ingested) break ;;
    held | rejected) die "${DATASET_FILE} was $status: see forecasting.landed_files and forecasting.data_quality_results" ;;
  esac
  ((SECONDS < deadline)) || die "${DATASET_FILE} still $status"
  if ((SECONDS - last_reload > 300)); then
    reload_location # a code location loaded before the calendar existed sees no windows
    last_reload=$SECONDS
  fi
  sleep 15
done
log "ingested: $(sql 'SELECT count(*) FROM forecasting.observations') observations of $(sql 'SELECT count(*) FROM forecasting.series') series"

# --------------------------------------------------------------------------- 6: forecasts
log "waiting for the retraining cascade to publish forecasts (preset $FP_PRESET)"
while true; do
  failures=$(sql 'SELECT count(*) FROM forecasting.run_failures')
  if ((failures > 0)); then
    sql "SELECT job_name, partition_range, message FROM forecasting.run_failures ORDER BY failed_at" >&2
    die "$failures runs failed"
  fi
  published=$(sql 'SELECT count(DISTINCT series_id) FROM forecasting.published_forecasts')
  ((published > 0)) && break
  ((SECONDS < deadline)) || die "no forecasts published after ${SMOKE_TIMEOUT}s"
  sleep 30
done
log "published forecasts of $published series"

# --------------------------------------------------------------------------- 7: checks
log "Dagster webserver: $(curl -fsS --max-time 10 "$web/server_info")"
log "runs, as the webserver reports them:"
graphql '{"query": "{ runsOrError(limit: 50) { __typename ... on Runs { results { jobName status } } } }"}' |
  grep -oE '"jobName": *"[^"]*", *"status": *"[^"]*"' | sort | uniq -c || die "GraphQL runs query failed"

registry=$(curl -fsS --max-time 30 "$mlflow/api/2.0/mlflow/registered-models/search?max_results=100")
grep -qE '"name": *"NHITS-hourly"' <<<"$registry" || die "MLflow has no registered model NHITS-hourly"
log "MLflow registry: $(grep -oE '"name": *"[^"]*-hourly"' <<<"$registry" | sort -u | tr '\n' ' ')"

log "Prometheus: the exporter's target and what it scraped"
prometheus="http://127.0.0.1:9090"
scrape_deadline=$((SECONDS + 180))
until curl -fsS --max-time 10 "$prometheus/api/v1/query?query=fp_rows_ingested_total" | grep -q '"value"'; do
  ((SECONDS < scrape_deadline)) || die "Prometheus has not scraped fp_rows_ingested_total from the exporter"
  sleep 15
done
log "  $(curl -fsS --max-time 10 "$prometheus/api/v1/query?query=up" | grep -oE '"job":"[^"]*"|"value":\[[^]]*\]' | tr '\n' ' ')"
log "  rules: $(curl -fsS --max-time 10 "$prometheus/api/v1/rules" | grep -oE '"name":"[A-Za-z]+"' | sort -u | tr '\n' ' ')"
curl -fsS --max-time 10 "http://127.0.0.1:3001/api/health" >/dev/null || die "Grafana is not answering"

log "CLI inside the image:"
in_code_server forecasting-pipeline leaderboard
in_code_server forecasting-pipeline champion history FR

# --------------------------------------------------------------------------- 8: where to look
cat <<EOF

Where to look:
  Dagster UI      $web   (Runs, Overview → Backfills, Automation, Assets)
  MLflow UI       $mlflow   (experiments; Models: NHITS-hourly and the statistical families)
  Grafana         http://127.0.0.1:3001   (admin, GRAFANA_ADMIN_PASSWORD: dashboard "forecasting-pipeline")
  Prometheus      http://127.0.0.1:9090   (Alerts: the rules of deploy/monitoring/alerts.yml)
  SQL             ${compose[*]} exec postgres psql -U forecasting -d forecasting
                  e.g. SELECT * FROM forecasting.published_forecasts LIMIT 5;
  Logs            ${compose[*]} logs -f daemon code-server worker-cpu worker-gpu
EOF
