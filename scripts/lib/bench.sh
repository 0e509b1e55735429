# Shared steps of the benchmark scripts (sourced, not run): release builds,
# the real backends, one `promo standalone` at a time on a free loopback port.
# Sets: port (the server's), pid (while one runs). Needs log() from the caller.

cargo build --release -q --bin promo --bin promo-bench
scripts/infra.sh up >/dev/null
eval "$(scripts/infra.sh env | sed 's/^/export /')"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; true' EXIT

# drop_databases PREFIX: the services' databases under PREFIX (never the
# promo_* ones `just run-real` uses).
drop_databases() {
  for db in promo_coupon promo_timesale promo_point; do
    mariadb -uroot -e "DROP DATABASE IF EXISTS $1$db" 2>/dev/null || mysql -uroot -e "DROP DATABASE IF EXISTS $1$db" 2>/dev/null || true
  done
}

# real_args PREFIX TAG: flags for MariaDB (databases under PREFIX) and tansu
# (topics and groups named after TAG); the caller adds the counters.
real_args() {
  echo --database-prefix "$1" --mysql-url "$PROMO_MYSQL_URL" --kafka-brokers "$PROMO_KAFKA_BROKERS" \
    --coupon-topic "$2.coupon" --coupon-consumer-group "$2-c" \
    --timesale-topic "$2.timesale" --timesale-consumer-group "$2-t"
}

# "${only_flags[@]}" CMD...: runs CMD without the PROMO_* URLs exported
# above, so that only its flags choose the backends (the URLs would
# otherwise turn an embedded run into a real one). A command prefix, not a
# function: `env` execs CMD, so `$!` after `... &` is CMD's own pid.
only_flags=(env -u PROMO_MYSQL_URL -u PROMO_REDIS_URL -u PROMO_REDIS_CLUSTER_NODES -u PROMO_KAFKA_BROKERS RUST_LOG=warn)

# wait_ready PORT LOG: waits (30 s at most) until 127.0.0.1:PORT answers
# /readyz; otherwise shows the end of LOG and exits.
wait_ready() {
  for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0
    sleep 0.2
  done
  log "the server on 127.0.0.1:$1 never became ready (30 s); its log:"; tail -20 "$2" >&2
  exit 1
}

# start_standalone LOG ARGS...: runs `promo standalone ARGS` on $port, its
# output in LOG, and waits until it is ready.
start_standalone() {
  local out=$1; shift
  "${only_flags[@]}" target/release/promo standalone --listen "127.0.0.1:$port" --promotions /nonexistent "$@" > "$out" 2>&1 &
  pid=$!
  wait_ready "$port" "$out"
}

stop_standalone() {
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}

# unlink_prefix TAG: the run's Redis keys on single Redis.
unlink_prefix() {
  redis-cli -u "$PROMO_REDIS_URL" --scan --pattern "$1:*" | xargs -r -n 5000 redis-cli -u "$PROMO_REDIS_URL" unlink >/dev/null
}

# mode_args MODE PREFIX TAG: the flags of one run — none for the embedded
# default; for real, MariaDB databases under PREFIX (dropped first) and the
# topics, groups and Redis keys named after TAG, on a fresh (empty) tansu
# (see `scripts/infra.sh fresh-broker`).
mode_args() {
  [ "$1" = real ] || return 0
  drop_databases "$2"
  scripts/infra.sh fresh-broker
  echo "$(real_args "$2" "$3") --redis-url $PROMO_REDIS_URL --redis-prefix $3:"
}

# end_run MODE DATA TAG: stops the standalone, removes its data folder and,
# on real, the run's Redis keys.
end_run() {
  stop_standalone
  rm -rf "$2"
  if [ "$1" = real ]; then unlink_prefix "$3"; fi
}
