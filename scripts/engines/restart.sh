#!/usr/bin/env bash
# Stop then start engines (data is kept): scripts/engines/restart.sh kafka
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
for arg in "$@"; do
  case "$arg" in
    -h | --help | help)
      cat <<EOF2
Usage: scripts/engines/restart.sh [rabbitmq|kafka|elasticsearch|all]...

Runs scripts/engines/stop.sh then scripts/engines/start.sh with the same engines (default all).
Data in the state dir is kept, so e.g. durable queues, topics and indices survive.
EOF2
      exit 0
      ;;
  esac
done
"$here/stop.sh" "$@"
"$here/start.sh" "$@"
