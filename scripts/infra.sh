#!/usr/bin/env bash
# Brings the real backends up on loopback for tests and `promo standalone`:
# MariaDB, Redis, a 3-master Redis Cluster and a tansu (Kafka-protocol) broker. Idempotent: what already
# answers is left alone; what is missing is installed (apt-get, cargo install
# into a cache outside the checkout) and started. Only processes this script
# started are stopped by `down`, by the PIDs it recorded.
#
#   scripts/infra.sh up | down | status | env | durable-broker | fresh-broker
#
# fresh-broker restarts the in-memory tansu this script started (empty
# again); the benchmarks call it before each run against the real backends,
# because tansu's in-memory store rewrites one metadata document holding
# every producer it has ever registered on each idempotent produce, so its
# cost per message grows with every `promo` started against it.
# durable-broker prints the path of the tansu binary (built once if missing),
# whose storage can also be a SQLite file — durable across kill -9, which the
# fault suite's broker experiment needs (it starts a broker of its own).
set -euo pipefail

STATE_DIR=${PROMO_INFRA_DIR:-$HOME/.cache/promo-tools}
TANSU_VERSION=0.6.0
# One build serves both: in-memory storage (dynostore) for the shared broker,
# SQLite storage (libsql) for the fault suite's broker experiment.
TANSU_ROOT="$STATE_DIR/tansu-$TANSU_VERSION-sqlite"
TANSU_BIN="$TANSU_ROOT/bin/tansu"
MYSQL_PORT=${PROMO_INFRA_MYSQL_PORT:-3306}
REDIS_PORT=${PROMO_INFRA_REDIS_PORT:-6379}
KAFKA_PORT=${PROMO_INFRA_KAFKA_PORT:-9092}
# The Redis Cluster's three masters (no replicas: a test kills one to see
# admission fail closed).
CLUSTER_PORTS=${PROMO_INFRA_CLUSTER_PORTS:-"7001 7002 7003"}
DB_USER=promo
DB_PASS=promo
mkdir -p "$STATE_DIR"

log() { printf '[infra] %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port name seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do port_open "$1" && return 0; sleep 0.1; done
  log "$2 did not open 127.0.0.1:$1 within $3 s"; return 1
}
apt_install() {
  log "installing $* (apt-get)"
  if [ "$(id -u)" -ne 0 ]; then log "need root to install $*; install it and retry"; exit 1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
  }
}

mysql_root() { # run SQL as the server's administrator, socket first, then TCP
  mariadb --protocol=socket -uroot -e "$1" 2>/dev/null || mariadb -h127.0.0.1 -P"$MYSQL_PORT" -uroot -e "$1"
}

up_mariadb() {
  if ! port_open "$MYSQL_PORT"; then
    command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server
    log "starting MariaDB on 127.0.0.1:$MYSQL_PORT"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    start-stop-daemon --start --oknodo --background --make-pidfile --pidfile "$STATE_DIR/mariadb.pid" \
      --exec /usr/sbin/mariadbd -- --user=mysql --bind-address=127.0.0.1 --port="$MYSQL_PORT"
    wait_port "$MYSQL_PORT" MariaDB 60
  fi
  # A dedicated account, so the tests do not depend on how root authenticates.
  mysql_root "CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
              CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
              GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'127.0.0.1';
              GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'localhost';
              SET GLOBAL max_connections = GREATEST(@@max_connections, 1000);"
}

up_redis() {
  if port_open "$REDIS_PORT"; then return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --pidfile "$STATE_DIR/redis.pid" --logfile "$STATE_DIR/redis.log" --dir "$STATE_DIR"
  wait_port "$REDIS_PORT" Redis 20
}

cluster_nodes() { for p in $CLUSTER_PORTS; do printf '127.0.0.1:%s,' "$p"; done | sed 's/,$//'; }

cluster_ok() { # every slot served
  redis-cli -p "${CLUSTER_PORTS%% *}" cluster info 2>/dev/null | grep -q '^cluster_state:ok'
}

