#!/usr/bin/env bash
# Print export lines for the engines' URLs:  eval "$(scripts/engines/env.sh)"
set -euo pipefail
# shellcheck source=scripts/engines/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if wants_help "$@"; then
  cat <<EOF2
Usage: eval "\$(scripts/engines/env.sh)"

Prints 'export' lines with the URLs of the engines that scripts/engines/start.sh runs (ports
follow the same SMARTLOGS_* overrides, see scripts/engines/common.sh):
  SMARTLOGS_AMQP_URL         amqp://guest:guest@127.0.0.1:$RABBITMQ_PORT/
  SMARTLOGS_KAFKA_BOOTSTRAP  127.0.0.1:$KAFKA_PORT
  SMARTLOGS_KAFKA_SASL_BOOTSTRAP 127.0.0.1:$KAFKA_SASL_PORT (SASL_PLAINTEXT/PLAIN; unless SMARTLOGS_KAFKA_SASL_PORT=0)
  SMARTLOGS_ES_URL           http://127.0.0.1:$ES_PORT
  SMARTLOGS_RABBITMQ_MGMT_URL http://127.0.0.1:$RABBITMQ_MGMT_PORT/ (when management is enabled)
EOF2
  exit 0
fi
(($# == 0)) || die "env.sh takes no arguments (see --help)"

printf 'export SMARTLOGS_AMQP_URL=%q\n' "amqp://guest:guest@127.0.0.1:$RABBITMQ_PORT/"
printf 'export SMARTLOGS_KAFKA_BOOTSTRAP=%q\n' "127.0.0.1:$KAFKA_PORT"
if ((KAFKA_SASL_PORT)); then
  printf 'export SMARTLOGS_KAFKA_SASL_BOOTSTRAP=%q\n' "127.0.0.1:$KAFKA_SASL_PORT"
fi
printf 'export SMARTLOGS_ES_URL=%q\n' "http://127.0.0.1:$ES_PORT"
if ((RABBITMQ_MANAGEMENT)); then
  printf 'export SMARTLOGS_RABBITMQ_MGMT_URL=%q\n' "http://127.0.0.1:$RABBITMQ_MGMT_PORT/"
fi
