//! Backfill from Log Analytics: records rendered into the workspace tables a Sentinel customer
//! can export (`AzureDiagnostics`, `AZKVAuditLogs`, `AzureActivity`), as JSON and as CSV,
//! ingest to the same rows, column by column, as the records themselves; and re-importing them
//! beside the raw records adds nothing.
//!
//! The renderers below follow Log Analytics' documented rules (ingestion reference §7, §11):
//! `AzureDiagnostics` joins nested keys with `_` under one dropped `properties` level, turns
//! non-alphanumerics of claim URIs into `_`, suffixes by type (`_s`, `_d`, `_b`, `_g`) and keeps
//! arrays as JSON text; `AZKVAuditLogs` has typed columns and keeps `Identity` nested;
//! `AzureActivity` keeps `Claims`, `Authorization` and `Properties` as dynamic columns.

use crate::common::*;
use serde_json::{Map, Value, json};
use std::path::Path;

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A key as a column name: each run of characters other than letters and digits is one `_`.
fn flat(k: &str) -> String {
    let mut out = String::new();
    for c in k.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out
}

/// One flattened column: `{name}_{suffix}` with its value.
fn typed(name: &str, v: &Value, out: &mut Map<String, Value>) {
    let (suffix, v) = match v {
        Value::Null => return,
        Value::String(s) if is_guid(s) => ("g", v.clone()),
        Value::String(_) => ("s", v.clone()),
        Value::Number(_) => ("d", v.clone()),
        Value::Bool(_) => ("b", v.clone()),
        other => ("s", Value::String(other.to_string())),
    };
    out.insert(format!("{name}_{suffix}"), v);
}

fn flatten(prefix: &str, v: &Value, out: &mut Map<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let name = if prefix.is_empty() {
                    flat(k)
                } else {
                    format!("{prefix}_{}", flat(k))
                };
                flatten(&name, x, out);
            }
        }
        _ => typed(prefix, v, out),
    }
}

/// A record's operation name: a string, or `{value, localizedValue}` in Activity Log records.
fn op(r: &Value) -> &str {
    let o = &r["operationName"];
    o.as_str().or_else(|| o["value"].as_str()).unwrap()
}

fn s<'a>(r: &'a Value, k: &str) -> Option<&'a Value> {
    r.get(k).filter(|v| !v.is_null())
}

/// Copies the record's top-level fields to the columns named for them, and its duration as a
/// whole number (`DurationMs` is a long in both tables).
fn top_columns(r: &Value, row: &mut Map<String, Value>, cols: &[(&str, &str)]) {
    for (col, key) in cols {
        if let Some(v) = s(r, key) {
            row.insert((*col).into(), v.clone());
        }
    }
    if let Some(d) = s(r, "durationMs") {
        let d: i64 = d
            .as_i64()
            .unwrap_or_else(|| d.as_str().unwrap().parse().unwrap());
        row.insert("DurationMs".into(), json!(d));
    }
}

fn workspace_columns(row: &mut Map<String, Value>, rid: &str, table: &str) {
    row.insert(
        "TenantId".into(),
        json!("5a5a0000-0000-4000-8000-00000000f00d"),
    );
    row.insert("SourceSystem".into(), json!("Azure"));
    row.insert("Type".into(), json!(table));
    row.insert("_ResourceId".into(), json!(rid.to_ascii_lowercase()));
}

fn azure_diagnostics(r: &Value) -> Value {
    let mut row = Map::new();
    let rid = r["resourceId"].as_str().unwrap().to_ascii_uppercase();
    let segs: Vec<&str> = rid.split('/').collect();
    row.insert("TimeGenerated".into(), r["time"].clone());
    row.insert("ResourceId".into(), json!(rid));
    row.insert("SubscriptionId".into(), json!(segs[2].to_ascii_lowercase()));
    row.insert("ResourceGroup".into(), json!(segs[4]));
    row.insert("ResourceProvider".into(), json!("MICROSOFT.KEYVAULT"));
    row.insert("ResourceType".into(), json!(segs[7]));
    row.insert("Resource".into(), json!(segs[8]));
    top_columns(
        r,
        &mut row,
        &[
            ("Category", "category"),
            ("OperationName", "operationName"),
            ("OperationVersion", "operationVersion"),
            ("ResultType", "resultType"),
            ("ResultSignature", "resultSignature"),
            ("ResultDescription", "resultDescription"),
            ("CallerIPAddress", "callerIpAddress"),
            ("CorrelationId", "correlationId"),
        ],
    );
    if let Some(claims) = r["identity"].get("claim") {
        flatten("identity_claim", claims, &mut row);
    }
    if let Some(p) = s(r, "properties") {
        flatten("", p, &mut row);
    }
    workspace_columns(&mut row, &rid, "AzureDiagnostics");
    Value::Object(row)
}

