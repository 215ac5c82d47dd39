#!/usr/bin/env bash
# The analyst console at scale: N alerts in the store (default 1 M, bench/fill_alerts.py),
# one signed-in analyst, each page requested 200 times in a row over one keep-alive
# connection after 20 warm-up requests; prints p50 / p95 / max latency and the page weight.
#
#   bench/console.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/alert_store.sh "${1:-1000000}" analyst console.log
python3 - "$port" "$key" <<'PY'
import http.client, re, sys, time, urllib.parse
port, key = int(sys.argv[1]), sys.argv[2]
c = http.client.HTTPConnection("127.0.0.1", port)
c.request("POST", "/login", urllib.parse.urlencode({"key": key, "next": "/alerts"}),
          {"Content-Type": "application/x-www-form-urlencoded"})
r = c.getresponse(); r.read()
cookie = r.getheader("Set-Cookie").split(";")[0]
def get(path):
    c.request("GET", path, headers={"Cookie": cookie})
    r = c.getresponse(); body = r.read()
    assert r.status == 200, (path, r.status, body[:300])
    return body
first = get("/alerts").decode()
aid = re.search(r'href="/alerts/([0-9a-f]+)"', first).group(1)
nxt = re.search(r'href="(/alerts\?[^"]*cursor=[^"]+)"', first).group(1).replace("&amp;", "&")
pages = ["/alerts", "/alerts?severity=high", "/alerts?status=new&rule=kv-rule-7",
         nxt, "/alerts?vault=kv-0042", f"/alerts/{aid}", "/rules", "/static/kvwatch.css"]
print(f"| page | p50 ms | p95 ms | max ms | bytes |")
print(f"|---|---|---|---|---|")
for p in pages:
    for _ in range(20):
        get(p)
    ts, size = [], 0
    for _ in range(200):
        t = time.perf_counter(); size = len(get(p)); ts.append((time.perf_counter() - t) * 1000)
    ts.sort()
    label = p if "cursor" not in p else "/alerts?cursor=<page 2>"
    print(f"| `{label}` | {ts[99]:.1f} | {ts[189]:.1f} | {ts[-1]:.1f} | {size:,} |")
PY
