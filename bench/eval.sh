#!/usr/bin/env bash
# Detection quality, reproducible with one command: for seeds 1-5 at scale 1 and seed 10 at
# scale 10, generate a week with every attack, ingest, detect (rules and models), and score —
# once with all alerts and once with the rules' alerts only.
#
#   bench/eval.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvwatch/target}"
cargo build --release --locked -q
K="$CARGO_TARGET_DIR/release/kvwatch"
WORK="${BENCH_DIR:-$(mktemp -d /tmp/kvwatch-eval-XXXX)}"
run() { # seed scale
  local s=$1 sc=$2 d="$WORK/seed$1-scale$2"
  rm -rf "$d"
  "$K" --data "$d" demo --seed "$s" --scale "$sc" > "$d.demo.txt" 2>&1
  "$K" --data "$d" alerts --format json > "$d.alerts.json"
  python3 -c "import json,sys;a=json.load(open(sys.argv[1]));json.dump([x for x in a if not x['rule_id'].startswith('anomaly-')],open(sys.argv[2],'w'))" "$d.alerts.json" "$d.rules.json"
  "$K" --data "$d" eval --labels "$d/demo-labels.json" --format json > "$d.both.json"
  "$K" --data "$d" eval --labels "$d/demo-labels.json" --alerts "$d.rules.json" --format json > "$d.rulesonly.json"
  python3 - "$d" "$s" "$sc" <<'PY'
import json, sys
d, s, sc = sys.argv[1:]
for kind, label in [("rulesonly", "rules"), ("both", "rules+models")]:
    ev = json.load(open(f"{d}.{kind}.json"))
    miss = [r["kind"] for r in ev["attacks"] if not r["detected"]]
    print(f"| {s} | {sc} | {label} | {ev['detected']}/{len(ev['attacks'])} | {', '.join(miss) or '-'} | "
          f"{ev['alerts']} | {ev['benign_alerts']} ({ev['benign_alerts']/7:.1f}/day) | {ev['benign_alerts_medium_plus']} | {ev['events']:,} |")
PY
}
echo "| seed | scale | alerts from | recall | missed | alerts | benign (per day) | benign medium+ | events |"
echo "|---|---|---|---|---|---|---|---|---|"
for s in 1 2 3 4 5; do run "$s" 1; done
run 10 10
