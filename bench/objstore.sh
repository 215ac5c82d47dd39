#!/usr/bin/env bash
# The event store on local disk and in object storage (Azurite, the Azure Storage emulator, on
# loopback): the same generated week ingested into both, then the rule pack's backfill and a
# few analyst queries over each. Prints seconds, events/s and peak RSS, and checks that both
# stores hold the same events and raise the same alerts. Azurite is installed by
# scripts/test.sh (KVWATCH_AZURITE points at another azurite-blob).
#
#   bench/objstore.sh              # 7 days, scale 2 (~290 k events)
#   DAYS=7 SCALE=8 bench/objstore.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvwatch/target}"
cargo build --release --locked -q
BIN="$CARGO_TARGET_DIR/release/kvwatch"
AZURITE="${KVWATCH_AZURITE:-$HOME/.cache/kvwatch/azurite/node_modules/.bin/azurite-blob}"
DAYS="${DAYS:-7}"
SCALE="${SCALE:-2}"
WORK="$(mktemp -d /tmp/kvwatch-objstore-XXXX)"
trap 'kill "$AZ_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
"$AZURITE" --blobHost 127.0.0.1 --blobPort "$PORT" --location "$WORK/azurite" --skipApiVersionCheck --loose --silent >"$WORK/azurite.log" 2>&1 &
AZ_PID=$!
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
export AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$PORT"
# The container, created with the emulator's well-known key (as `az storage container create`).
python3 - "$PORT" <<'PY'
import base64, hashlib, hmac, sys, urllib.request, email.utils
port = sys.argv[1]
acct, key = "devstoreaccount1", "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
date = email.utils.formatdate(usegmt=True)
sts = f"PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:2021-08-06\n/{acct}/{acct}/bench\nrestype:container"
sig = base64.b64encode(hmac.new(base64.b64decode(key), sts.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/{acct}/bench?restype=container", method="PUT",
    headers={"x-ms-date": date, "x-ms-version": "2021-08-06", "Authorization": f"SharedKey {acct}:{sig}", "Content-Length": "0"})
urllib.request.urlopen(req).read()
PY
"$BIN" generate --out "$WORK/gen" --days "$DAYS" --scale "$SCALE" --seed 3 >/dev/null
MIB=$(du -sm "$WORK/gen" | cut -f1)
timed() { # label, then the command; prints seconds and peak RSS
  local label="$1"; shift
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$WORK/rss" "$@" > "$WORK/out.json"
  t1=$(date +%s.%N)
  SECS=$(echo "$t1 - $t0" | bc -l)
  printf '%-44s %7.2f s  peak RSS %5.0f MiB' "$label" "$SECS" "$(echo "$(tail -1 "$WORK/rss")/1024" | bc -l)"
}
for target in local azurite; do
  if [ "$target" = local ]; then D=(--data "$WORK/local"); else D=(--data az://bench/store --state "$WORK/node"); fi
  timed "$target: ingest ${MIB} MiB" "$BIN" "${D[@]}" ingest --format json "$WORK/gen"
  EVENTS=$(python3 -c "import json;print(json.load(open('$WORK/out.json'))['stored']['events'])")
  printf '  %9.0f events/s (%d events)\n' "$(echo "$EVENTS / $SECS" | bc -l)" "$EVENTS"
  echo "$EVENTS" > "$WORK/$target.events"
  timed "$target: detect (rule pack + models, backfill)" "$BIN" "${D[@]}" detect --format json
  printf '  %9.0f events/s\n' "$(echo "$EVENTS / $SECS" | bc -l)"
  "$BIN" "${D[@]}" alerts --format json | python3 -c "import json,sys,collections;print(json.dumps(sorted(collections.Counter(a['rule_id'] for a in json.load(sys.stdin)).items())))" > "$WORK/$target.alerts"
  for q in "SELECT principal_upn, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC LIMIT 10" \
           "SELECT vault, hour_start(time) AS h, count(*) FROM events GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10"; do
    timed "$target: query ${q:0:34}…" "$BIN" "${D[@]}" query --format json "$q"
    echo
  done
done
cmp -s "$WORK/local.events" "$WORK/azurite.events" || { echo "MISMATCH: events differ" >&2; exit 1; }
cmp -s "$WORK/local.alerts" "$WORK/azurite.alerts" || { echo "MISMATCH: alerts differ" >&2; diff "$WORK/local.alerts" "$WORK/azurite.alerts" >&2; exit 1; }
echo "same events and alerts in both stores"
