#!/usr/bin/env bash
# Hunting queries, kvwatch against DuckDB on the same Parquet files. A generated store
# (~1 M events by default) is served by `kvwatch serve`; each query runs through
# `POST /api/v1/query` (the analyst's path: worker process, limits, JSON) and the same SQL
# runs in DuckDB over the files the store's manifest names, 2 threads each, warm (one run
# first, then the median of five). The results are compared row by row (timestamps as
# instants, floats to 1e-4 relative); a mismatch fails the script.
#
#   bench/query.sh                 # 7 days, scale 9 (~1 M events)
#   SCALE=30 bench/query.sh
#
# DuckDB comes from PyPI (`pip install duckdb`, into the venv scripts/test.sh keeps).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvwatch/target}"
cargo build --release --locked -q
BIN="$CARGO_TARGET_DIR/release/kvwatch"
SCALE="${SCALE:-9}"
WORK="${BENCH_DIR:-/tmp/kvwatch-bench-query}"
STORE="$WORK/store-scale$SCALE"
PY="${KVWATCH_PYENV:-$HOME/.cache/kvwatch/pyenv}/bin/python"
[ -x "$PY" ] || PY=python3
"$PY" -c 'import duckdb' 2>/dev/null || { echo "duckdb is not installed for $PY (pip install duckdb)" >&2; exit 1; }
mkdir -p "$WORK"
if [ ! -f "$STORE/manifest.json" ]; then
  echo "generating scale $SCALE x 7 days (once)..."
  rm -rf "$WORK/gen"
  "$BIN" generate --out "$WORK/gen" --format jsonl --days 7 --scale "$SCALE" --seed 7 >/dev/null
  "$BIN" --data "$STORE" ingest --format json "$WORK/gen" >/dev/null
  rm -rf "$WORK/gen"
fi
rm -f "$STORE"/auth.db*
KEY=$("$BIN" --data "$STORE" apikey create --role analyst --name bench 2>/dev/null)
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
"$BIN" --data "$STORE" serve --listen "127.0.0.1:$PORT" --interval 86400 --no-models --no-forward \
  --sql-timeout-secs 120 --sql-workers 1 >"$WORK/serve.log" 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null || true' EXIT
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
"$PY" - "$PORT" "$KEY" "$STORE" <<'PY'
import datetime, json, statistics, sys, time, urllib.request, duckdb
port, key, store = sys.argv[1], sys.argv[2], sys.argv[3]

def api(sql):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/query", method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        data=json.dumps({"sql": sql}).encode())
    with urllib.request.urlopen(req, timeout=300) as r:
        body = json.load(r)
    return [[row[c] for c in body["columns"]] for row in body["rows"]], body["truncated"]

con = duckdb.connect()
con.execute("SET threads = 2")
con.execute("SET TimeZone = 'UTC'")
man = json.load(open(f"{store}/manifest.json"))
files = [f"{store}/{f['path']}" for f in man["tables"]["events"]]
con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet({files!r})")

def norm(v):
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return round(v.timestamp(), 6)
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, str) and len(v) >= 19 and v[4] == "-" and v[10] == "T":
        try:
            return round(datetime.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp(), 6)
        except ValueError:
            return v
    return v

def rows(rs):
    return sorted((tuple(norm(v) for v in r) for r in rs),
                  key=lambda r: repr(tuple(None if isinstance(v, float) else v for v in r)))

def close(a, b):
    # Floats to 1e-4 relative: epoch seconds as doubles carry ~1e-7 s of rounding, so equal
    # gaps can be picked as different doubles by either engine's median.
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-4 * max(abs(a), abs(b), 1e-3)
    return a == b

def same_rows(x, y):
    x, y = rows(x), rows(y)
    return len(x) == len(y) and all(len(r) == len(q) and all(close(a, b) for a, b in zip(r, q))
                                    for r, q in zip(x, y))

top = con.execute("SELECT principal_upn FROM events WHERE principal_upn IS NOT NULL "
                  "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1").fetchone()[0]