fn azkv_audit_logs(r: &Value) -> Value {
    let mut row = Map::new();
    let rid = r["resourceId"].as_str().unwrap();
    row.insert("TimeGenerated".into(), r["time"].clone());
    top_columns(
        r,
        &mut row,
        &[
            ("OperationName", "operationName"),
            ("OperationVersion", "operationVersion"),
            ("ResultType", "resultType"),
            ("ResultSignature", "resultSignature"),
            ("ResultDescription", "resultDescription"),
            ("CallerIpAddress", "callerIpAddress"),
            ("CorrelationId", "correlationId"),
            ("Identity", "identity"),
        ],
    );
    let mut rest = Map::new();
    if let Some(Value::Object(p)) = s(r, "properties") {
        for (k, v) in p {
            let col = match k.as_str() {
                "id" => "Id",
                "requestUri" => "RequestUri",
                "clientInfo" => "ClientInfo",
                "httpStatusCode" => "HttpStatusCode",
                "isAccessPolicyMatch" => "IsAccessPolicyMatch",
                "isRbacAuthorized" => "IsRbacAuthorized",
                "isAddressAuthorized" => "IsAddressAuthorized",
                "appliedAssignmentId" => "AppliedAssignmentId",
                "tlsVersion" => "Tlsversion",
                "subnetId" => "SubnetId",
                "trustedService" => "TrustedService",
                "properties" => {
                    let mut vault = Map::new();
                    for (ck, cv) in v.as_object().unwrap() {
                        let col = match ck.as_str() {
                            "enableSoftDelete" => "EnableSoftDelete",
                            "enableRbacAuthorization" => "EnableRbacAuthorization",
                            "enablePurgeProtection" => "EnablePurgeProtection",
                            "softDeleteRetentionInDays" => "SoftDeleteRetentionInDays",
                            "enabledForDeployment" => "EnabledForDeployment",
                            "enabledForDiskEncryption" => "EnabledForDiskEncryption",
                            "enabledForTemplateDeployment" => "EnabledForTemplateDeployment",
                            "networkAcls" => "NetworkAcls",
                            "sku" => "Sku",
                            _ => {
                                vault.insert(ck.clone(), cv.clone());
                                continue;
                            }
                        };
                        if !cv.is_null() {
                            row.insert(col.into(), cv.clone());
                        }
                    }
                    row.insert("VaultProperties".into(), Value::Object(vault));
                    continue;
                }
                _ => {
                    rest.insert(k.clone(), v.clone());
                    continue;
                }
            };
            row.insert(col.into(), v.clone());
        }
    }
    if !rest.is_empty() {
        row.insert("Properties".into(), Value::Object(rest));
    }
    workspace_columns(&mut row, rid, "AZKVAuditLogs");
    Value::Object(row)
}

fn azure_activity(r: &Value) -> Value {
    let mut row = Map::new();
    let rid = r["resourceId"].as_str().unwrap();
    let op = op(r);
    row.insert("TimeGenerated".into(), r["time"].clone());
    row.insert("OperationNameValue".into(), json!(op.to_ascii_uppercase()));
    row.insert("OperationName".into(), json!("a localised name"));
    row.insert("CategoryValue".into(), r["category"].clone());
    row.insert("ActivityStatusValue".into(), r["resultType"].clone());
    row.insert("CallerIpAddress".into(), r["callerIpAddress"].clone());
    row.insert("CorrelationId".into(), r["correlationId"].clone());
    row.insert("ResourceId".into(), json!(rid));
    row.insert("Level".into(), json!("Informational"));
    let claims = &r["identity"]["claims"];
    row.insert("Claims".into(), json!(claims.to_string()));
    row.insert("Claims_d".into(), claims.clone());
    row.insert(
        "Caller".into(),
        claims["http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"].clone(),
    );
    row.insert(
        "Authorization".into(),
        json!(r["identity"]["authorization"].to_string()),
    );
    row.insert("Properties".into(), json!(r["properties"].to_string()));
    row.insert("Properties_d".into(), r["properties"].clone());
    workspace_columns(&mut row, rid, "AzureActivity");
    Value::Object(row)
}

