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
listings "http://127.0.0.1:$port/api/v1/alerts" "$key"
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