reads = "operation LIKE '%Get'"
queries = [
    ("top readers per vault",
     f"SELECT vault, principal_upn, n FROM (SELECT vault, principal_upn, count(*) AS n, "
     f"row_number() OVER (PARTITION BY vault ORDER BY count(*) DESC, principal_upn) AS rn "
     f"FROM events WHERE {reads} GROUP BY vault, principal_upn) t WHERE rn <= 5 ORDER BY vault, rn"),
    ("distinct objects per principal and day",
     "SELECT principal_upn, CAST(date_trunc('day', time) AS DATE) AS day, "
     "count(DISTINCT object_name) AS objects FROM events GROUP BY 1, 2 "
     "ORDER BY objects DESC, 1, 2 LIMIT 50"),
    ("denials by IP",
     "SELECT caller_ip, count(*) AS n, count(DISTINCT principal_oid) AS principals FROM events "
     "WHERE http_status IN (401, 403) GROUP BY 1 ORDER BY n DESC, 1 LIMIT 50"),
    ("hourly volume per vault",
     "SELECT vault, date_trunc('hour', time) AS hour, count(*) AS n FROM events "
     "GROUP BY 1, 2 ORDER BY 1, 2"),
    ("first sighting of each IP per principal",
     "SELECT principal_oid, caller_ip, min(time) AS first_seen, count(*) AS n FROM events "
     "GROUP BY 1, 2 ORDER BY first_seen DESC, 1, 2 LIMIT 100"),
    ("operation mix",
     "SELECT operation_family, operation, count(*) AS n, "
     "sum(CASE WHEN http_status >= 400 THEN 1 ELSE 0 END) AS failed FROM events "
     "GROUP BY 1, 2 ORDER BY n DESC, 2"),
    ("one principal's trail",
     f"SELECT time, vault, operation, object_name, caller_ip, http_status FROM events "
     f"WHERE principal_upn = '{top}' ORDER BY time, event_id LIMIT 2000"),
    ("median gap between consecutive reads",
     f"SELECT principal_oid, median(gap) AS median_gap_s, count(*) AS reads FROM ("
     f"SELECT principal_oid, date_part('epoch', time) - lag(date_part('epoch', time)) "
     f"OVER (PARTITION BY principal_oid ORDER BY time, event_id) AS gap FROM events WHERE {reads}) t "
     f"WHERE gap IS NOT NULL GROUP BY 1 ORDER BY reads DESC, 1 LIMIT 50"),
]

def timed(f, n=5):
    f()
    runs = []
    for _ in range(n):
        t = time.perf_counter()
        out = f()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs) * 1000, out

events = con.execute("SELECT count(*) FROM events").fetchone()[0]
print(f"events: {events:,}, files: {len(files)}, 2 threads each, median of 5 warm runs")
print(f"{'query':<40} {'kvwatch ms':>10} {'duckdb ms':>10} {'ratio':>6} {'rows':>6}")
tk = td = 0.0
bad = []
worst = 0.0
for name, sql in queries:
    kms, (krows, trunc) = timed(lambda: api(sql))
    dms, drows = timed(lambda: con.execute(sql).fetchall())
    tk += kms; td += dms
    ratio = kms / dms
    worst = max(worst, ratio)
    same = not trunc and same_rows(krows, drows)
    if not same:
        bad.append(name)
    print(f"{name:<40} {kms:>10.1f} {dms:>10.1f} {ratio:>5.2f}x {len(krows):>6}{'' if same else '  RESULTS DIFFER'}")
print(f"{'total':<40} {tk:>10.1f} {td:>10.1f} {tk/td:>5.2f}x")
print(f"kvwatch/DuckDB: total {tk/td:.2f}x, slowest query {worst:.2f}x (targets: total <= 1.0x, every query <= 1.5x)")
if bad:
    print("results differ: " + ", ".join(bad), file=sys.stderr)
    sys.exit(1)
PY
