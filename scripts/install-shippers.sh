#!/usr/bin/env bash
# Install the real log shippers the receiver tests use as clients, from Debian packages:
# rsyslog (omfwd over TCP/UDP; tests/component/test_syslog_clients.py), its Elasticsearch output
# module omelasticsearch (rsyslog-elasticsearch, posting to our `_bulk`;
# tests/component/test_rsyslog_elasticsearch.py) and util-linux `logger` (bsdutils).
# Idempotent (see apt-ensure.sh).
#
# apt does not start daemons on these machines (policy-rc.d), and the tests never use the
# system rsyslog: each test runs a private `rsyslogd -n -f CONF -i PIDFILE` and stops it by pid.
set -euo pipefail
exec "$(dirname "$0")/apt-ensure.sh" install-shippers rsyslog rsyslog-elasticsearch bsdutils -- rsyslogd logger
