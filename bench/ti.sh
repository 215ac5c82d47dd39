#!/usr/bin/env bash
# Threat-intelligence lists at realistic length: `kv-ti-listed-ip` alone over the detection
# benchmark's week (bench/detect.sh makes it), with a TOR exit list of N addresses (IPv4 and
# IPv6) and a suspicious list of /24s, a few of them addresses the store really has.
#
#   bench/ti.sh              # N=2000 over store-scale90
#   N=20000 SCALE=10 bench/ti.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvwatch/target}"
cargo build --release --locked -q
BIN="$CARGO_TARGET_DIR/release/kvwatch"
SCALE="${SCALE:-90}"
N="${N:-2000}"
WORK="${BENCH_DIR:-/tmp/kvwatch-bench-detect}"
STORE="$WORK/store-scale$SCALE"
if [ ! -f "$STORE/manifest.json" ]; then
  echo "no store at $STORE: run bench/detect.sh (same SCALE) first" >&2
  exit 1
fi
TI="$WORK/ti"
rm -rf "$TI" && mkdir -p "$TI/rules" "$TI/state"
cp rules/kv-ti-listed-ip.yaml "$TI/rules/"
# Five addresses the store has (one event or more each) go into the lists, so the run alerts.
"$BIN" --data "$STORE" query --format csv \
  "SELECT caller_ip FROM events WHERE caller_ip LIKE '%.%' GROUP BY caller_ip ORDER BY count(*), caller_ip LIMIT 5" \
  | tail -n +2 > "$TI/real.txt"
python3 - "$TI" "$N" <<'PY'
import random, sys
ti, n = sys.argv[1], int(sys.argv[2])
real = open(f"{ti}/real.txt").read().split()
rnd = random.Random(7)
v4 = lambda: ".".join(str(rnd.randint(1, 254)) for _ in range(4))
v6 = lambda: f"2a0b:f4c2:{rnd.randint(0, 65535):x}::{rnd.randint(1, 65535):x}"
tor = real[:3] + [v4() if i % 5 else v6() for i in range(n - 3)]
suspicious = [real[3].rsplit(".", 1)[0] + ".0/24", real[4]] + [v4().rsplit(".", 1)[0] + ".0/24" for _ in range(n // 10)]
with open(f"{ti}/kvwatch.toml", "w") as f:
    f.write("[rules.kv-ti-listed-ip.params]\n")
    f.write(f"tor_exit_cidrs = {tor!r}\nsuspicious_cidrs = {suspicious!r}\n")
print(f"lists: {len(tor)} TOR exit addresses, {len(suspicious)} suspicious ranges")
PY
T0=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$TI/rss" "$BIN" --data "$STORE" detect --state "$TI/state" --config "$TI/kvwatch.toml" \
  --rules "$TI/rules" --no-models --from 2000-01-01 --to 2100-01-01 --format json > "$TI/detect.json"
T1=$(date +%s.%N)
python3 - "$TI" "$(echo "$T1 - $T0" | bc -l)" <<'PY'
import json, sys
ti, secs = sys.argv[1], float(sys.argv[2])
rep = json.load(open(f"{ti}/detect.json"))
rss = int(open(f"{ti}/rss").read().split()[-1]) / 1024
rule = rep["rules"][0]
if rep["failed"]:
    sys.exit(f"the rule failed: {rep['failed']}")
print(f"kv-ti-listed-ip: {secs:.2f} s wall (rule {rule['elapsed_ms'] / 1000:.2f} s), "
      f"{rep['created']} alerts, peak RSS {rss:.0f} MiB")
if rep["created"] == 0:
    sys.exit("no alert: the listed addresses the store has were not found")
PY
