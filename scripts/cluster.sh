#!/usr/bin/env bash
# A real Temporal cluster (server v1.32.2 on PostgreSQL), here, without Docker.
#
#   bash scripts/cluster.sh build    # server, sql tool and Web UI server into the cache, once (first build
#                                    # ~10 min); PostgreSQL (apt) when missing
#   bash scripts/cluster.sh setup    # PostgreSQL (apt if missing), private cluster, databases, schemas
#   bash scripts/cluster.sh start    # PostgreSQL + Temporal server, waits for SERVING, namespace
#   bash scripts/cluster.sh ui       # the Web UI server for the running cluster (built by `build`, or here)
#   bash scripts/cluster.sh status
#   bash scripts/cluster.sh stop     # server and PostgreSQL
#
# Environment (defaults in brackets):
#   PERMIT_CHAIN_CACHE [$HOME/.cache/permit-chain]   where the binaries are built
#   PERMIT_CHAIN_CLUSTER_DIR [.data/cluster]          rendered config, pid, logs, PostgreSQL data
#   PERMIT_CHAIN_PG_DIR [$PERMIT_CHAIN_CLUSTER_DIR/pg] PostgreSQL data dir (falls back to
#                        /var/tmp/permit-chain-pg-$CLUSTER_PG_PORT if the postgres user cannot reach it)
#   CLUSTER_PG_PORT [15432]  CLUSTER_PG_USER [temporal]  CLUSTER_PG_PASSWORD [temporal]
#   CLUSTER_FRONTEND_PORT [17233]  (history +1, matching +2, worker +6, http +10,
#                                   membership ports -300, metrics 18000: all overridable below;
#                                   membership ports must be at most 32767, a smallint in PostgreSQL)
#   CLUSTER_UI_PORT [frontend + 1000: 18233]
#   CLUSTER_NAMESPACE [default]  CLUSTER_RETENTION [72h]
#   CLUSTER_DYNAMIC_CONFIG_EXTRA []  a YAML file of dynamic config keys added to deploy/temporal/dynamicconfig.yaml's
#                                    (keys it does not set): the cluster test's short drainage timings
set -euo pipefail

TEMPORAL_VERSION=v1.32.2
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${PERMIT_CHAIN_CACHE:-$HOME/.cache/permit-chain}
BIN_DIR=$CACHE/temporal-server-$TEMPORAL_VERSION
SERVER_BIN=$BIN_DIR/server
SQL_BIN=$BIN_DIR/sql

