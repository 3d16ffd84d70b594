#!/usr/bin/env bash
# Stop engines started by scripts/engines/start.sh, by pid, and wait until they are gone.
set -euo pipefail
# shellcheck source=scripts/engines/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: scripts/engines/stop.sh [rabbitmq|kafka|elasticsearch|all]...

Stops each engine that start.sh started (found through its pid file in $STATE_DIR) and waits
until its process is gone (up to SMARTLOGS_ENGINES_TIMEOUT=${ENGINES_TIMEOUT}s, then SIGKILL with a
warning). RabbitMQ is stopped with 'rabbitmqctl stop' (SIGTERM if the node does not answer);
Kafka and Elasticsearch with SIGTERM (both shut down cleanly on it). Data is kept.
An engine that is not running is reported and skipped. Default: all.
EOF
}

if wants_help "$@"; then
  usage
  exit 0
fi
parse_engines "$@"

stop_rabbitmq() {
  local pid rc
  pid=$(rabbitmq_pid)
  if [[ -z "$pid" ]]; then
    log "rabbitmq: not running"
    rm -f "$RABBITMQ_PIDFILE"
    return 0
  fi
  log "rabbitmq: stopping node $RABBITMQ_NODE (pid $pid)"
  rc=0
  rabbitmq_cmd rabbitmqctl -q stop >&2 || rc=$?
  if ((rc != 0)); then
    warn "rabbitmq: 'rabbitmqctl stop' failed (exit $rc); falling back to SIGTERM"
    stop_pid rabbitmq "$pid" "$ENGINES_TIMEOUT"
  elif ! wait_until "$ENGINES_TIMEOUT" "rabbitmq (pid $pid) to exit" _pid_gone "$pid"; then
    stop_pid rabbitmq "$pid" 30
  fi
  rm -f "$RABBITMQ_PIDFILE"
  stop_idle_epmd
  log "rabbitmq: stopped"
}

# The Erlang VM starts epmd (the port mapper, 127.0.0.1:4369) on demand and leaves it running.
# Stop it once no Erlang node is registered with it any more, so nothing of ours lingers.
stop_idle_epmd() {
  local epmd names
  local candidates=()
  if epmd=$(command -v epmd 2>/dev/null); then
    :
  elif mapfile -t candidates < <(compgen -G '/usr/lib/erlang/erts-*/bin/epmd') && ((${#candidates[@]})); then
    epmd=${candidates[0]}
  else
    return 0 # no Erlang installed
  fi
  names=$("$epmd" -names 2>/dev/null) || return 0 # no epmd running
  if grep -q '^name ' <<<"$names"; then
    log "rabbitmq: epmd still has Erlang nodes registered; leaving it running"
    return 0
  fi
  "$epmd" -kill >/dev/null
  log "rabbitmq: stopped the idle epmd"
}

stop_kafka() {
  local pid
  pid=$(kafka_pid)
  if [[ -z "$pid" ]]; then
    log "kafka: not running"
    rm -f "$KAFKA_PIDFILE"
    return 0
  fi
  log "kafka: stopping (pid $pid)"
  stop_pid kafka "$pid" "$ENGINES_TIMEOUT"
  rm -f "$KAFKA_PIDFILE"
  log "kafka: stopped"
}

stop_elasticsearch() {
  local pid
  pid=$(elasticsearch_pid)
  if [[ -z "$pid" ]]; then
    log "elasticsearch: not running"
    rm -f "$ES_PIDFILE"
    return 0
  fi
  log "elasticsearch: stopping (pid $pid)"
  stop_pid elasticsearch "$pid" "$ENGINES_TIMEOUT"
  rm -f "$ES_PIDFILE"
  log "elasticsearch: stopped"
}

if [[ -d "$STATE_DIR" ]]; then
  cd "$STATE_DIR" # the rabbitmq CLI runs as user rabbitmq: not from the caller's directory
fi
# The engines are independent; stop them in the reverse of the start order anyway.
for ((i = ${#ENGINES[@]} - 1; i >= 0; i--)); do
  engine=${ENGINES[i]}
  lock_engine "$engine"
  "stop_$engine"
  unlock_engine
done
