#!/usr/bin/env bash
# Continuous detection end to end: a tansu broker, `kvwatch serve` with default settings
# consuming it, a generated week published one day at a time while serve runs, then single
# attack records (a secret purge, each by a new principal) published one by one and timed
# from the publish acknowledgement to the first `GET /api/v1/alerts` that shows the alert.
# Prints event→alert latency p50/p95/p99/max, per-day catch-up and serve's peak RSS.
#
#   bench/stream.sh [SCALE [ATTACKS]]    defaults: scale 1, 40 attack records
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvwatch/target}"
scale="${1:-1}"
attacks="${2:-40}"
tansu="${KVWATCH_TANSU:-$HOME/.cache/kvwatch/tansu/bin/tansu}"
work="${KVWATCH_BENCH_DIR:-/tmp/kvwatch-bench-stream}"
cargo build --release --quiet
kv="$CARGO_TARGET_DIR/release/kvwatch"
mkdir -p "$work"
gen="$work/gen-$scale"
if [ ! -d "$gen/jsonl" ]; then
    "$kv" generate --out "$gen" --format jsonl --days 7 --scale "$scale" --attacks none --seed 42 >/dev/null
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
bport=$(free_port)
"$tansu" broker --listener-url "tcp://127.0.0.1:$bport" --advertised-listener-url "tcp://127.0.0.1:$bport" \
    --storage-engine memory://tansu/ >"$work/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/$bport) 2>/dev/null && break; sleep 0.2; done
"$tansu" topic create --broker "tcp://127.0.0.1:$bport" --partitions 4 kv >/dev/null

data="$work/data"
rm -rf "$data"
mkdir -p "$data"
key=$("$kv" --data "$data" apikey create --role reader --name bench 2>/dev/null)
port=$(free_port)
# Default settings, except that tansu answers a fetch only after fetch.wait.max.ms (see
# bench/kafka.sh); Event Hubs answers as soon as data is there.
"$kv" --data "$data" --log info serve --listen "127.0.0.1:$port" --brokers "127.0.0.1:$bport" \
    --topic kv -X fetch.wait.max.ms=5 >"$work/serve.log" 2>&1 &
serve=$!
pids+=($serve)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

python3 - "$kv" "$bport" "$port" "$key" "$gen" "$data" "$attacks" "$serve" <<'EOF'
import glob, json, os, statistics, subprocess, sys, time, urllib.request, uuid
kv, bport, port, key, gen, data, attacks, serve = sys.argv[1:]
attacks = int(attacks)
brokers = f"127.0.0.1:{bport}"

def rows():
    try:
        m = json.load(open(os.path.join(data, "manifest.json")))
    except Exception:
        return 0
    return sum(f["rows"] for t in ("events", "activity", "quarantine") for f in m["tables"].get(t, []))

def api(path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)

def publish(path):
    subprocess.run([kv, "publish", "--brokers", brokers, "--topic", "kv", path, "--format", "json"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def hwm():
    for line in open(f"/proc/{serve}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) // 1024
    return 0

days = sorted(glob.glob(os.path.join(gen, "jsonl", "*.jsonl")))
expected = 0
last_time = None
print(f"== the week, one day at a time ({len(days)} days)")
for d in days:
    with open(d) as f:
        lines = f.readlines()
    expected += len(lines)
    last_time = max(json.loads(l)["time"] for l in lines[-50:])
    t0 = time.monotonic()
    publish(d)
    while rows() < expected:
        time.sleep(0.2)
    stored = time.monotonic() - t0
    # Wait for the detection pass over the day to finish (the metrics say when one ended).
    print(f"  {os.path.basename(d)}: {len(lines):,} records stored {stored:.1f} s after publish started")
time.sleep(5)

# Single attack records, after the week (event time just past its end).
base = last_time[:19]
from datetime import datetime, timedelta, timezone
t_base = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
lat = []
print(f"== {attacks} single attack records (SecretPurge, each by a new principal)")
for i in range(attacks):
    oid = str(uuid.UUID(int=0x5eed0000_0000_4000_8000_000000000000 + i))
    t = (t_base + timedelta(seconds=30 * (i + 1))).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    rec = {
        "time": t, "category": "AuditEvent", "operationName": "SecretPurge",
        "resourceId": "/SUBSCRIPTIONS/00000000-0000-4000-8000-0000000000AA/RESOURCEGROUPS/PROD-RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/CONTOSO-PROD-KV",
        "operationVersion": "7.4", "resultType": "Success", "resultSignature": "OK", "durationMs": "12",
        "callerIpAddress": "198.51.100.77", "correlationId": str(uuid.uuid4()),
        "identity": {"claim": {"oid": oid, "appid": "04b07795-8ddb-461a-bbee-02f9e1bf7b46"}},
        "properties": {"id": f"https://contoso-prod-kv.vault.azure.net/deletedsecrets/bench-{i}",
                        "clientInfo": "bench", "httpStatusCode": 200, "requestUri": "https://contoso-prod-kv.vault.azure.net/deletedsecrets/bench-{i}?api-version=7.4",
                        "isAccessPolicyMatch": True},
    }
    p = os.path.join(os.path.dirname(data), "attack.json")
    with open(p, "w") as f:
        json.dump({"records": [rec]}, f)
    publish(p)
    t0 = time.monotonic()
    while True:
        r = api(f"/api/v1/alerts?rule=kv-sens-purge&principal={oid}")
        if r["alerts"]:
            break
        if time.monotonic() - t0 > 120:
            sys.exit(f"attack {i}: no alert after 120 s")
        time.sleep(0.02)
    lat.append(time.monotonic() - t0)
    time.sleep(0.5)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(round(p * (len(lat) - 1))))]
print(f"event→alert latency over {len(lat)} records: p50 {q(0.5):.2f} s, p95 {q(0.95):.2f} s, "
      f"p99 {q(0.99):.2f} s, max {lat[-1]:.2f} s")
silence = api("/api/v1/alerts?rule=kv-log-silence")["alerts"]
print(f"silence alerts over the streamed week: {len(silence)}")
print(f"serve peak RSS: {hwm()} MiB")
EOF
grep -E "detect.pass" "$work/serve.log" | tail -3 | cut -c1-300