/// What `az monitor log-analytics query` prints: every value as a string.
fn as_strings(row: &Value) -> Value {
    let m = row
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Bool(true) => "True".into(),
                Value::Bool(false) => "False".into(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(s))
        })
        .collect();
    Value::Object(m)
}

/// The portal's display form of a time, to the millisecond.
fn display_time(iso: &str) -> String {
    let t = chrono::DateTime::parse_from_rfc3339(iso).unwrap();
    t.format("%-m/%-d/%Y, %-I:%M:%S%.3f %p").to_string()
}

/// A CSV export: the union of the rows' columns, every field quoted, CRLF line ends, BOM.
fn csv(rows: &[Value], portal_times: bool) -> String {
    let mut cols: Vec<String> = Vec::new();
    for r in rows {
        for k in r.as_object().unwrap().keys() {
            if !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out = String::from("\u{feff}");
    let header: Vec<String> = cols
        .iter()
        .map(|c| {
            if c == "TimeGenerated" {
                q("TimeGenerated [UTC]")
            } else {
                q(c)
            }
        })
        .collect();
    out.push_str(&header.join(","));
    out.push_str("\r\n");
    for r in rows {
        let fields: Vec<String> = cols
            .iter()
            .map(|c| match &r[c.as_str()] {
                Value::Null => String::new(),
                Value::String(s) if c == "TimeGenerated" && portal_times => q(&display_time(s)),
                Value::String(s) => q(s),
                Value::Bool(b) => q(if *b { "true" } else { "false" }),
                other => q(&other.to_string()),
            })
            .collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

fn write(path: &Path, text: &str) -> std::path::PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_owned()
}

fn lines(rows: &[Value]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

/// Every row of a table but the columns that say where a row came from (and, for
/// `AzureDiagnostics`, what flattening cannot give back: the claim map's text and the keys kept
/// under `properties`), ordered by ID.
fn rows(data: &Path, table: &str, except: &str) -> Vec<Value> {
    query(
        data,
        &format!("SELECT * EXCLUDE (source, ingested_at{except}) FROM {table} ORDER BY event_id"),
    )
}

fn same(name: &str, want: &[Value], got: &[Value]) {
    // Rows are paired by request (time, operation, URI, correlation ID), so that when they
    // differ the message names the columns that do.
    let key = |r: &Value| {
        ["time", "operation", "request_uri", "correlation_id"]
            .map(|k| r[k].to_string())
            .join("|")
    };
    let mut by_key: std::collections::HashMap<String, Vec<&Value>> = Default::default();
    for g in got {
        by_key.entry(key(g)).or_default().push(g);
    }
    for w in want {
        let Some(g) = by_key.get_mut(&key(w)).and_then(Vec::pop) else {
            panic!("{name}: no export row for {w}");
        };
        let diff: Vec<String> = w
            .as_object()
            .unwrap()
            .iter()
            .filter(|(col, v)| *v != &g[col.as_str()])
            .map(|(col, v)| format!("{col}: raw {v} export {}", g[col.as_str()]))
            .collect();
        assert!(diff.is_empty(), "{name}: {}\nraw row: {w}", diff.join("; "));
    }
    assert_eq!(want.len(), got.len(), "{name}: row counts");
}

#[test]
fn log_analytics_exports_ingest_to_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let gen_dir = generate(
        &dir.path().join("gen"),
        &["--days", "1", "--format", "jsonl"],
    );
    let mut records: Vec<Value> = Vec::new();
    for f in [
        gen_dir.join("jsonl/2024-05-06.jsonl"),
        samples().join("activity.jsonl"),
    ] {
        for l in std::fs::read_to_string(f).unwrap().lines() {
            if !l.trim().is_empty() {
                records.push(serde_json::from_str(l).unwrap());
            }
        }
    }
    let (al, ae): (Vec<Value>, Vec<Value>) = records.into_iter().partition(|r| op(r).contains('/'));
    assert!(
        ae.len() > 10_000 && al.len() >= 4,
        "{} {}",
        ae.len(),
        al.len()
    );
    let x = dir.path();
    let raw = write(&x.join("raw.jsonl"), &(lines(&ae) + &lines(&al)));
    let diag: Vec<Value> = ae.iter().map(azure_diagnostics).collect();
    let azkv: Vec<Value> = ae.iter().map(azkv_audit_logs).collect();
    let act: Vec<Value> = al.iter().map(azure_activity).collect();
    let diag_strings: Vec<Value> = diag.iter().map(as_strings).collect();
    let act_strings: Vec<Value> = act.iter().map(as_strings).collect();
    // `az monitor log-analytics query` (arrays of string values), workspace data export (JSON
    // Lines, typed), the portal's CSV export (with full-precision times, and with its display
    // times).
    let exports = [
        (
            "AzureDiagnostics + AzureActivity, az CLI JSON",
            vec![
                write(&x.join("diag.json"), &Value::from(diag_strings).to_string()),
                write(&x.join("act.json"), &Value::from(act_strings).to_string()),
            ],
        ),
        (
            "AZKVAuditLogs + AzureActivity, data export JSON Lines",
            vec![
                write(&x.join("azkv.jsonl"), &lines(&azkv)),
                write(&x.join("act.jsonl"), &lines(&act)),
            ],
        ),
        (
            "AzureDiagnostics + AzureActivity, CSV",
            vec![
                write(&x.join("diag.csv"), &csv(&diag, false)),
                write(&x.join("act.csv"), &csv(&act, false)),
            ],
        ),
        (
            "AZKVAuditLogs, CSV",
            vec![write(&x.join("azkv.csv"), &csv(&azkv, false))],
        ),
    ];

    let base = x.join("store-raw");
    let r = ingest(&base, &[&raw]);
    assert_eq!(r["parsed"]["quarantined"], 0, "{r}");
    let want_ev = rows(&base, "events", ", claims, properties");
    let want_ev_claims = rows(&base, "events", ", properties");
    let want_al = rows(&base, "activity", ", properties");
    assert_eq!(want_ev.len(), ae.len());
    assert_eq!(want_al.len(), al.len());
    for (i, (name, files)) in exports.iter().enumerate() {
        let store = x.join(format!("store-{i}"));
        let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
        let r = ingest(&store, &paths);
        assert_eq!(r["parsed"]["quarantined"], 0, "{name}: {r}");
        same(
            name,
            &want_ev,
            &rows(&store, "events", ", claims, properties"),
        );
        if name.contains("AZKVAuditLogs") {
            // Claims stay nested in `Identity`: the claim map is the record's own.
            same(
                name,
                &want_ev_claims,
                &rows(&store, "events", ", properties"),
            );
        }
        if name.contains("AzureActivity") {
            same(name, &want_al, &rows(&store, "activity", ", properties"));
        }
        // Re-importing the export where the records already are adds nothing.
        let again = ingest(&base, &paths);
        assert_eq!(again["stored"]["events"], 0, "{name}: {again}");
        assert_eq!(again["stored"]["activity"], 0, "{name}: {again}");
    }

    // The portal's display times keep milliseconds: the rows are the same but for the time's
    // last digits, so their IDs are their own.
    let portal = write(&x.join("portal.csv"), &csv(&diag, true));
    let store = x.join("store-portal");
    let r = ingest(&store, &[&portal]);
    assert_eq!(r["parsed"]["quarantined"], 0, "{r}");
    let ms = |data: &Path| {
        query(
            data,
            "SELECT * EXCLUDE (source, ingested_at, claims, properties, event_id, time), \
             date_trunc('millisecond', time) AS time FROM events",
        )
    };
    same("portal CSV", &ms(&base), &ms(&store));

    // `--shape` forces the reading: the raw records read as AzureActivity rows are refused,
    // each with its reason, and nothing is stored for them.
    let forced = x.join("store-forced");
    let r = run(
        &forced,
        &[
            "ingest",
            "--format",
            "json",
            "--shape",
            "azure-activity",
            samples().join("single.json").to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rep: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rep["parsed"]["events"], 0, "{rep}");
    assert_eq!(rep["parsed"]["quarantined"], 1, "{rep}");
    let q = query(&forced, "SELECT reason FROM quarantine");
    assert!(
        q[0]["reason"]
            .as_str()
            .unwrap()
            .contains("AzureActivity row"),
        "{q:?}"
    );
}
