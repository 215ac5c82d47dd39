#!/usr/bin/env bash
# The full compliance report over a month of a large tenant: generate 30 days at SCALE
# (62 ≈ 30 M events), ingest them into a fresh store (kept between runs), then time
# `kvwatch report --kind compliance` in each format and print peak RSS. Release build.
#
#   bench/report.sh [SCALE]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvwatch/target}"
scale="${1:-62}"
work="${KVWATCH_BENCH_DIR:-/tmp/kvwatch-bench-report}"
cargo build --release --quiet
kv="$CARGO_TARGET_DIR/release/kvwatch"
mkdir -p "$work"
data="$work/store-$scale"
if [ ! -f "$data/manifest.json" ]; then
    rm -rf "$work/gen" "$data"
    # Five days at a time: a month of JSON at this scale is ~35 GB, the store ~2 GB.
    for start in 2026-03-01 2026-03-06 2026-03-11 2026-03-16 2026-03-21 2026-03-26; do
        echo "== generate and ingest 5 days from $start at scale $scale"
        "$kv" generate --out "$work/gen" --format jsonl --start "$start" --days 5 --scale "$scale" \
            --seed 42 >/dev/null 2>&1
        "$kv" --data "$data" ingest "$work/gen/jsonl" --format json >"$work/ingest-$start.json"
        rm -rf "$work/gen"
    done
    echo "== detect"
    "$kv" --data "$data" detect --no-models >/dev/null
fi
"$kv" --data "$data" query --format csv "SELECT count(*) AS events FROM events"
for f in json html csv; do
    /usr/bin/time -f "%e s wall, %M KiB peak RSS" "$kv" --data "$data" report --kind compliance \
        --format "$f" --out "$work/report.$f" 2>&1 | tail -2
done
ls -la "$work"/report.*
