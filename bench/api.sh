#!/usr/bin/env bash
# HTTP API under load: GET /api/v1/alerts with N alerts in the store (default 1 M) under 50
# concurrent clients (wrk, loopback, on the same two cores as the server), then forwarding
# throughput from the same store to a local Splunk-HEC-like receiver.
#
#   bench/api.sh [N]        needs wrk (apt-get install wrk) and python3
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"
source bench/alert_store.sh "$n" reader serve.log
base="http://127.0.0.1:$port/api/v1/alerts"
cursor=$(curl -sf -H "Authorization: Bearer $key" "$base?limit=1000&sort=-last_seen" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next_cursor"])')
# Warm-up (not reported): fills the page cache and the server's reader pool.
wrk -t2 -c50 -d5s -H "Authorization: Bearer $key" "$base?limit=100" >/dev/null
for q in "limit=100" "severity=high&limit=100" "status=new&rule=kv-rule-7&limit=100" \
         "limit=100&cursor=$cursor" "vault=kv-0042&limit=50" "q=user42@&limit=50"; do
    echo "== GET /api/v1/alerts?$q (50 connections, 20 s)"
    wrk -t2 -c50 -d20s --latency -H "Authorization: Bearer $key" "$base?$q" \
        | grep -E "Requests/sec|^ +(50|90|99)%|Non-2xx|Socket errors" || true
done
kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; pids=()

echo "== forwarding to a local HEC-like receiver"
sink_port=$(free_port)
python3 bench/hec_sink.py "$sink_port" &
pids+=($!)
cat >"$work/forward.toml" <<TOML
[[sinks]]
name = "bench-hec-$(date +%s)"
type = "splunk_hec"
url = "http://127.0.0.1:$sink_port"
token = "bench"
batch_size = 2000
TOML
port=$(free_port)
"$kv" --data "$data" --config "$work/forward.toml" serve --listen "127.0.0.1:$port" --interval 86400 \
    --no-models >"$work/serve-forward.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$sink_port/" >/dev/null && break; sleep 0.1; done
target=$(( n < 300000 ? n : 300000 ))
start=$(date +%s.%N)
while :; do
    got=$(curl -sf "http://127.0.0.1:$sink_port/" || echo 0)
    [ "$got" -ge "$target" ] && break
    sleep 0.2
done
end=$(date +%s.%N)
python3 -c "import sys; n=int(sys.argv[1]); s=float(sys.argv[3])-float(sys.argv[2]); print(f'delivered {n:,} alerts in {s:.1f} s: {n/s:,.0f} alerts/s')" "$got" "$start" "$end"
