"""Fills an alert store with N synthetic alerts for the API benchmark (bench/api.sh).

The rows have the shape detection writes (JSON arrays of vaults, principals, IPs, evidence),
spread over 27 rules, 5 severities, 500 vaults and 30 days, inserted with one recursive CTE so
the store's own triggers assign change numbers exactly as in production.
"""
import sqlite3
import sys
import time

db, n = sys.argv[1], int(sys.argv[2])
con = sqlite3.connect(db)
con.execute("PRAGMA journal_mode=WAL")
con.execute("PRAGMA synchronous=OFF")
t0 = time.time()
base = 1_780_000_000 * 10**9
con.execute(
    f"""
INSERT INTO alerts (id, rule_id, title, description, severity, severity_rank, status, dedup_key,
    first_seen, last_seen, created_at, updated_at, event_count, occurrences, vaults, principals,
    ips, objects, tactics, techniques, summary, evidence, evidence_truncated)
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
SELECT printf('%016x%016x', i * 2654435761 % 4294967296, i),
    'kv-rule-' || (i % 27),
    'Synthetic detection ' || (i % 27),
    'A benchmark alert.',
    CASE i % 5 WHEN 0 THEN 'informational' WHEN 1 THEN 'low' WHEN 2 THEN 'medium'
        WHEN 3 THEN 'high' ELSE 'critical' END,
    i % 5,
    'new',
    'principal=' || (i % 9973),
    {base} + i * 2592000000000 / {n},
    {base} + i * 2592000000000 / {n} + 600000000000,
    {base} + i * 2592000000000 / {n} + 900000000000,
    {base} + i * 2592000000000 / {n} + 900000000000,
    10 + i % 300,
    1,
    json_array('kv-' || printf('%04d', i % 500)),
    json_array(json_object('oid', printf('%08d-0000-0000-0000-%012d', i % 9973, i % 9973),
        'upn', 'user' || (i % 9973) || '@contoso.com', 'type', 'user')),
    json_array('203.0.113.' || (i % 250)),
    json_array('secret/db-password-' || (i % 50)),
    json_array('TA0006'),
    json_array('T1555.006'),
    'user' || (i % 9973) || '@contoso.com read ' || (10 + i % 300) || ' secrets from kv-' || printf('%04d', i % 500),
    json_array(printf('%064x', i), printf('%064x', i + 1), printf('%064x', i + 2)),
    0
FROM n
"""
)
con.commit()
print(f"fill_alerts: {n} alerts in {time.time() - t0:.1f} s", file=sys.stderr)
