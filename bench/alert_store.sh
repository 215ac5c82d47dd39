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

# GET /api/v1/alerts listings under 50 clients: `listings BASE_URL KEY` (after a warm-up that
# fills the page cache and the server's reader pool).
listings() {
    local base="$1" key="$2"
    local cursor
    cursor=$(curl -sf -H "Authorization: Bearer $key" "$base?limit=1000&sort=-last_seen" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next_cursor"])')
    wrk -t2 -c50 -d5s -H "Authorization: Bearer $key" "$base?limit=100" >/dev/null
    for q in "limit=100" "severity=high&limit=100" "status=new&rule=kv-rule-7&limit=100" \
             "limit=100&cursor=$cursor" "vault=kv-0042&limit=50" "q=user42@&limit=50"; do
        echo "== GET /api/v1/alerts?$q (50 connections, 20 s)"
        wrk -t2 -c50 -d20s --latency -H "Authorization: Bearer $key" "$base?$q" \
            | grep -E "Requests/sec|^ +(50|90|99)%|Non-2xx|Socket errors" || true
    done
}
