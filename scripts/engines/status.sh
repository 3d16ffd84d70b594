#!/usr/bin/env bash
# One line per engine: up/down, port, pid.
set -euo pipefail
# shellcheck source=scripts/engines/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF2
Usage: scripts/engines/status.sh [rabbitmq|kafka|elasticsearch|all]...

Prints one line per engine:  NAME  up|down|starting  127.0.0.1:PORT  pid PID
  up        its process (from the pid file in $STATE_DIR) is alive and its port accepts connections
  starting  the process is alive but the port is not open (yet)
  down      no live process (a port held by something else is reported too)
Cheap (no client round trip); start.sh does the real readiness checks.
Exit status: 0 if every listed engine is up, 3 otherwise. Default: all.
EOF2
}

if wants_help "$@"; then
  usage
  exit 0
fi
parse_engines "$@"

all_up=1
for engine in "${ENGINES[@]}"; do
  port=$(engine_port "$engine")
  pid=$("${engine}_pid")
  extra=
  if [[ -n "$pid" ]]; then
    if port_open "$port"; then
      state=up
    else
      state=starting
      all_up=0
    fi
    case "$engine" in
      rabbitmq) ((RABBITMQ_MANAGEMENT)) && extra="  management 127.0.0.1:$RABBITMQ_MGMT_PORT" ;;
      kafka)
        extra="  controller 127.0.0.1:$KAFKA_CONTROLLER_PORT"
        if ((KAFKA_SASL_PORT)) && port_open "$KAFKA_SASL_PORT"; then extra+="  sasl_plaintext 127.0.0.1:$KAFKA_SASL_PORT"; fi
        ;;
    esac
    pid_text="pid $pid"
  else
    state=down
    all_up=0
    pid_text="pid -"
    if port_open "$port"; then
      owner=$(port_owner "$port")
      extra="  (port in use by another process${owner:+: pid $owner})"
    fi
  fi
  printf '%-14s %-9s 127.0.0.1:%-6s %-10s%s\n' "$engine" "$state" "$port" "$pid_text" "$extra"
done
((all_up)) || exit 3
