# shellcheck shell=bash disable=SC2034 # settings used by the scripts that source this file
# Shared settings and helpers for scripts/engines/*.sh. Source it; do not run it.
#
# Everything the engines write (downloads unpacked, data, logs, pid files) lives in the
# state dir: ${SMARTLOGS_ENGINES_DIR:-/var/tmp/smartlogs-engines}. Maven's cache (~/.m2) holds the
# downloaded jars/zip so a wiped state dir reinstalls in seconds.
#
# Settings (environment, all optional):
#   SMARTLOGS_ENGINES_DIR            state dir (default /var/tmp/smartlogs-engines, the same as the Makefile)
#   SMARTLOGS_ENGINES_TIMEOUT        seconds to wait for an engine to become ready / to stop (180)
#   SMARTLOGS_RABBITMQ_PORT          AMQP port (5672)
#   SMARTLOGS_RABBITMQ_MGMT_PORT     management HTTP port (AMQP port + 10000 = 15672)
#   SMARTLOGS_RABBITMQ_MANAGEMENT    1 = enable the management plugin (1), 0 = don't
#   SMARTLOGS_RABBITMQ_DIST_PORT     Erlang distribution port (AMQP port + 20000)
#   SMARTLOGS_RABBITMQ_NODENAME      Erlang node name (smartlogs@localhost; smartlogs-PORT@localhost
#                                    when SMARTLOGS_RABBITMQ_PORT is not 5672)
#   SMARTLOGS_KAFKA_PORT             Kafka PLAINTEXT listener (9092)
#   SMARTLOGS_KAFKA_CONTROLLER_PORT  KRaft controller listener (Kafka port + 1 = 9093)
#   SMARTLOGS_KAFKA_SASL_PORT        extra SASL_PLAINTEXT listener, mechanism PLAIN, for clients
#                                    (Kafka port + 2 = 9094; 0 = no SASL listener)
#   SMARTLOGS_KAFKA_BROKER_SASL_USER / SMARTLOGS_KAFKA_BROKER_SASL_PASSWORD
#                                    the user that listener accepts (smartlogs / smartlogs-secret)
#   SMARTLOGS_KAFKA_HEAP_OPTS        JVM heap flags for Kafka (-Xms256m -Xmx512m)
#   SMARTLOGS_ES_PORT                Elasticsearch HTTP port (9200)
#   SMARTLOGS_ES_TRANSPORT_PORT      Elasticsearch transport port (HTTP port + 100 = 9300)
#   SMARTLOGS_ES_HEAP                Elasticsearch heap, used for -Xms and -Xmx (512m)
#   SMARTLOGS_ES_JAVA_OPTS           more JVM flags for Elasticsearch (none), e.g. -XX:-UseCodeCacheFlushing
#                                    (another GC needs jvm.options.d: the distribution sets G1)
#   SMARTLOGS_ES_USER                unprivileged user that runs Elasticsearch when we are root
#                                    (smartlogs-es)
#   SMARTLOGS_JAVA_HOME              Java 17+ to use (default: JAVA_HOME, then `java` on PATH)

# ---------------------------------------------------------------------------------------------
# Paths and versions

ENGINES_SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$ENGINES_SCRIPT_DIR/../.." && pwd)