up_redis_cluster() {
  command -v redis-server >/dev/null || apt_install redis-server
  local port nodes=()
  for port in $CLUSTER_PORTS; do
    nodes+=("127.0.0.1:$port")
    port_open "$port" && continue
    log "starting Redis Cluster node on 127.0.0.1:$port"
    mkdir -p "$STATE_DIR/cluster-$port"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
      --cluster-enabled yes --cluster-config-file "nodes.conf" --cluster-node-timeout 2000 \
      --pidfile "$STATE_DIR/cluster-$port.pid" --logfile "$STATE_DIR/cluster-$port.log" \
      --dir "$STATE_DIR/cluster-$port"
    wait_port "$port" "Redis Cluster node" 20
  done
  cluster_ok && return
  log "creating the Redis Cluster (${nodes[*]})"
  if ! redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$STATE_DIR/cluster-create.log" 2>&1; then
    # Nodes left from an earlier cluster (a restarted node keeps nodes.conf)
    # refuse to join a new one: start them afresh, once.
    log "resetting the nodes of an earlier cluster"
    for port in $CLUSTER_PORTS; do
      redis-cli -p "$port" flushall >/dev/null 2>&1 || true
      redis-cli -p "$port" cluster reset hard >/dev/null
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$STATE_DIR/cluster-create.log" 2>&1 || {
      cat "$STATE_DIR/cluster-create.log" >&2; log "Redis Cluster creation failed"; exit 1; }
  fi
  for _ in $(seq 1 100); do cluster_ok && return; sleep 0.1; done
  log "the Redis Cluster did not reach state ok"; exit 1
}

build_tansu() {
  if [ -x "$TANSU_BIN" ]; then return; fi
  log "building tansu $TANSU_VERSION once into $TANSU_ROOT (several minutes on 2 cores)"
  cargo install tansu --version "$TANSU_VERSION" --features dynostore,libsql --locked \
    --root "$TANSU_ROOT" >"$STATE_DIR/tansu-build.log" 2>&1 || {
      tail -30 "$STATE_DIR/tansu-build.log" >&2; log "tansu build failed (log: $STATE_DIR/tansu-build.log)"; exit 1; }
}

up_tansu() {
  if port_open "$KAFKA_PORT"; then return; fi
  build_tansu
  log "starting tansu (in-memory storage) on 127.0.0.1:$KAFKA_PORT"
  nohup "$TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine memory://tansu/ >"$STATE_DIR/tansu.log" 2>&1 &
  echo $! >"$STATE_DIR/tansu.pid"
  wait_port "$KAFKA_PORT" tansu 30
}

stop_pidfile() { # name pidfile
  local f=$2
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then log "stopping $1 (pid $pid)"; kill "$pid"; fi
  rm -f "$f"
}

fresh_tansu() {
  local f="$STATE_DIR/tansu.pid"
  if port_open "$KAFKA_PORT" && ! { [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }; then
    log "tansu on 127.0.0.1:$KAFKA_PORT was not started by this script: left as it is"; return
  fi
  stop_pidfile tansu "$f"
  for _ in $(seq 1 100); do port_open "$KAFKA_PORT" || break; sleep 0.1; done
  up_tansu
}

print_env() {
  cat <<ENV
PROMO_MYSQL_URL=mysql://$DB_USER:$DB_PASS@127.0.0.1:$MYSQL_PORT
PROMO_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
PROMO_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
ENV
}

case "${1:-up}" in
  up)
    up_mariadb; up_redis; up_redis_cluster; up_tansu
    log "the Redis Cluster's masters, for --redis-cluster-nodes instead of --redis-url: $(cluster_nodes)"
    log "ready; the URLs (export them to use the real backends):"
    print_env ;;
  down)
    stop_pidfile tansu "$STATE_DIR/tansu.pid"
    stop_pidfile redis "$STATE_DIR/redis.pid"
    for port in $CLUSTER_PORTS; do stop_pidfile "redis cluster node $port" "$STATE_DIR/cluster-$port.pid"; done
    stop_pidfile mariadb "$STATE_DIR/mariadb.pid"
    log "stopped what this script had started; services started by others are left running" ;;
  status)
    for p in "MariaDB $MYSQL_PORT" "Redis $REDIS_PORT" "tansu $KAFKA_PORT"; do
      set -- $p; if port_open "$2"; then echo "$1: up (127.0.0.1:$2)"; else echo "$1: down"; fi
    done
    if cluster_ok; then echo "Redis Cluster: up ($CLUSTER_PORTS)"; else echo "Redis Cluster: down"; fi ;;
  env) print_env ;;
  durable-broker) build_tansu; echo "$TANSU_BIN" ;;
  fresh-broker) fresh_tansu ;;
  *) echo "usage: $0 up|down|status|env|durable-broker|fresh-broker" >&2; exit 2 ;;
esac