CLUSTER_DIR=${PERMIT_CHAIN_CLUSTER_DIR:-$ROOT/.data/cluster}
case $CLUSTER_DIR in /*) ;; *) CLUSTER_DIR=$ROOT/$CLUSTER_DIR ;; esac

PG_HOST=127.0.0.1
PG_PORT=${CLUSTER_PG_PORT:-15432}
PG_USER=${CLUSTER_PG_USER:-temporal}
PG_PASSWORD=${CLUSTER_PG_PASSWORD:-temporal}
FRONTEND_PORT=${CLUSTER_FRONTEND_PORT:-17233}
HISTORY_PORT=${CLUSTER_HISTORY_PORT:-$((FRONTEND_PORT + 1))}
MATCHING_PORT=${CLUSTER_MATCHING_PORT:-$((FRONTEND_PORT + 2))}
WORKER_PORT=${CLUSTER_WORKER_PORT:-$((FRONTEND_PORT + 6))}
FRONTEND_HTTP_PORT=${CLUSTER_FRONTEND_HTTP_PORT:-$((FRONTEND_PORT + 10))}
FRONTEND_MEMBERSHIP_PORT=${CLUSTER_FRONTEND_MEMBERSHIP_PORT:-$((FRONTEND_PORT - 300))}
HISTORY_MEMBERSHIP_PORT=${CLUSTER_HISTORY_MEMBERSHIP_PORT:-$((HISTORY_PORT - 300))}
MATCHING_MEMBERSHIP_PORT=${CLUSTER_MATCHING_MEMBERSHIP_PORT:-$((MATCHING_PORT - 300))}
WORKER_MEMBERSHIP_PORT=${CLUSTER_WORKER_MEMBERSHIP_PORT:-$((WORKER_PORT - 300))}
METRICS_PORT=${CLUSTER_METRICS_PORT:-18000}
NAMESPACE=${CLUSTER_NAMESPACE:-default}
RETENTION=${CLUSTER_RETENTION:-72h}
ADDRESS=127.0.0.1:$FRONTEND_PORT

# The Web UI: the standalone UI server, at the UI version the Temporal CLI's dev server (scripts/setup.sh) ships.
UI_VERSION=v2.54.1
UI_BIN=$CACHE/temporal-ui-server-$UI_VERSION/ui-server
UI_PORT=${CLUSTER_UI_PORT:-$((FRONTEND_PORT + 1000))}

TEMPORAL_CLI=${TEMPORAL_CLI:-$ROOT/.tools/temporal-cli/bin/temporal}
if [[ ! -x $TEMPORAL_CLI ]]; then TEMPORAL_CLI=$(command -v temporal || true); fi

SERVER_PID=$CLUSTER_DIR/temporal.pid
SERVER_LOG=$CLUSTER_DIR/temporal.log
RENDERED_CONFIG=$CLUSTER_DIR/temporal.yaml
RENDERED_DYNCONFIG=$CLUSTER_DIR/dynamicconfig.yaml
UI_PID=$CLUSTER_DIR/ui.pid
UI_LOG=$CLUSTER_DIR/ui.log

log() { printf 'cluster: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# --- PostgreSQL -------------------------------------------------------------------------------

pg_bindir() {
  if [[ -n ${PG_BINDIR:-} ]]; then
    echo "$PG_BINDIR"
    return
  fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n $d ]]; then echo "$d"; else dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)"; fi
}

# Run a PostgreSQL server-side command as the postgres user when we are root (initdb and pg_ctl
# refuse root), from a directory it can read.
as_pg() {
  if [[ $EUID -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

pg_dir() {
  if [[ -n ${PERMIT_CHAIN_PG_DIR:-} ]]; then
    echo "$PERMIT_CHAIN_PG_DIR"
    return
  fi
  if [[ -f $CLUSTER_DIR/pg-dir ]]; then
    cat "$CLUSTER_DIR/pg-dir"
    return
  fi
  local d=$CLUSTER_DIR/pg
  if [[ $EUID -eq 0 ]] && ! (cd / && runuser -u postgres -- test -x "$CLUSTER_DIR"); then
    d=/var/tmp/permit-chain-pg-$PG_PORT
  fi
  echo "$d"
}

pg_install() {
  if [[ -x $(pg_bindir)/initdb ]]; then return; fi
  [[ $EUID -eq 0 ]] || die "PostgreSQL is not installed; run as root or: apt-get install -y postgresql"
  log "installing PostgreSQL with apt"
  # Keep Debian from creating and starting its default 'main' cluster on a fresh install.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/permit-chain.conf
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  [[ -x $(pg_bindir)/initdb ]] || die "initdb not found after installing postgresql"
}

pg_running() {
  local dir
  dir=$(pg_dir)
  [[ -f $dir/PG_VERSION ]] && as_pg "$(pg_bindir)/pg_ctl" -D "$dir" status >/dev/null 2>&1
}

pg_start() {
  local dir bindir
  dir=$(pg_dir)
  bindir=$(pg_bindir)
  [[ -f $dir/PG_VERSION ]] || die "no PostgreSQL cluster in $dir; run: bash scripts/cluster.sh setup"
  if pg_running; then return; fi
  log "starting PostgreSQL on $PG_HOST:$PG_PORT ($dir)"
  as_pg "$bindir/pg_ctl" -D "$dir" -l "$dir/postgresql.log" -w -t 60 \
    -o "-p $PG_PORT -k /tmp -c listen_addresses=$PG_HOST -c max_connections=100" start >/dev/null
}

pg_stop() {
  local dir
  dir=$(pg_dir)
  if pg_running; then
    log "stopping PostgreSQL ($dir)"
    as_pg "$(pg_bindir)/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
  fi
}

psql_super() {
  as_pg "$(pg_bindir)/psql" -h /tmp -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"
}

pg_setup() {
  pg_install
  mkdir -p "$CLUSTER_DIR"
  local dir bindir
  dir=$(pg_dir)
  bindir=$(pg_bindir)
  echo "$dir" >"$CLUSTER_DIR/pg-dir"
  if [[ ! -f $dir/PG_VERSION ]]; then
    log "initdb $dir"
    mkdir -p "$dir"
    if [[ $EUID -eq 0 ]]; then chown postgres: "$dir"; fi
    chmod 700 "$dir"
    # Loopback only, trust auth: a private development cluster.
    as_pg "$bindir/initdb" -D "$dir" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  pg_start
  if [[ $(psql_super -c "select 1 from pg_roles where rolname = '$PG_USER'") != 1 ]]; then
    log "creating role $PG_USER"
    psql_super -c "create role \"$PG_USER\" login createdb password '$PG_PASSWORD'"
  fi
}

# --- Temporal ---------------------------------------------------------------------------------

module_dir() {
  local mod
  mod=$(GOTOOLCHAIN=auto go env GOMODCACHE 2>/dev/null || echo "$HOME/go/pkg/mod")
  echo "$mod/go.temporal.io/server@$TEMPORAL_VERSION"
}

cmd_build() {
  # PostgreSQL too, so that a fresh machine has everything once `build` is done (setup would install it anyway).
  pg_install
  mkdir -p "$BIN_DIR"
  local pkg
  for pkg in server:go.temporal.io/server/cmd/server sql:go.temporal.io/server/cmd/tools/sql; do
    local name=${pkg%%:*} path=${pkg#*:}
    if [[ -x $BIN_DIR/$name ]]; then
      log "$BIN_DIR/$name exists"
      continue
    fi
    command -v go >/dev/null 2>&1 || die "go not found: install Go 1.21 or newer (it fetches the toolchain the server asks for)"
    log "building $path@$TEMPORAL_VERSION (the server takes ~10 min the first time)"
    local start=$SECONDS
    (cd /tmp && GOTOOLCHAIN=auto GOFLAGS=-mod=mod GOBIN=$BIN_DIR go install "$path@$TEMPORAL_VERSION")
    log "built $BIN_DIR/$name in $((SECONDS - start)) s"
  done
  build_ui
}

sql_tool() {
  SQL_PLUGIN=postgres12 SQL_HOST=$PG_HOST SQL_PORT=$PG_PORT SQL_USER=$PG_USER SQL_PASSWORD=$PG_PASSWORD \
    "$SQL_BIN" "$@"
}

cmd_setup() {
  [[ -x $SQL_BIN ]] || die "$SQL_BIN missing; run: bash scripts/cluster.sh build"
  local schema
  schema=$(module_dir)/schema/postgresql/v12
  [[ -d $schema ]] || die "$schema missing (the module source comes with the build)"
  local start=$SECONDS
  pg_setup
  local db kind
  for db in temporal:temporal temporal_visibility:visibility; do
    kind=${db#*:}
    db=${db%%:*}
    log "database $db: create, setup-schema 0.0, update-schema ($kind)"
    sql_tool --db "$db" create-database --defaultdb postgres 2>&1 | tail -n 1 >&2 || true
    sql_tool --db "$db" setup-schema -v 0.0 >/dev/null 2>&1
    sql_tool --db "$db" update-schema -d "$schema/$kind/versioned" >/dev/null 2>&1 ||
      die "update-schema failed for $db"
  done
  log "setup done in $((SECONDS - start)) s"
}

server_running() {
  [[ -f $SERVER_PID ]] && kill -0 "$(cat "$SERVER_PID")" 2>/dev/null
}

render_config() {
  # The server records each service's membership port in PostgreSQL as a smallint: above 32767 it cannot
  # join its own cluster ("value ... is out of range for type smallint") and exits.
  local port
  for port in FRONTEND_MEMBERSHIP_PORT HISTORY_MEMBERSHIP_PORT MATCHING_MEMBERSHIP_PORT WORKER_MEMBERSHIP_PORT; do
    ((${!port} <= 32767)) || die "$port=${!port}: membership ports must be at most 32767 (a smallint in PostgreSQL)"
  done
  mkdir -p "$CLUSTER_DIR"
  cp "$ROOT/deploy/temporal/dynamicconfig.yaml" "$RENDERED_DYNCONFIG"
  if [[ -n ${CLUSTER_DYNAMIC_CONFIG_EXTRA:-} ]]; then
    [[ -f $CLUSTER_DYNAMIC_CONFIG_EXTRA ]] ||
      die "CLUSTER_DYNAMIC_CONFIG_EXTRA=$CLUSTER_DYNAMIC_CONFIG_EXTRA: no such file (a YAML file of dynamic config keys)"
    local key
    # A key given twice would leave the server to pick one: the extra file only adds.
    for key in $(grep -oE '^[A-Za-z][A-Za-z0-9_.]*:' "$CLUSTER_DYNAMIC_CONFIG_EXTRA"); do
      if grep -qE "^${key//./\\.}" "$RENDERED_DYNCONFIG"; then
        die "CLUSTER_DYNAMIC_CONFIG_EXTRA sets ${key%:}, which deploy/temporal/dynamicconfig.yaml sets already"
      fi
    done
    printf '\n# Added from %s (CLUSTER_DYNAMIC_CONFIG_EXTRA).\n' "$CLUSTER_DYNAMIC_CONFIG_EXTRA" >>"$RENDERED_DYNCONFIG"
    cat "$CLUSTER_DYNAMIC_CONFIG_EXTRA" >>"$RENDERED_DYNCONFIG"
  fi
  local DYNAMIC_CONFIG_FILE=$RENDERED_DYNCONFIG
  local args=() v
  for v in PG_HOST PG_PORT PG_USER PG_PASSWORD METRICS_PORT FRONTEND_PORT FRONTEND_HTTP_PORT \
    FRONTEND_MEMBERSHIP_PORT HISTORY_PORT HISTORY_MEMBERSHIP_PORT MATCHING_PORT \
    MATCHING_MEMBERSHIP_PORT WORKER_PORT WORKER_MEMBERSHIP_PORT DYNAMIC_CONFIG_FILE; do
    args+=(-e "s|\${$v}|${!v}|g")
  done
  sed "${args[@]}" "$ROOT/deploy/temporal/cluster.yaml" >"$RENDERED_CONFIG"
  if grep -nE '\$\{[A-Z_]+\}' "$RENDERED_CONFIG" >&2; then die "unrendered placeholders in $RENDERED_CONFIG"; fi
}

health() {
  "$TEMPORAL_CLI" operator cluster health --address "$ADDRESS" 2>/dev/null | grep -q SERVING
}

cmd_start() {
  [[ -x $SERVER_BIN ]] || die "$SERVER_BIN missing; run: bash scripts/cluster.sh build"
  [[ -n $TEMPORAL_CLI ]] || die "temporal CLI not found (.tools/temporal-cli/bin/temporal); run: npm run setup"
  pg_start
  if server_running; then
    log "server already running (pid $(cat "$SERVER_PID"))"
  else
    render_config
    log "starting Temporal server $TEMPORAL_VERSION on $ADDRESS (log $SERVER_LOG)"
    local t0
    t0=$(date +%s%N)
    # Background the server itself, not a subshell: otherwise the caller's pipe never closes.
    "$SERVER_BIN" --config-file "$RENDERED_CONFIG" --allow-no-auth start \
      </dev/null >>"$SERVER_LOG" 2>&1 &
    echo $! >"$SERVER_PID"
    local i
    for ((i = 0; i < 600; i++)); do
      if health; then break; fi
      server_running || die "server exited; see $SERVER_LOG"
      sleep 0.1
    done
    health || die "server not SERVING after 60 s; see $SERVER_LOG"
    log "SERVING after $((($(date +%s%N) - t0) / 1000000)) ms (pid $(cat "$SERVER_PID"))"
  fi
  if ! "$TEMPORAL_CLI" operator namespace describe -n "$NAMESPACE" --address "$ADDRESS" >/dev/null 2>&1; then
    log "creating namespace $NAMESPACE (retention $RETENTION)"
    local i
    for ((i = 0; i < 30; i++)); do
      if "$TEMPORAL_CLI" operator namespace create -n "$NAMESPACE" --retention "$RETENTION" \
        --address "$ADDRESS" >/dev/null 2>&1; then break; fi
      sleep 1
    done
    "$TEMPORAL_CLI" operator namespace describe -n "$NAMESPACE" --address "$ADDRESS" >/dev/null 2>&1 ||
      die "could not create namespace $NAMESPACE"
  fi
  # `describe` reads the database, but other calls go through the frontend's namespace cache, which learns of a new
  # namespace a moment later ("Namespace default is not found"): ready means usable by those calls too.
  local i
  for ((i = 0; i < 300; i++)); do
    if "$TEMPORAL_CLI" operator search-attribute list -n "$NAMESPACE" --address "$ADDRESS" >/dev/null 2>&1 &&
      "$TEMPORAL_CLI" workflow count -n "$NAMESPACE" --address "$ADDRESS" >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  ((i < 300)) || die "namespace $NAMESPACE exists but is not usable after 30 s; see $SERVER_LOG"
  log "ready: TEMPORAL_ADDRESS=$ADDRESS (namespace $NAMESPACE)"
  log "next: TEMPORAL_ADDRESS=$ADDRESS node cli/permit-chain.cjs register-search-attributes"
}

# --- Web UI -----------------------------------------------------------------------------------

ui_running() {
  [[ -f $UI_PID ]] && kill -0 "$(cat "$UI_PID")" 2>/dev/null
}

ui_answers() {
  curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$UI_PORT/api/v1/namespaces/$NAMESPACE" 2>/dev/null
}

build_ui() {
  if [[ -x $UI_BIN ]]; then return; fi
  command -v go >/dev/null 2>&1 || die "go not found: install Go 1.21 or newer to build the Web UI server"
  log "building github.com/temporalio/ui-server/v2/cmd/server@$UI_VERSION (about a minute the first time)"
  local start=$SECONDS tmp
  tmp=$(mktemp -d)
  # Its command is named `server`, like Temporal's: built apart, then moved beside nothing it could overwrite.
  (cd /tmp && GOTOOLCHAIN=auto GOFLAGS=-mod=mod GOBIN=$tmp go install \
    "github.com/temporalio/ui-server/v2/cmd/server@$UI_VERSION")
  mkdir -p "$(dirname "$UI_BIN")"
  mv "$tmp/server" "$UI_BIN"
  rmdir "$tmp"
  log "built $UI_BIN in $((SECONDS - start)) s"
}

cmd_ui() {
  build_ui
  command -v curl >/dev/null 2>&1 || die "curl not found (apt-get install -y curl): it checks that the UI answers"
  server_running || die "the cluster is not running; run: bash scripts/cluster.sh start"
  if ui_running; then
    log "Web UI already running (pid $(cat "$UI_PID")): http://127.0.0.1:$UI_PORT"
    return
  fi
  mkdir -p "$CLUSTER_DIR/ui"
  local args=() v
  for v in FRONTEND_PORT UI_PORT NAMESPACE; do args+=(-e "s|\${$v}|${!v}|g"); done
  sed "${args[@]}" "$ROOT/deploy/temporal/ui-server.yaml" >"$CLUSTER_DIR/ui/cluster.yaml"
  log "starting the Web UI server $UI_VERSION on http://127.0.0.1:$UI_PORT (log $UI_LOG)"
  # Background the server itself, not a subshell: otherwise the caller's pipe never closes.
  "$UI_BIN" --root / --config "$CLUSTER_DIR/ui" --env cluster start </dev/null >>"$UI_LOG" 2>&1 &
  echo $! >"$UI_PID"
  local i
  for ((i = 0; i < 300; i++)); do
    if ui_answers; then break; fi
    ui_running || die "the Web UI server exited; see $UI_LOG"
    sleep 0.1
  done
  ui_answers || die "the Web UI server does not answer after 30 s; see $UI_LOG"
  log "Web UI: http://127.0.0.1:$UI_PORT/namespaces/$NAMESPACE/workflows (pid $(cat "$UI_PID"))"
}

# TERM, then KILL after 10 s.
stop_pid_file() { # pid file, what
  local pid
  pid=$(cat "$1")
  log "stopping $2 (pid $pid)"
  kill "$pid"
  local i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
  rm -f "$1"
}

cmd_stop() {
  if ui_running; then stop_pid_file "$UI_PID" "the Web UI server"; fi
  rm -f "$UI_PID"
  if server_running; then stop_pid_file "$SERVER_PID" "Temporal server"; fi
  rm -f "$SERVER_PID"
  pg_stop
}

cmd_status() {
  local rc=0
  if server_running; then
    if health; then
      echo "temporal: SERVING on $ADDRESS (pid $(cat "$SERVER_PID"))"
    else
      echo "temporal: running (pid $(cat "$SERVER_PID")) but not SERVING on $ADDRESS"
      rc=1
    fi
  else
    echo "temporal: stopped"
    rc=1
  fi
  if pg_running; then
    echo "postgresql: running on $PG_HOST:$PG_PORT ($(pg_dir))"
  else
    echo "postgresql: stopped ($(pg_dir))"
    rc=1
  fi
  if ui_running; then
    echo "web ui: running on http://127.0.0.1:$UI_PORT (pid $(cat "$UI_PID"))"
  else
    echo "web ui: stopped (bash scripts/cluster.sh ui starts it)"
  fi
  echo "binaries: $BIN_DIR ($(ls "$BIN_DIR" 2>/dev/null | tr '\n' ' '))"
  echo "data: $CLUSTER_DIR"
  return $rc
}

case ${1:-} in
  build) cmd_build ;;
  setup) cmd_setup ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  ui) cmd_ui ;;
  *)
    echo "usage: bash scripts/cluster.sh {build|setup|start|ui|stop|status}" >&2
    exit 2
    ;;
esac