STATE_DIR=${SMARTLOGS_ENGINES_DIR:-/var/tmp/smartlogs-engines}
case "$STATE_DIR" in
  /*) ;;
  *) STATE_DIR="$PWD/$STATE_DIR" ;;
esac

# _check_number SETTING VALUE: settings that must be numbers (ports, seconds).
_check_number() {
  if ! [[ "$2" =~ ^[0-9]+$ ]]; then
    printf 'scripts/engines: %s must be a number, got "%s"\n' "$1" "$2" >&2
    exit 2
  fi
}

ENGINES_TIMEOUT=${SMARTLOGS_ENGINES_TIMEOUT:-180}
_check_number SMARTLOGS_ENGINES_TIMEOUT "$ENGINES_TIMEOUT"
ALL_ENGINES=(rabbitmq kafka elasticsearch)

KAFKA_VERSION=4.4.0
KAFKA_SCALA_VERSION=2.13
# log4j-slf4j-impl must match the log4j-core that kafka-server brings (2.25.5 for Kafka 4.4.0);
# Kafka uses slf4j-api 1.7.x, so the slf4j 1.x binding (log4j-slf4j-impl) is the right one.
KAFKA_LOG4J_VERSION=2.25.5
ES_VERSION=8.19.3
MAVEN_DEPENDENCY_PLUGIN=3.8.1

# RabbitMQ
RABBITMQ_PORT=${SMARTLOGS_RABBITMQ_PORT:-5672}
_check_number SMARTLOGS_RABBITMQ_PORT "$RABBITMQ_PORT"
RABBITMQ_MGMT_PORT=${SMARTLOGS_RABBITMQ_MGMT_PORT:-$((RABBITMQ_PORT + 10000))}
_check_number SMARTLOGS_RABBITMQ_MGMT_PORT "$RABBITMQ_MGMT_PORT"
case "${SMARTLOGS_RABBITMQ_MANAGEMENT:-1}" in
  0 | false | no | off) RABBITMQ_MANAGEMENT=0 ;;
  *) RABBITMQ_MANAGEMENT=1 ;;
esac
RABBITMQ_DIST_PORT=${SMARTLOGS_RABBITMQ_DIST_PORT:-$((RABBITMQ_PORT + 20000))}
_check_number SMARTLOGS_RABBITMQ_DIST_PORT "$RABBITMQ_DIST_PORT"
# The node name must be unique on the machine (epmd): derive it from the port when that is not
# the default, so a second set of engines with other ports just works.
if [[ "$RABBITMQ_PORT" == 5672 ]]; then
  RABBITMQ_NODE=${SMARTLOGS_RABBITMQ_NODENAME:-smartlogs@localhost}
else
  RABBITMQ_NODE=${SMARTLOGS_RABBITMQ_NODENAME:-smartlogs-$RABBITMQ_PORT@localhost}
fi
RABBITMQ_BIN=/usr/lib/rabbitmq/bin
RABBITMQ_DIR=$STATE_DIR/rabbitmq
RABBITMQ_PIDFILE=$RABBITMQ_DIR/rabbitmq.pid
RABBITMQ_LOG_DIR=$RABBITMQ_DIR/log
RABBITMQ_STARTUP_LOG=$RABBITMQ_LOG_DIR/startup.log
RABBITMQ_USER=rabbitmq

# Kafka
KAFKA_PORT=${SMARTLOGS_KAFKA_PORT:-9092}
_check_number SMARTLOGS_KAFKA_PORT "$KAFKA_PORT"
KAFKA_CONTROLLER_PORT=${SMARTLOGS_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
_check_number SMARTLOGS_KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
KAFKA_SASL_PORT=${SMARTLOGS_KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}
_check_number SMARTLOGS_KAFKA_SASL_PORT "$KAFKA_SASL_PORT"
KAFKA_SASL_USER=${SMARTLOGS_KAFKA_BROKER_SASL_USER:-smartlogs}
KAFKA_SASL_PASSWORD=${SMARTLOGS_KAFKA_BROKER_SASL_PASSWORD:-smartlogs-secret}
KAFKA_HEAP_OPTS=${SMARTLOGS_KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
KAFKA_DIR=$STATE_DIR/kafka
KAFKA_HOME=$KAFKA_DIR/kafka_${KAFKA_SCALA_VERSION}-${KAFKA_VERSION}
KAFKA_LIBS=$KAFKA_HOME/libs
KAFKA_CONFIG=$KAFKA_DIR/config/server.properties
KAFKA_LOG4J_CONFIG=$KAFKA_DIR/config/log4j2.properties
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_LOG_DIR=$KAFKA_DIR/logs
KAFKA_LOG=$KAFKA_LOG_DIR/kafka.log
KAFKA_PIDFILE=$KAFKA_DIR/kafka.pid
KAFKA_CLUSTER_ID_FILE=$KAFKA_DIR/cluster.id

# Elasticsearch
ES_PORT=${SMARTLOGS_ES_PORT:-9200}
_check_number SMARTLOGS_ES_PORT "$ES_PORT"
ES_TRANSPORT_PORT=${SMARTLOGS_ES_TRANSPORT_PORT:-$((ES_PORT + 100))}
_check_number SMARTLOGS_ES_TRANSPORT_PORT "$ES_TRANSPORT_PORT"
ES_HEAP=${SMARTLOGS_ES_HEAP:-512m}
ES_EXTRA_JAVA_OPTS=${SMARTLOGS_ES_JAVA_OPTS:-}
# es_java_opts: the JVM flags Elasticsearch starts with (ES_JAVA_OPTS): the heap, then ours
es_java_opts() {
  printf '%s\n' "-Xms$ES_HEAP -Xmx$ES_HEAP${ES_EXTRA_JAVA_OPTS:+ $ES_EXTRA_JAVA_OPTS}"
}
ES_USER=${SMARTLOGS_ES_USER:-smartlogs-es}
ES_CLUSTER_NAME=smartlogs
ES_DIR=$STATE_DIR/elasticsearch
ES_HOME=$ES_DIR/elasticsearch-$ES_VERSION
ES_DATA=$ES_DIR/data
ES_LOG_DIR=$ES_DIR/logs
ES_LOG=$ES_LOG_DIR/$ES_CLUSTER_NAME.log
ES_STARTUP_LOG=$ES_LOG_DIR/startup.log
ES_RUN_DIR=$ES_DIR/run
ES_PIDFILE=$ES_RUN_DIR/elasticsearch.pid
ES_TMP=$ES_DIR/tmp

# ---------------------------------------------------------------------------------------------
# Logging

_ts() { date +%H:%M:%S; }
log() { printf '[engines %s] %s\n' "$(_ts)" "$*" >&2; }
warn() { printf '[engines %s] WARNING: %s\n' "$(_ts)" "$*" >&2; }
die() {
  printf '[engines %s] ERROR: %s\n' "$(_ts)" "$*" >&2
  exit 1
}

# mark_log FILE: remember FILE's current size, so show_log_tail prints only what came after
# (the engines append to their logs across restarts).
declare -A LOG_OFFSETS=()
mark_log() {
  local file=$1
  if [[ -f "$file" ]]; then
    LOG_OFFSETS[$file]=$(stat -c %s "$file")
  else
    LOG_OFFSETS[$file]=0
  fi
}

# show_log_tail FILE [LINES]: print the end of a log file (only what was written since
# mark_log FILE, if it was marked) to stderr, framed.
show_log_tail() {
  local file=$1 lines=${2:-50} offset
  offset=${LOG_OFFSETS[$file]:-0}
  if [[ -f "$file" ]] && (($(stat -c %s "$file") > offset)); then
    printf -- '----- last %s lines of %s -----\n' "$lines" "$file" >&2
    tail -c "+$((offset + 1))" "$file" | tail -n "$lines" >&2
    printf -- '----- end of %s -----\n' "$file" >&2
  else
    printf -- '(nothing new in %s)\n' "$file" >&2
  fi
}

# ---------------------------------------------------------------------------------------------
# Argument handling

# parse_engines ARG...: fills the global ENGINES array from rabbitmq|kafka|elasticsearch|all
# (default all; aliases: rabbit, es).
parse_engines() {
  ENGINES=()
  if (($# == 0)); then
    ENGINES=("${ALL_ENGINES[@]}")
    return
  fi
  local arg
  for arg in "$@"; do
    case "$arg" in
      all) ENGINES=("${ALL_ENGINES[@]}") ;;
      rabbitmq | rabbit) ENGINES+=(rabbitmq) ;;
      kafka) ENGINES+=(kafka) ;;
      elasticsearch | es) ENGINES+=(elasticsearch) ;;
      *) die "unknown engine '$arg' (expected rabbitmq, kafka, elasticsearch or all; see --help)" ;;
    esac
  done
}

wants_help() {
  local arg
  for arg in "$@"; do
    case "$arg" in -h | --help | help) return 0 ;; esac
  done
  return 1
}

# ---------------------------------------------------------------------------------------------
# Processes, ports, waiting

is_root() { [[ $(id -u) -eq 0 ]]; }

# pid_alive PID: the process exists (and is not a zombie).
pid_alive() {
  local pid=$1 state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/stat ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# pid_cmdline_has PID TEXT: the process's command line contains TEXT (guards against a stale
# pid file whose pid was reused by an unrelated process).
pid_cmdline_has() {
  local pid=$1 text=$2 cmdline
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmdline" == *"$text"* ]]
}

# port_open PORT [HOST]: something accepts TCP connections there.
port_open() {
  local port=$1 host=${2:-127.0.0.1}
  # shellcheck disable=SC2016 # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

# port_owner PORT: pid(s) listening on 127.0.0.1/any on PORT, if `ss` can tell.
port_owner() {
  local port=$1
  command -v ss >/dev/null 2>&1 || return 0
  ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | paste -sd, -
}

# wait_until TIMEOUT DESCRIPTION COMMAND...: run COMMAND every 0.5 s until it succeeds (0).
# COMMAND may return 2 to give up at once (e.g. the process died). Returns 1 on timeout/give-up.
wait_until() {
  local timeout=$1 desc=$2 rc start now
  shift 2
  start=$(date +%s)
  while true; do
    rc=0
    "$@" || rc=$?
    if ((rc == 0)); then
      return 0
    fi
    if ((rc == 2)); then
      log "gave up waiting for $desc"
      return 1
    fi
    now=$(date +%s)
    if ((now - start >= timeout)); then
      log "timed out after ${timeout}s waiting for $desc"
      return 1
    fi
    sleep 0.5
  done
}

# wait_for_port PORT TIMEOUT [HOST]
wait_for_port() {
  local port=$1 timeout=$2 host=${3:-127.0.0.1}
  wait_until "$timeout" "$host:$port to accept connections" port_open "$port" "$host"
}

_pid_gone() { ! pid_alive "$1"; }

# stop_pid NAME PID TIMEOUT: SIGTERM, wait, then SIGKILL (with a warning) if it will not die.
stop_pid() {
  local name=$1 pid=$2 timeout=$3
  pid_alive "$pid" || return 0
  log "$name: sending SIGTERM to pid $pid"
  kill -TERM "$pid"
  if ! wait_until "$timeout" "$name (pid $pid) to exit" _pid_gone "$pid"; then
    warn "$name: pid $pid did not exit within ${timeout}s, sending SIGKILL"
    kill -KILL "$pid"
    wait_until 30 "$name (pid $pid) to die after SIGKILL" _pid_gone "$pid" ||
      die "$name: pid $pid survived SIGKILL"
  fi
}

# Per-engine lock so that two start/stop runs for the same engine do not interleave.
# Sets ENGINE_LOCK_FD; every daemon launch must close it ({ENGINE_LOCK_FD}>&-) so the
# running engine does not keep holding the lock.
ENGINE_LOCK_FD=
lock_engine() {
  local engine=$1
  mkdir -p "$STATE_DIR"
  exec {ENGINE_LOCK_FD}>"$STATE_DIR/.$engine.lock"
  if ! flock -w "$ENGINES_TIMEOUT" "$ENGINE_LOCK_FD"; then
    die "$engine: another start/stop of this engine holds $STATE_DIR/.$engine.lock"
  fi
}
unlock_engine() {
  if [[ -n "$ENGINE_LOCK_FD" ]]; then
    exec {ENGINE_LOCK_FD}>&-
    ENGINE_LOCK_FD=
  fi
}

# ---------------------------------------------------------------------------------------------
# Java

java_major() {
  local java=$1 line
  line=$("$java" -version 2>&1 | grep -m1 -i version) || return 1
  line=${line#*\"}
  line=${line%%\"*}
  line=${line#1.}
  printf '%s\n' "${line%%[.+-]*}"
}

# find_java_home: print a Java 17+ home or fail.
find_java_home() {
  local candidates=() c java major
  [[ -n "${SMARTLOGS_JAVA_HOME:-}" ]] && candidates+=("$SMARTLOGS_JAVA_HOME")
  [[ -n "${JAVA_HOME:-}" ]] && candidates+=("$JAVA_HOME")
  if java=$(command -v java 2>/dev/null); then
    java=$(readlink -f "$java")
    candidates+=("$(dirname "$(dirname "$java")")")
  fi
  for c in /usr/lib/jvm/*; do
    [[ -x "$c/bin/java" ]] && candidates+=("$c")
  done
  for c in "${candidates[@]}"; do
    [[ -x "$c/bin/java" ]] || continue
    major=$(java_major "$c/bin/java") || continue
    if [[ "$major" =~ ^[0-9]+$ ]] && ((major >= 17)); then
      printf '%s\n' "$c"
      return 0
    fi
  done
  return 1
}

require_java_home() {
  JAVA_HOME_FOUND=$(find_java_home) ||
    die "no Java 17+ found (set SMARTLOGS_JAVA_HOME, or run scripts/engines/install.sh)"
}

# ---------------------------------------------------------------------------------------------
# Users and permissions

# can_user_access USER PATH: USER can reach PATH (every parent dir traversable).
can_user_access() {
  local user=$1 path=$2
  runuser -u "$user" -- test -x "$path"
}

require_user_access() {
  local user=$1 path=$2
  if ! can_user_access "$user" "$path"; then
    die "user '$user' cannot reach $path (a parent directory is not world-traversable, e.g. /root).
  Put the engines' state elsewhere, e.g. SMARTLOGS_ENGINES_DIR=/var/tmp/smartlogs-engines"
  fi
}

# ---------------------------------------------------------------------------------------------
# Kafka readiness: a real Metadata request (v4) with nothing but the Python standard library.
# Succeeds when the broker answers with at least one live broker and a known controller.

kafka_metadata_ok() {
  python3 - "$KAFKA_PORT" <<'PY' 2>/dev/null
import socket, struct, sys

port = int(sys.argv[1])
client = b"smartlogs-engines"
# request header v1: api_key=3 (Metadata), api_version=4, correlation_id, client_id
# body v4: topics = null (all), allow_auto_topic_creation = false
body = struct.pack(">hhi", 3, 4, 4242) + struct.pack(">h", len(client)) + client
body += struct.pack(">i", -1) + b"\x00"
with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
    s.settimeout(5)
    s.sendall(struct.pack(">i", len(body)) + body)

    def recv(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise EOFError("connection closed")
            buf += chunk
        return buf

    (size,) = struct.unpack(">i", recv(4))
    data = recv(size)

off = 0
def i32():
    global off
    (v,) = struct.unpack_from(">i", data, off); off += 4; return v
def string():
    global off
    (n,) = struct.unpack_from(">h", data, off); off += 2
    if n < 0:
        return None
    v = data[off:off + n].decode(); off += n; return v

if i32() != 4242:
    sys.exit(1)
i32()  # throttle_time_ms
brokers = []
for _ in range(i32()):
    node_id = i32(); host = string(); bport = i32(); string()  # rack
    brokers.append((node_id, host, bport))
cluster_id = string()
controller_id = i32()
if not brokers or controller_id < 0:
    sys.exit(1)
print(f"brokers={brokers} cluster_id={cluster_id} controller={controller_id}")
PY
}

# ---------------------------------------------------------------------------------------------
# RabbitMQ environment: every rabbitmq-* command (server and CLI) must see the same settings.

rabbitmq_env() {
  local plugins_file=$RABBITMQ_DIR/etc/enabled_plugins
  RABBITMQ_ENV=(
    "HOME=$RABBITMQ_DIR/home"
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    "LANG=C.UTF-8"
    "LC_ALL=C.UTF-8"
    "RABBITMQ_CONF_ENV_FILE=$RABBITMQ_DIR/etc/rabbitmq-env.conf"
    "RABBITMQ_NODENAME=$RABBITMQ_NODE"
    "RABBITMQ_CONFIG_FILE=$RABBITMQ_DIR/etc/rabbitmq.conf"
    "RABBITMQ_ADVANCED_CONFIG_FILE=$RABBITMQ_DIR/etc/advanced.config"
    "RABBITMQ_ENABLED_PLUGINS_FILE=$plugins_file"
    "RABBITMQ_MNESIA_BASE=$RABBITMQ_DIR/mnesia"
    "RABBITMQ_LOG_BASE=$RABBITMQ_LOG_DIR"
    "RABBITMQ_PID_FILE=$RABBITMQ_PIDFILE"
    "RABBITMQ_DIST_PORT=$RABBITMQ_DIST_PORT"
    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}"
    "ERL_EPMD_ADDRESS=127.0.0.1"
  )
}

# rabbitmq_cmdline NAME ARGS...: set RABBITMQ_CMD to the command line that runs
# /usr/lib/rabbitmq/bin/NAME with our environment, as the rabbitmq user when we are root
# (the Debian wrappers in /usr/sbin would drop our settings).
rabbitmq_cmdline() {
  local name=$1
  shift
  rabbitmq_env
  RABBITMQ_CMD=(env -i "${RABBITMQ_ENV[@]}" "$RABBITMQ_BIN/$name" "$@")
  if is_root; then
    RABBITMQ_CMD=(runuser -u "$RABBITMQ_USER" -- "${RABBITMQ_CMD[@]}")
  fi
}

# rabbitmq_cmd NAME ARGS...: run it (see rabbitmq_cmdline).
rabbitmq_cmd() {
  rabbitmq_cmdline "$@"
  "${RABBITMQ_CMD[@]}"
}

# ---------------------------------------------------------------------------------------------
# Engine pids (empty output = not running)

rabbitmq_pid() {
  local pid
  [[ -s "$RABBITMQ_PIDFILE" ]] || return 0
  pid=$(<"$RABBITMQ_PIDFILE")
  if pid_alive "$pid" && pid_cmdline_has "$pid" "beam"; then
    printf '%s\n' "$pid"
  fi
}

kafka_pid() {
  local pid
  [[ -s "$KAFKA_PIDFILE" ]] || return 0
  pid=$(<"$KAFKA_PIDFILE")
  if pid_alive "$pid" && pid_cmdline_has "$pid" "$KAFKA_CONFIG"; then
    printf '%s\n' "$pid"
  fi
}

elasticsearch_pid() {
  local pid
  [[ -s "$ES_PIDFILE" ]] || return 0
  pid=$(<"$ES_PIDFILE")
  if pid_alive "$pid" && pid_cmdline_has "$pid" "$ES_HOME"; then
    printf '%s\n' "$pid"
  fi
}

engine_port() {
  case "$1" in
    rabbitmq) echo "$RABBITMQ_PORT" ;;
    kafka) echo "$KAFKA_PORT" ;;
    elasticsearch) echo "$ES_PORT" ;;
  esac
}
