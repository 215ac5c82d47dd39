#!/usr/bin/env bash
# Backfill benchmark: the same generated Key Vault records ingested as Azure writes them (JSON
# Lines) and as Log Analytics exports them (AzureDiagnostics as `az monitor log-analytics
# query` prints it: a JSON array of string values; AZKVAuditLogs as workspace data export:
# typed JSON Lines; AzureDiagnostics as the portal's CSV). Prints records/s and peak RSS for
# each, on two cores, and checks every export stored as many events as the raw records.
#
#   bench/backfill.sh             # ~160 k records
#   SCALE=8 DAYS=4 bench/backfill.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kvwatch/target}"
cargo build --release --locked -q
BIN="$CARGO_TARGET_DIR/release/kvwatch"
SCALE="${SCALE:-4}"
DAYS="${DAYS:-2}"
WORK="${BENCH_DIR:-$(mktemp -d /tmp/kvwatch-backfill-XXXX)}"
mkdir -p "$WORK"
RAW="$WORK/raw.jsonl"
if [ ! -s "$RAW" ]; then
  "$BIN" generate --out "$WORK/gen" --format jsonl --days "$DAYS" --scale "$SCALE" --attacks none --seed 7 >/dev/null
  cat "$WORK"/gen/jsonl/*.jsonl | grep -v '"operationName": *"MICROSOFT\.\|"operationName":"MICROSOFT\.' > "$RAW"
  rm -rf "$WORK/gen"
fi
python3 - "$RAW" "$WORK" <<'PY'
# Renders each record into the Log Analytics tables (rules of the ingestion reference §7).
import csv, json, re, sys
raw, work = sys.argv[1], sys.argv[2]
guid = re.compile(r'^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')
def flat(k): return re.sub(r'[^A-Za-z0-9]+', '_', k)
def typed(name, v, out):
    if v is None: return
    if isinstance(v, bool): out[name + '_b'] = v
    elif isinstance(v, (int, float)): out[name + '_d'] = v
    elif isinstance(v, str): out[name + ('_g' if guid.match(v) else '_s')] = v
    else: out[name + '_s'] = json.dumps(v)
def flatten(prefix, v, out):
    if isinstance(v, dict):
        for k, x in v.items():
            flatten(f'{prefix}_{flat(k)}' if prefix else flat(k), x, out)
    else:
        typed(prefix, v, out)
def diag(r):
    rid = r['resourceId'].upper(); s = rid.split('/')
    row = {'TenantId': '5a5a0000-0000-4000-8000-00000000f00d', 'TimeGenerated': r['time'], 'ResourceId': rid,
           'SubscriptionId': s[2].lower(), 'ResourceGroup': s[4], 'ResourceProvider': 'MICROSOFT.KEYVAULT',
           'ResourceType': s[7], 'Resource': s[8], 'Type': 'AzureDiagnostics', 'SourceSystem': 'Azure'}
    for col, key in [('Category', 'category'), ('OperationName', 'operationName'), ('OperationVersion', 'operationVersion'),
                     ('ResultType', 'resultType'), ('ResultSignature', 'resultSignature'), ('ResultDescription', 'resultDescription'),
                     ('CallerIPAddress', 'callerIpAddress'), ('CorrelationId', 'correlationId')]:
        if r.get(key) not in (None, ''): row[col] = r[key]
    if r.get('durationMs') is not None: row['DurationMs'] = int(r['durationMs'])
    flatten('identity_claim', (r.get('identity') or {}).get('claim') or {}, row)
    flatten('', r.get('properties') or {}, row)
    return row
def azkv(r):
    row = {'TimeGenerated': r['time'], '_ResourceId': r['resourceId'].lower(), 'Type': 'AZKVAuditLogs'}
    for col, key in [('OperationName', 'operationName'), ('OperationVersion', 'operationVersion'), ('ResultType', 'resultType'),
                     ('ResultSignature', 'resultSignature'), ('ResultDescription', 'resultDescription'),
                     ('CallerIpAddress', 'callerIpAddress'), ('CorrelationId', 'correlationId'), ('Identity', 'identity')]:
        if r.get(key) not in (None, ''): row[col] = r[key]
    if r.get('durationMs') is not None: row['DurationMs'] = int(r['durationMs'])
    names = {'id': 'Id', 'requestUri': 'RequestUri', 'clientInfo': 'ClientInfo', 'httpStatusCode': 'HttpStatusCode',
             'isAccessPolicyMatch': 'IsAccessPolicyMatch', 'isRbacAuthorized': 'IsRbacAuthorized', 'tlsVersion': 'Tlsversion',
             'appliedAssignmentId': 'AppliedAssignmentId', 'subnetId': 'SubnetId'}
    rest = {}
    for k, v in (r.get('properties') or {}).items():
        if k in names: row[names[k]] = v
        else: rest[k] = v
    if rest: row['Properties'] = rest
    return row
def strings(row):
    return {k: ('True' if v is True else 'False' if v is False else v if isinstance(v, str) else json.dumps(v)) for k, v in row.items()}
recs = [json.loads(l) for l in open(raw) if l.strip()]
diag_rows = [diag(r) for r in recs]
with open(f'{work}/azure-diagnostics.json', 'w') as f:
    json.dump([strings(r) for r in diag_rows], f)
with open(f'{work}/azkv-audit-logs.jsonl', 'w') as f:
    for r in recs: f.write(json.dumps(azkv(r)) + '\n')
cols = []
seen = set()
for r in diag_rows:
    for k in r:
        if k not in seen: seen.add(k); cols.append(k)
with open(f'{work}/azure-diagnostics.csv', 'w', newline='', encoding='utf-8-sig') as f:
    w = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator='\r\n')
    w.writerow(['TimeGenerated [UTC]' if c == 'TimeGenerated' else c for c in cols])
    for r in diag_rows:
        w.writerow([('' if r.get(c) is None else ('true' if r[c] is True else 'false' if r[c] is False else r[c])) for c in cols])
print(f'records: {len(recs)}')
PY
RECORDS=$(wc -l < "$RAW")
run() {
  local label="$1" input="$2"
  rm -rf "$WORK/store"
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$WORK/rss" "$BIN" --data "$WORK/store" ingest --no-compact --format json "$input" > "$WORK/report.json"
  t1=$(date +%s.%N)
  local secs rss stored mib
  secs=$(echo "$t1 - $t0" | bc -l)
  rss=$(tail -1 "$WORK/rss")
  stored=$(python3 -c "import json;r=json.load(open('$WORK/report.json'));print(r['stored']['events'])")
  mib=$(echo "$(stat -L -c %s "$input")/1048576" | bc -l)
  printf '%-34s %6.0f MiB %7.2f s %9.0f records/s  peak RSS %5.0f MiB  stored %d\n' "$label" "$mib" "$secs" "$(echo "$RECORDS / $secs" | bc -l)" "$(echo "$rss/1024" | bc -l)" "$stored"
  if [ "$stored" != "$RECORDS" ]; then echo "  MISMATCH: $RECORDS records in, $stored stored" >&2; exit 1; fi
}
run "raw records (JSON Lines)" "$RAW"
run "AzureDiagnostics, az CLI JSON" "$WORK/azure-diagnostics.json"
run "AZKVAuditLogs, data export JSONL" "$WORK/azkv-audit-logs.jsonl"
run "AzureDiagnostics, portal CSV" "$WORK/azure-diagnostics.csv"
