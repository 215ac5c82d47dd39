# Sourced by bench/api.sh and bench/console.sh: a release build, a store of N alerts
# (bench/fill_alerts.py, made once and kept under $KVWATCH_BENCH_DIR) and `kvwatch serve` on
# it with one fresh key of ROLE. Sets kv, work, data, key, port and pids (killed on exit).
#
#   source bench/alert_store.sh N ROLE LOG
n="$1"
role="$2"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvwatch/target}"
work="${KVWATCH_BENCH_DIR:-/tmp/kvwatch-bench-api}"
cargo build --release --quiet
kv="$CARGO_TARGET_DIR/release/kvwatch"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
data="$work/data-$n"
if [ ! -f "$data/alerts.db" ]; then
    rm -rf "$data"
    mkdir -p "$work"
    "$kv" --data "$data" sinks list >/dev/null   # creates and migrates the alert store
    python3 bench/fill_alerts.py "$data/alerts.db" "$n"
fi
rm -f "$data/auth.db"*
key=$("$kv" --data "$data" apikey create --role "$role" --name bench 2>/dev/null)
port=$(free_port)
"$kv" --data "$data" serve --listen "127.0.0.1:$port" --interval 86400 --no-models --no-forward \
    >"$work/$3" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
