#!/usr/bin/env bash
# Kafka end to end: publish ~1 M realistic records to a local tansu broker (4 partitions, on
# the same machine), then consume them into a fresh store and print records/s and the
# consumer lag over time. Release build; the broker is the one scripts/test.sh installs.
#
#   bench/kafka.sh [SCALE [CONSUME FLAGS...]]   SCALE 12 ≈ 1.4 M records (a week at scale 12)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvwatch/target}"
scale="${1:-12}"
shift || true
tansu="${KVWATCH_TANSU:-$HOME/.cache/kvwatch/tansu/bin/tansu}"
work="${KVWATCH_BENCH_DIR:-/tmp/kvwatch-bench-kafka}"
cargo build --release --quiet
kv="$CARGO_TARGET_DIR/release/kvwatch"
mkdir -p "$work"
if [ ! -d "$work/gen-$scale/jsonl" ]; then
    "$kv" generate --out "$work/gen-$scale" --format jsonl --days 7 --scale "$scale" --attacks none --seed 42 >/dev/null
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$work/broker.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true' EXIT
for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
"$tansu" topic create --broker "tcp://127.0.0.1:$port" --partitions 4 kv >/dev/null

echo "== publish"
"$kv" publish --brokers "127.0.0.1:$port" --topic kv "$work/gen-$scale/jsonl" --format json >"$work/publish.json"
python3 - "$work/publish.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"published {r['records']:,} records in {r['messages']:,} messages, {r['bytes'] / 2**20:.0f} MiB, "
      f"{r['elapsed_secs']:.1f} s, {r['records_per_sec']:,.0f} records/s")
EOF

# tansu answers every fetch only after fetch.wait.max.ms (librdkafka's default 500 ms) even when
# data is waiting, where Kafka and Event Hubs answer as soon as fetch.min.bytes is there; with
# the default the consumer is limited to ~20 k records/s by that wait alone, so lower it here.
echo "== consume (lag sampled every 2 s from librdkafka statistics)"
rm -rf "$work/store" "$work/consume.log"
total=$(cat "$work"/gen-"$scale"/jsonl/*.jsonl | wc -l)
start=$(date +%s.%N)
"$kv" --data "$work/store" --log info consume --brokers "127.0.0.1:$port" --topic kv \
    --group bench --stats-interval-secs 2 --compact-interval-secs 0 --format json \
    -X fetch.wait.max.ms=5 "$@" \
    >"$work/consume.json" 2>"$work/consume.log" &
consumer=$!
# Stop once every record is stored (the manifest's row counts; no query engine in the loop).
# One watcher process, reading a little every 0.5 s, so the measurement costs next to no CPU;
# the end time is the last manifest commit, not when the watcher noticed it.
read -r end hwm < <(python3 - "$work" "$consumer" "$total" <<'EOF'
import json, os, re, sys, time
work, pid, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
hwm = 0
while True:
    time.sleep(0.5)
    try:
        hwm = int(re.search(r"VmHWM:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))
    except (OSError, AttributeError):
        pass
    try:
        m = json.load(open(f"{work}/store/manifest.json"))
        rows = sum(f["rows"] for t in ("events", "activity", "quarantine") for f in m["tables"].get(t, []))
    except (OSError, ValueError):
        rows = 0
    # Duplicates in the input are not stored: also stop when the consumer's durable record
    # count (logged every 2 s) reaches the input.
    logged = [int(x) for x in re.findall(r"records=(\d+)", open(f"{work}/consume.log").read())]
    if rows >= total or (logged and logged[-1] >= total):
        break
print(os.path.getmtime(f"{work}/store/manifest.json"), hwm)
EOF
)
kill -TERM $consumer
wait $consumer || true
python3 - "$work" "$start" "$end" "$total" "${hwm:-0}" <<'EOF'
import json, re, sys
work, start, end, total, hwm = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
log = open(f"{work}/consume.log").read()
ansi = re.compile(r"\x1b\[[0-9;]*m")
print("time     records   records/s  lag (messages per partition)")
for line in ansi.sub("", log).splitlines():
    if "consumer progress" in line:
        t = line[11:19]
        rec = re.search(r"records=(\d+)", line).group(1)
        rate = re.search(r"records_per_sec=([\d.]+)", line).group(1)
        lag = re.search(r"lag=(\{.*\})", line)
        print(f"{t}  {int(rec):>9,}  {float(rate):>9,.0f}  {lag.group(1) if lag else ''}")
r = json.load(open(f"{work}/consume.json"))
wall = end - start
print(f"consumed {r['records']:,} records ({r['events']:,} events, {r['quarantined']:,} quarantined, "
      f"{r['duplicates']:,} duplicates) in {r['batches']} batches")
print(f"end to end: {total:,} records in {wall:.1f} s = {total / wall:,.0f} records/s "
      f"(from consumer start to the last row durable, including group join)")
print(f"consumer peak RSS: {hwm / 1024:.0f} MiB")
EOF
