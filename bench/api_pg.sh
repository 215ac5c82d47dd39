#!/usr/bin/env bash
# The alert API on SQLite and on PostgreSQL, one after the other on one machine: the same
# 1 M-alert store (bench/fill_alerts.py), served as SQLite, then copied into a private
# PostgreSQL server with `kvwatch alerts migrate` (timed) and served from there; each time
# `wrk -t2 -c50 -d20s` on loopback against the same listings, after a 5-second warm-up.
#
#   bench/api_pg.sh [N]     needs wrk and PostgreSQL's server (Debian: wrk, postgresql)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"
source bench/alert_store.sh "$n" reader serve-sqlite.log

echo "##### SQLite"
listings "http://127.0.0.1:$port/api/v1/alerts" "$key"
kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; pids=()

echo "##### PostgreSQL"
pgbin="${KVWATCH_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}"
pg="$work/pg"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); fi
rm -rf "$pg"; mkdir -p "$pg"
[ "$(id -u)" -eq 0 ] && chown postgres "$pg"
"${as_pg[@]}" "$pgbin/initdb" -D "$pg/data" -U kvwatch --auth=trust -E UTF8 --locale=C >/dev/null
pgport=$(free_port)
"${as_pg[@]}" "$pgbin/postgres" -D "$pg/data" -p "$pgport" -k "$pg" -c listen_addresses=127.0.0.1 \
    -c shared_buffers=1GB -c max_connections=200 >"$pg/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pgport" && break; sleep 0.1; done
"$pgbin/createdb" -h 127.0.0.1 -p "$pgport" -U kvwatch kvwatch
url="postgres://kvwatch@127.0.0.1:$pgport/kvwatch?sslmode=disable"
start=$(date +%s.%N)
"$kv" --data "$data" alerts migrate --to "$url" --format json >"$work/migrate.json"
end=$(date +%s.%N)
python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'migrated {sys.argv[3]} alerts in {s:.1f} s: {int(sys.argv[3])/s:,.0f} alerts/s')" "$start" "$end" "$n"
pgkey=$("$kv" --data "$data" --alerts "$url" apikey create --role reader --name bench-pg 2>/dev/null)
port=$(free_port)
"$kv" --data "$data" --alerts "$url" serve --listen "127.0.0.1:$port" --interval 86400 --no-models \
    --no-forward >"$work/serve-pg.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
listings "http://127.0.0.1:$port/api/v1/alerts" "$pgkey"
