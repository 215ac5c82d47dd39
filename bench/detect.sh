#!/usr/bin/env bash
# Detection benchmark: the full rule pack over a week of ≥ 10 M events, backfilled in one pass
# per rule, then the same rendered SQL run by DuckDB over the same Parquet files.
#
#   bench/detect.sh              # scale 90 × 7 days ≈ 10.4 M events (generation ~5 min, once)
#   SCALE=10 bench/detect.sh     # a quicker look
#
# Needs DuckDB (`pip install duckdb`, into the venv scripts/test.sh keeps). The store is kept in $BENCH_DIR between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvwatch/target}"
cargo build --release --locked -q
BIN="$CARGO_TARGET_DIR/release/kvwatch"
SCALE="${SCALE:-90}"
WORK="${BENCH_DIR:-/tmp/kvwatch-bench-detect}"
STORE="$WORK/store-scale$SCALE"
PY="${KVWATCH_PYENV:-$HOME/.cache/kvwatch/pyenv}/bin/python"
[ -x "$PY" ] || PY=python3
mkdir -p "$WORK"
if [ ! -f "$STORE/manifest.json" ]; then
  echo "generating scale $SCALE x 7 days (once)..."
  rm -rf "$WORK/gen"
  "$BIN" generate --out "$WORK/gen" --format jsonl --days 7 --scale "$SCALE" --attacks all --seed 42 --summary-format json >/dev/null
  "$BIN" --data "$STORE" ingest --format json "$WORK/gen" > "$WORK/ingest.json"
  cp "$WORK/gen/labels.json" "$STORE/bench-labels.json"
  rm -rf "$WORK/gen"
fi
EVENTS=$("$BIN" --data "$STORE" query --format csv "SELECT count(*) AS n FROM events" | tail -1)
echo "store: $STORE  events: $EVENTS"

# kvwatch: a fresh alert store, every rule over the whole week (rules only; models below).
rm -f "$STORE"/alerts.db* "$STORE"/baselines.json
T0=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$WORK/rss" "$BIN" --data "$STORE" detect --no-models --from 2000-01-01 --to 2100-01-01 --format json > "$WORK/detect.json"
T1=$(date +%s.%N)
KV_SECS=$(echo "$T1 - $T0" | bc -l)
# The behavioural models alone (an empty rule directory), rebuilding baselines from the week.
mkdir -p "$WORK/no-rules"
/usr/bin/time -f "%M" -o "$WORK/rss-models" "$BIN" --data "$STORE" detect --rules "$WORK/no-rules" --from 2000-01-01 --to 2100-01-01 --format json > "$WORK/models.json"
python3 - "$WORK" <<'PY'
import json, sys
m = json.load(open(f"{sys.argv[1]}/models.json"))["models"]
rss = int(open(f"{sys.argv[1]}/rss-models").read().split()[-1]) / 1024
print(f"models: {m['events']:,} events, {m['hours']} hours, {m['elapsed_ms']/1000:.2f} s wall "
      f"({m['events']/(m['elapsed_ms']/1000):,.0f} events/s incl. Parquet scan), baseline learning "
      f"{m['learn_events_per_sec']:,.0f} events/s, {m['principals']:,} principals, state ~{m['state_bytes']/1048576:.1f} MiB, "
      f"{m['occurrences']} occurrences, peak RSS {rss:.0f} MiB")
PY
"$BIN" --data "$STORE" rules sql > "$WORK/rules.json"

"$PY" - "$WORK" "$STORE" "$KV_SECS" "$EVENTS" <<'PY'
import json, sys, time, glob, os
work, store, kv_secs, events = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
rep = json.load(open(f"{work}/detect.json"))
rss = int(open(f"{work}/rss").read().split()[-1]) / 1024
engine_ms = {r["rule_id"]: r["elapsed_ms"] for r in rep["rules"]}
print(f"kvwatch detect: {len(rep['rules'])} rules, {kv_secs:.2f} s wall (rules {sum(engine_ms.values())/1000:.2f} s), "
      f"{events/kv_secs:,.0f} events/s, {rep['created']} alerts, peak RSS {rss:.0f} MiB")

try:
    import duckdb
except ImportError:
    print("duckdb not installed (pip install duckdb); skipping the comparison")
    sys.exit(0)
con = duckdb.connect()
con.execute("SET threads = 2")
con.execute("SET TimeZone = 'UTC'")
man = json.load(open(f"{store}/manifest.json"))
def view(name):
    files = [f"{store}/{f['path']}" for f in man["tables"].get(name, [])]
    if files:
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({files!r})")
view("events"); view("activity")
# DataFusion's date_bin is DuckDB's time_bucket (same epoch-aligned hours and days in UTC).
con.execute("CREATE MACRO date_bin(i, t) AS time_bucket(i, t)")
# kvwatch's CIDR functions are Rust UDFs. With the pack's default (empty) address lists these
# stand-ins give the same answers; they are not general CIDR matching.
con.execute("CREATE MACRO ip_in_cidrs(ip, c) AS (ip IS NOT NULL AND ip = c)")
con.execute("CREATE MACRO cidr_prefix(c) AS TRY_CAST(split_part(c, '/', 2) AS INTEGER)")
# DataFusion's to_char(timestamp, chrono format) is DuckDB's strftime with the same format.
con.execute("CREATE MACRO to_char(t, f) AS strftime(t, f)")
rules = json.load(open(f"{work}/rules.json"))
total, failed = 0.0, []
print(f"{'rule':<32} {'kvwatch ms':>11} {'duckdb ms':>10} {'rows':>6}")
for r in rules:
    t = time.time()
    try:
        rows = con.execute(r["sql"]).fetchall()
    except Exception as e:
        failed.append((r["id"], str(e).splitlines()[0][:100]))
        continue
    ms = (time.time() - t) * 1000
    total += ms / 1000
    print(f"{r['id']:<32} {engine_ms.get(r['id'], 0):>11} {ms:>10.0f} {len(rows):>6}")
for rid, err in failed:
    print(f"{rid:<32} duckdb could not run it: {err}")
ran = [r["id"] for r in rules if r["id"] not in dict(failed)]
kv_ran = sum(engine_ms[i] for i in ran) / 1000
print(f"DuckDB {duckdb.__version__}: {len(ran)} rules in {total:.2f} s; kvwatch on the same rules {kv_ran:.2f} s "
      f"-> DuckDB/kvwatch = {total/kv_ran:.2f} (above 1 means kvwatch is faster)")
PY
