#!/usr/bin/env bash
# Analyst SQL through `kvwatch serve` (release build): what the worker processes cost, and
# what the rest of the API sees while a runaway query runs.
#
#   bench/sql.sh [DAYS]      a generated store of DAYS days (default 7, ~140 k events/day)
#
# Prints: the first query (a worker is started), then p50/p95 of repeated queries on a warm
# worker, then /healthz and GET /alerts latency while a cross join runs into its timeout, and
# the service's own peak memory after memory-hungry queries.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvwatch/target}"
days="${1:-7}"
work="${KVWATCH_BENCH_DIR:-/tmp/kvwatch-bench-sql}"
cargo build --release --quiet
kv="$CARGO_TARGET_DIR/release/kvwatch"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
data="$work/data-$days"
if [ ! -f "$data/manifest.json" ]; then
    rm -rf "$data" "$work/gen-$days"
    "$kv" generate --out "$work/gen-$days" --days "$days" --format jsonl >/dev/null 2>&1
    "$kv" --data "$data" ingest "$work/gen-$days/jsonl" >/dev/null
    "$kv" --data "$data" detect --no-models >/dev/null
fi
rm -f "$data/auth.db"*
key=$("$kv" --data "$data" apikey create --role analyst --name bench 2>/dev/null)
port=$(free_port)
"$kv" --data "$data" serve --listen "127.0.0.1:$port" --interval 86400 --no-models --no-forward \
    --sql-timeout-secs 10 >"$work/serve.log" 2>&1 &
pids+=($!)
serve_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
events=$("$kv" --data "$data" query --format csv "SELECT count(*) AS n FROM events" | tail -1)
echo "store: $days days, $events events; machine: $(nproc) cores, $(uname -r)"
python3 - "$port" "$key" "$serve_pid" <<'PY'
import json, statistics, sys, threading, time, urllib.request, urllib.error
port, key, pid = sys.argv[1], sys.argv[2], sys.argv[3]
base = f"http://127.0.0.1:{port}"
def call(method, path, body=None):
    req = urllib.request.Request(base + path, method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        data=None if body is None else json.dumps(body).encode())
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read(); code = r.status
    except urllib.error.HTTPError as e:
        e.read(); code = e.code
    return code, (time.perf_counter() - t) * 1000
def q(sql): return call("POST", "/api/v1/query", {"sql": sql})
code, ms = q("SELECT 1 AS x")
print(f"first query (starts a worker)      {ms:8.1f} ms  ({code})")
for name, sql in [
    ("SELECT 1", "SELECT 1 AS x"),
    ("count(*) over events", "SELECT count(*) AS n FROM events"),
    ("reads per vault and operation", "SELECT vault, operation, count(*) AS n FROM events GROUP BY 1, 2 ORDER BY 3 DESC"),
    ("one principal's trail (500 rows)", "SELECT time, vault, operation, object_name FROM events WHERE principal_upn LIKE 'dev%' ORDER BY time LIMIT 500"),
]:
    runs = sorted(q(sql)[1] for _ in range(30))
    print(f"{name:<34} p50 {statistics.median(runs):7.1f} ms  p95 {runs[int(len(runs)*0.95)-1]:7.1f} ms")
result = {}
def runaway():
    result["r"] = q("SELECT count(*) FROM events a, events b, events c WHERE a.vault || b.vault = c.vault")
t = threading.Thread(target=runaway); t.start(); time.sleep(1.0)
health, alerts = [], []
while t.is_alive():
    health.append(call("GET", "/healthz")[1]); alerts.append(call("GET", "/api/v1/alerts?limit=100")[1])
    time.sleep(0.05)
t.join()
health.sort(); alerts.sort()
print(f"runaway cross join: answered {result['r'][0]} after {result['r'][1]/1000:.1f} s (limit 10 s)")
print(f"  meanwhile /healthz   p50 {statistics.median(health):6.1f} ms  max {health[-1]:6.1f} ms  ({len(health)} calls)")
print(f"  meanwhile GET alerts p50 {statistics.median(alerts):6.1f} ms  max {alerts[-1]:6.1f} ms")
for sql in ["SELECT length(repeat('x', 2000000000)) AS n",
            "SELECT length(string_agg(repeat('x', 1000), '')) AS n FROM generate_series(1, 10000000)"]:
    code, ms = q(sql)
    print(f"memory-hungry query: {code} after {ms:.0f} ms")
with open(f"/proc/{pid}/status") as f:
    hwm = [l for l in f if l.startswith("VmHWM")][0].split()[1]
print(f"serve peak RSS (VmHWM): {int(hwm)//1024} MiB")
PY
