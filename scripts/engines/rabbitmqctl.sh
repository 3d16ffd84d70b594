#!/usr/bin/env bash
# Run rabbitmqctl against the RabbitMQ node that scripts/engines/start.sh runs (same node name,
# cookie and environment, as the rabbitmq user when we are root), e.g. to manage users:
#   scripts/engines/rabbitmqctl.sh add_user NAME PASSWORD
#   scripts/engines/rabbitmqctl.sh set_permissions -p / NAME '.*' '.*' '.*'
#   scripts/engines/rabbitmqctl.sh delete_user NAME
set -euo pipefail
# shellcheck source=scripts/engines/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if (($# == 0)) || [[ "$1" == -h || "$1" == --help ]]; then
  sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 0
fi
[[ -n "$(rabbitmq_pid)" ]] || die "rabbitmq: not running (scripts/engines/start.sh rabbitmq)"
cd "$STATE_DIR" # the rabbitmq user must be able to enter the working directory
rabbitmq_cmd rabbitmqctl "$@"
