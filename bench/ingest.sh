#!/usr/bin/env bash
# Ingest benchmark: ≥ 1 M realistic (~1 KB) Key Vault records from JSON Lines into the store.
# Prints records/s and peak RSS for kvwatch on one core and on two, then times DuckDB reading
# the same file with read_json and writing zstd Parquet (pip install duckdb).
#
#   bench/ingest.sh            # 1 M+ records
#   SCALE=30 bench/ingest.sh   # bigger input (memory must stay flat)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvwatch/target}"
cargo build --release --locked -q
BIN="$CARGO_TARGET_DIR/release/kvwatch"
SCALE="${SCALE:-14}"
WORK="${BENCH_DIR:-$(mktemp -d /tmp/kvwatch-bench-XXXX)}"
mkdir -p "$WORK"
INPUT="$WORK/events-scale$SCALE.jsonl"
if [ ! -s "$INPUT" ]; then
  "$BIN" generate --out "$WORK/gen" --format jsonl --days 7 --scale "$SCALE" --attacks none --seed 42 >/dev/null
  cat "$WORK"/gen/jsonl/*.jsonl > "$INPUT"
  rm -rf "$WORK/gen"
fi
RECORDS=$(wc -l < "$INPUT")
BYTES=$(stat -L -c %s "$INPUT")
echo "input: $INPUT"
printf 'records: %d  size: %.0f MiB  avg record: %d bytes\n' "$RECORDS" "$(echo "$BYTES/1048576" | bc -l)" $((BYTES / RECORDS))

run_kvwatch() {
  local label="$1" cpus="$2"
  rm -rf "$WORK/store"
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$WORK/rss" taskset -c "$cpus" "$BIN" --data "$WORK/store" ingest --no-compact --format json "$INPUT" > "$WORK/report.json"
  t1=$(date +%s.%N)
  local secs rss stored
  secs=$(echo "$t1 - $t0" | bc -l)
  rss=$(tail -1 "$WORK/rss")
  stored=$(python3 -c "import json;print(json.load(open('$WORK/report.json'))['stored']['events'])")
  printf '%-22s %8.2f s  %10.0f records/s  peak RSS %6.0f MiB  stored %d\n' "$label" "$secs" "$(echo "$RECORDS / $secs" | bc -l)" "$(echo "$rss/1024" | bc -l)" "$stored"
}
run_kvwatch "kvwatch (1 core)" 0
run_kvwatch "kvwatch (2 cores)" 0,1
du -sh "$WORK/store" | awk '{print "store size: " $1}'

if ! python3 -c "import duckdb" 2>/dev/null; then
  pip install -q duckdb >/dev/null 2>&1 || true
fi
if python3 -c "import duckdb" 2>/dev/null; then
  for threads in 1 2; do
    rm -f "$WORK/duck.parquet"
    python3 - "$INPUT" "$WORK/duck.parquet" "$threads" "$RECORDS" <<'PY'
import duckdb, sys, time, resource
src, dst, threads, records = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
con = duckdb.connect()
con.execute(f"SET threads={threads}")
t = time.time()
con.execute(f"COPY (SELECT * FROM read_json('{src}', format='newline_delimited', sample_size=-1)) TO '{dst}' (FORMAT parquet, COMPRESSION zstd)")
secs = time.time() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{'duckdb %s (%d thread%s)' % (duckdb.__version__, threads, 's' if threads > 1 else ''):<22} {secs:8.2f} s  {records/secs:10.0f} records/s  peak RSS {rss:6.0f} MiB")
PY
  done
else
  echo "duckdb: not installed (pip install duckdb) — comparison skipped"
fi
[ -z "${BENCH_DIR:-}" ] && rm -rf "$WORK/store" "$WORK/duck.parquet"
