#!/usr/bin/env bash
# Detection quality, reproducible with one command: for seeds 1-5 at scale 1 and seed 10 at
# scale 10, generate a week with every attack (loud and careful), ingest, detect (rules and
# models), and score — once with all alerts and once with the rules' alerts only; then the
# careful classes alone over twenty seeds, with recall per class.
#
#   bench/eval.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvwatch/target}"
cargo build --release --locked -q
K="$CARGO_TARGET_DIR/release/kvwatch"
WORK="${BENCH_DIR:-$(mktemp -d /tmp/kvwatch-eval-XXXX)}"
mkdir -p "$WORK"
run() { # seed scale
  local s=$1 sc=$2 d="$WORK/seed$1-scale$2"
  rm -rf "$d"
  "$K" --data "$d" demo --seed "$s" --scale "$sc" > "$d.demo.txt" 2>&1
  "$K" --data "$d" alerts --format json > "$d.alerts.json"
  python3 -c "import json,sys;a=json.load(open(sys.argv[1]));json.dump([x for x in a if not x['rule_id'].startswith('anomaly-')],open(sys.argv[2],'w'))" "$d.alerts.json" "$d.rules.json"
  "$K" --data "$d" eval --labels "$d/demo-labels.json" --format json > "$d.both.json"
  "$K" --data "$d" eval --labels "$d/demo-labels.json" --alerts-file "$d.rules.json" --format json > "$d.rulesonly.json"
  python3 - "$d" "$s" "$sc" <<'PY'
import json, sys
d, s, sc = sys.argv[1:]
for kind, label in [("rulesonly", "rules"), ("both", "rules+models")]:
    ev = json.load(open(f"{d}.{kind}.json"))
    miss = [r["kind"] for r in ev["attacks"] if not r["detected"]]
    classes = ", ".join(f"{k} {c['detected']}/{c['attacks']}" for k, c in ev["classes"].items())
    print(f"| {s} | {sc} | {label} | {ev['detected']}/{len(ev['attacks'])} | {classes} | {', '.join(miss) or '-'} | "
          f"{ev['alerts']} | {ev['benign_alerts']} ({ev['benign_alerts']/7:.1f}/day) | {ev['benign_alerts_medium_plus']} | {ev['events']:,} |")
PY
}
echo "| seed | scale | alerts from | recall | per class | missed | alerts | benign (per day) | benign medium+ | events |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for s in 1 2 3 4 5; do run "$s" 1; done
run 10 10

# The careful classes alone, one attack of each per seed over twenty seeds, so that no attack
# is caught by another's alerts: recall per class, and the benign alerts of medium or higher
# split by where they come from (the models, or the catalog's rules on the benign personas'
# sanctioned changes, such as an admin granting a developer access).
echo
echo "Careful classes, seeds 1-20, scale 1:"
for s in $(seq 1 20); do
  d="$WORK/careful-$s"
  rm -rf "$d"
  "$K" --data "$d" demo --seed "$s" --attacks careful > "$d.demo.txt" 2>&1
  "$K" --data "$d" alerts --format json > "$d.alerts.json"
  "$K" --data "$d" eval --labels "$d/demo-labels.json" --format json > "$d.eval.json"
done
python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
tot, benign = {}, {"models": 0, "rules": 0}
for s in range(1, 21):
    ev = json.load(open(f"{work}/careful-{s}.eval.json"))
    hit = {a for r in ev["attacks"] for a, _ in r["alerts"]}
    for k, c in ev["classes"].items():
        t = tot.setdefault(k, [0, 0]); t[0] += c["detected"]; t[1] += c["attacks"]
    for a in json.load(open(f"{work}/careful-{s}.alerts.json")):
        if a["id"] not in hit and a["severity"].lower() in ("medium", "high", "critical"):
            benign["models" if a["rule_id"].startswith("anomaly-") else "rules"] += 1
print("| class | recall |")
print("|---|---|")
for k, (d, n) in sorted(tot.items()):
    print(f"| {k} | {d}/{n} = {d / n:.2f} |")
print(f"benign medium+ over 20 weeks: {benign['models']} from the models "
      f"({benign['models'] / 20:.2f}/week), {benign['rules']} from rules ({benign['rules'] / 20:.2f}/week)")
PY
