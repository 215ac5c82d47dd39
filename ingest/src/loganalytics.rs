//! Rows exported from Log Analytics / Microsoft Sentinel, turned back into the records Azure
//! wrote, so a team switching from Sentinel can backfill its history.
//!
//! Three tables hold Key Vault history in a workspace: `AzureDiagnostics` (the legacy mode:
//! every nested key flattened into a column with a type suffix, `identity_claim_upn_s`,
//! `httpStatusCode_d`), `AZKVAuditLogs` (the resource-specific mode: typed columns, claims kept
//! nested in `Identity`) and `AzureActivity` (the Activity Log). A row of any of them is
//! rebuilt into the resource-log record it came from and then parsed by the same code as a
//! record read from Event Hubs or storage, so the same request gives the same canonical row and
//! the same `event_id` whichever way it arrived (re-importing data that also came from Event
//! Hubs adds nothing). Columns the mapping does not know are kept under `properties`.
//!
//! Exports give values typed (workspace data export), all as strings (`az monitor
//! log-analytics query`: `"200"`, `"True"`, dynamic columns as JSON text) or as CSV text (the
//! portal's "Export to CSV", times as `6/14/2022, 10:01:02.123 AM`); every form is accepted.

use crate::record::RecordError;
use crate::scan::{Raw, RawObject};
use serde_json::{Map, Value};
use std::fmt;

/// What kind of records an input holds: `Auto` looks at each record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shape {
    #[default]
    Auto,
    /// Records as Azure writes them (diagnostic settings to Event Hubs or storage, portal and
    /// CLI exports of the Activity Log): never read as Log Analytics rows.
    ResourceLog,
    AzureDiagnostics,
    AzkvAuditLogs,
    AzureActivity,
}

impl Shape {
    pub const NAMES: [&'static str; 5] = [
        "auto",
        "resource-log",
        "azure-diagnostics",
        "azkv-audit-logs",
        "azure-activity",
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl std::str::FromStr for Shape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let all = [
            Shape::Auto,
            Shape::ResourceLog,
            Shape::AzureDiagnostics,
            Shape::AzkvAuditLogs,
            Shape::AzureActivity,
        ];
        all.into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown shape {s:?}: expected one of {}",
                    Self::NAMES.join(", ")
                )
            })
    }
}

/// A Log Analytics table kvwatch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    AzureDiagnostics,
    AzkvAuditLogs,
    AzureActivity,
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Table::AzureDiagnostics => "AzureDiagnostics",
            Table::AzkvAuditLogs => "AZKVAuditLogs",
            Table::AzureActivity => "AzureActivity",
        })
    }
}

/// The table a row comes from: by its `Type` column, else by its columns. `None` for a record
/// as Azure writes it (those carry `time`, never `TimeGenerated`).
pub fn table_of(obj: &RawObject<'_>, shape: Shape) -> Option<Table> {
    match shape {
        Shape::ResourceLog => return None,
        Shape::AzureDiagnostics => return Some(Table::AzureDiagnostics),
        Shape::AzkvAuditLogs => return Some(Table::AzkvAuditLogs),
        Shape::AzureActivity => return Some(Table::AzureActivity),
        Shape::Auto => {}
    }
    let has = |k: &str| obj.fields.iter().any(|(f, _)| f == k);
    if !obj
        .fields
        .iter()
        .any(|(k, _)| k.starts_with("TimeGenerated"))
    {
        return None;
    }
    if let Some(t) = obj.get("Type").and_then(|v| v.plain_str()) {
        match t {
            "AzureDiagnostics" => return Some(Table::AzureDiagnostics),
            "AZKVAuditLogs" => return Some(Table::AzkvAuditLogs),
            "AzureActivity" => return Some(Table::AzureActivity),
            _ => {}
        }
    }
    if has("OperationNameValue") || has("ActivityStatusValue") || has("CategoryValue") {
        Some(Table::AzureActivity)
    } else if has("CallerIpAddress") || has("Identity") || has("HttpStatusCode") {
        Some(Table::AzkvAuditLogs)
    } else {
        Some(Table::AzureDiagnostics)
    }
}

/// Rebuilds the resource-log record a row of `table` was made from, as JSON text.
pub fn to_record(table: Table, row: &RawObject<'_>) -> Result<String, RecordError> {
    let mut rec = Map::new();
    let mut extra = Map::new();
    let mut resource_id = None;
    for (k, raw) in &row.fields {
        let Some(v) = value(*raw) else { continue };
        let k: &str = k;
        if let Some(zone) = k.strip_prefix("TimeGenerated") {
            let zone = zone.trim();
            if !(zone.is_empty() || zone.eq_ignore_ascii_case("[UTC]")) {
                return Err(RecordError::BadTime(format!(
                    "column {k:?}: times are in local time; export them in UTC"
                )));
            }
            rec.insert("time".into(), time(v)?);
            continue;
        }
        if k == "AdditionalFields" && table == Table::AzureDiagnostics {
            // Columns beyond the table's 500 land here, named and flattened the same way.
            if let Value::Object(m) = dynamic(v) {
                for (k, v) in m {
                    diagnostics_column(&mut rec, &mut extra, &k, v);
                }
            }
            continue;
        }
        if k == "_ResourceId" {
            // The only resource ID of `AZKVAuditLogs`; elsewhere a lower-case copy.
            resource_id.get_or_insert(v);
            continue;
        }
        if HOUSEKEEPING.contains(&k) {
            continue;
        }
        match table {
            Table::AzureDiagnostics => diagnostics_column(&mut rec, &mut extra, k, v),
            Table::AzkvAuditLogs => audit_logs_column(&mut rec, &mut extra, k, v),
            Table::AzureActivity => activity_column(&mut rec, &mut extra, k, v),
        }
    }
    if !rec.contains_key("time") {
        return Err(RecordError::Missing("TimeGenerated"));
    }
    if let Some(id) = resource_id {
        rec.entry("resourceId").or_insert(id);
    }
    // A vault's configuration is its whole state, and the workspace drops null columns: no
    // network rules there is `networkAcls: null`, a vault open to all networks.
    if let Some(Value::Object(vault)) = rec
        .get_mut("properties")
        .and_then(|p| p.get_mut("properties"))
        && vault
            .keys()
            .any(|k| k.eq_ignore_ascii_case("enableSoftDelete"))
        && !vault.keys().any(|k| k.eq_ignore_ascii_case("networkAcls"))
    {
        vault.insert("networkAcls".into(), Value::Null);
    }
    if table == Table::AzkvAuditLogs {
        rec.entry("category").or_insert_with(|| "AuditEvent".into());
    }
    if !extra.is_empty() {
        let props = rec
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(p) = props {
            for (k, v) in extra {
                p.entry(k).or_insert(v);
            }
        }
    }
    Ok(Value::Object(rec).to_string())
}

/// Workspace columns that describe the workspace or repeat what the resource ID says.
const HOUSEKEEPING: &[&str] = &[
    "TenantId",
    "SourceSystem",
    "Type",
    "MG",
    "ManagementGroupName",
    "Computer",
    "_SubscriptionId",
    "_BilledSize",
    "_IsBillable",
    "_ItemId",
    "_TimeReceived",
    "_Internal_WorkspaceResourceId",
    "ResourceGroup",
    "SubscriptionId",
    "ResourceProvider",
    "Resource",
    "ResourceType",
];

/// A column's value: `null` and `""` are absent (exports write empty columns either way).
fn value(raw: Raw<'_>) -> Option<Value> {
    match serde_json::from_str::<Value>(raw.get()).ok()? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        v => Some(v),
    }
}

/// A dynamic column: JSON, or JSON text in a string.
fn dynamic(v: Value) -> Value {
    match &v {
        Value::String(s) if s.starts_with('{') || s.starts_with('[') => {
            serde_json::from_str(s).unwrap_or(v)
        }
        _ => v,
    }
}

/// A number column (`httpStatusCode_d` is a real: 200.0); whole numbers become integers.
fn number(v: Value) -> Value {
    let f = match &v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match f {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
        _ => v,
    }
}

fn boolean(v: Value) -> Value {
    match &v {
        Value::String(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
        _ => v,
    }
}

/// `TimeGenerated` as the ISO text Azure writes: kept as is when it parses, else read from the
/// portal's display form `M/D/YYYY, h:mm:ss[.fff] AM|PM`.
fn time(v: Value) -> Result<Value, RecordError> {
    let Value::String(s) = v else {
        return Err(RecordError::BadTime(v.to_string()));
    };
    if crate::time::parse_timestamp_ns(&s).is_some() {
        return Ok(Value::String(s));
    }
    display_time(&s)
        .map(Value::String)
        .ok_or(RecordError::BadTime(s))
}

fn display_time(s: &str) -> Option<String> {
    let (date, rest) = s.trim().split_once(',')?;
    let mut d = date.trim().split('/');
    let (m, day, y): (u32, u32, i32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let rest = rest.trim();
    let (clock, half) = match rest.rsplit_once(' ') {
        Some((c, h)) if h.eq_ignore_ascii_case("AM") || h.eq_ignore_ascii_case("PM") => {
            (c, Some(h.eq_ignore_ascii_case("PM")))
        }
        _ => (rest, None),
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.split(':');
    let (mut h, min, sec): (u32, u32, u32) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    match half {
        Some(pm) if (1..=12).contains(&h) => h = h % 12 + if pm { 12 } else { 0 },
        Some(_) => return None,
        None => {}
    }
    chrono::NaiveDate::from_ymd_opt(y, m, day)?.and_hms_opt(h, min, sec)?;
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    Some(format!(
        "{y:04}-{m:02}-{day:02}T{h:02}:{min:02}:{sec:02}{frac}Z"
    ))
}

/// Inserts `v` at `path`, creating objects on the way (an existing non-object is replaced).
fn set(map: &mut Map<String, Value>, path: &[&str], v: Value) {
    let (last, parents) = path.split_last().expect("a non-empty path");
    let mut cur = map;
    for p in parents {
        let slot = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        cur = slot.as_object_mut().expect("made an object above");
    }
    cur.insert(last.to_string(), v);
}

/// Merges an object's members under `path` (a dynamic column that holds several fields).
fn merge(map: &mut Map<String, Value>, path: &[&str], v: Value) {
    match dynamic(v) {
        Value::Object(m) => {
            for (k, v) in m {
                let mut p = path.to_vec();
                p.push(&k);
                set(map, &p, v);
            }
        }
        other => set(map, path, other),
    }
}

fn lower_camel(k: &str) -> String {
    let mut c = k.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The claim URIs `AzureDiagnostics` flattens (non-alphanumerics become `_`), restored so the
/// claims coalesce as they do in the original record.
const CLAIM_URIS: &[(&str, &str)] = &[
    (
        "http_schemas_microsoft_com_identity_claims_objectidentifier",
        "http://schemas.microsoft.com/identity/claims/objectidentifier",
    ),
    (
        "http_schemas_xmlsoap_org_ws_2005_05_identity_claims_upn",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    ),
    (
        "http_schemas_xmlsoap_org_ws_2005_05_identity_claims_name",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
    ),
    (
        "http_schemas_microsoft_com_identity_claims_scope",
        "http://schemas.microsoft.com/identity/claims/scope",
    ),
    (
        "http_schemas_microsoft_com_claims_authnmethodsreferences",
        "http://schemas.microsoft.com/claims/authnmethodsreferences",
    ),
];

/// One `AzureDiagnostics` column: the common columns by name, the flattened ones (`x_y_s`)
/// back to their nesting under `properties` (one level of which the flattening drops), claims
/// back under `identity.claim`.
fn diagnostics_column(
    rec: &mut Map<String, Value>,
    extra: &mut Map<String, Value>,
    k: &str,
    v: Value,
) {
    let top = match k {
        "ResourceId" => Some("resourceId"),
        "OperationName" => Some("operationName"),
        "OperationVersion" => Some("operationVersion"),
        "Category" => Some("category"),
        "ResultType" => Some("resultType"),
        "ResultSignature" => Some("resultSignature"),
        "ResultDescription" => Some("resultDescription"),
        "CallerIPAddress" => Some("callerIpAddress"),
        "CorrelationId" => Some("correlationId"),
        _ => None,
    };
    if let Some(name) = top {
        rec.insert(name.into(), v);
        return;
    }
    if k == "DurationMs" {
        rec.insert("durationMs".into(), number(v));
        return;
    }
    let Some((name, suffix)) = k
        .rsplit_once('_')
        .filter(|(n, s)| !n.is_empty() && matches!(*s, "s" | "d" | "b" | "g" | "t"))
    else {
        extra.insert(k.to_owned(), v);
        return;
    };
    let v = match suffix {
        "d" => number(v),
        "b" => boolean(v),
        "s" => dynamic(v),
        _ => v,
    };
    if let Some(claim) = name.strip_prefix("identity_claim_") {
        // Some exports keep one `_` per character replaced (`http___schemas…`).
        let squeezed = claim
            .split('_')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("_");
        let key = CLAIM_URIS
            .iter()
            .find(|(flat, _)| *flat == squeezed)
            .map_or(claim, |(_, uri)| uri);
        set(rec, &["identity", "claim", key], v);
        return;
    }
    let mut path = vec!["properties"];
    path.extend(name.split('_').filter(|s| !s.is_empty()));
    set(rec, &path, v);
}

/// One `AZKVAuditLogs` column: typed columns back to `properties`, the vault configuration
/// back to `properties.properties`, `Identity` and `Properties` as they were.
fn audit_logs_column(
    rec: &mut Map<String, Value>,
    extra: &mut Map<String, Value>,
    k: &str,
    v: Value,
) {
    match k {
        "ResourceId" => {
            rec.insert("resourceId".into(), v);
        }
        "OperationName" | "OperationVersion" | "ResultType" | "ResultSignature"
        | "ResultDescription" | "CorrelationId" | "CallerIpAddress" => {
            rec.insert(lower_camel(k), v);
        }
        "DurationMs" => {
            rec.insert("durationMs".into(), number(v));
        }
        "Identity" => {
            rec.insert("identity".into(), dynamic(v));
        }
        "Properties" => merge(rec, &["properties"], v),
        "HttpStatusCode" => set(rec, &["properties", "httpStatusCode"], number(v)),
        "IsAddressAuthorized" | "IsAccessPolicyMatch" | "IsRbacAuthorized" => {
            set(rec, &["properties", &lower_camel(k)], boolean(v))
        }
        "Id" => set(rec, &["properties", "id"], v),
        "Tlsversion" => set(rec, &["properties", "tlsVersion"], v),
        "RequestUri"
        | "ClientInfo"
        | "SubnetId"
        | "AppliedAssignmentId"
        | "TrustedService"
        | "AddressAuthorizationType"
        | "Algorithm"
        | "HsmPoolResourceId" => set(rec, &["properties", &lower_camel(k)], v),
        "VaultProperties" => merge(rec, &["properties", "properties"], v),
        "NetworkAcls" | "Sku" => set(
            rec,
            &["properties", "properties", &lower_camel(k)],
            dynamic(v),
        ),
        "EnabledForDeployment"
        | "EnabledForDiskEncryption"
        | "EnabledForTemplateDeployment"
        | "EnableSoftDelete"
        | "EnableRbacAuthorization"
        | "EnablePurgeProtection" => set(
            rec,
            &["properties", "properties", &lower_camel(k)],
            boolean(v),
        ),
        "SoftDeleteRetentionInDays" => set(
            rec,
            &["properties", "properties", "softDeleteRetentionInDays"],
            number(v),
        ),
        _ if k.ends_with("Properties") || k == "Nsp" => {
            set(rec, &["properties", &lower_camel(k)], dynamic(v))
        }
        _ => {
            extra.insert(k.to_owned(), v);
        }
    }
}

/// One `AzureActivity` column, back to the Activity Log's REST shape.
fn activity_column(
    rec: &mut Map<String, Value>,
    extra: &mut Map<String, Value>,
    k: &str,
    v: Value,
) {
    let name = match k {
        "OperationNameValue" => "operationName",
        // The localised forms only when the value form is missing.
        "OperationName" if !rec.contains_key("operationName") => "operationName",
        "CategoryValue" => "category",
        "Category" if !rec.contains_key("category") => "category",
        "ActivityStatusValue" => "status",
        "ActivityStatus" if !rec.contains_key("status") => "status",
        "ActivitySubstatusValue" => "subStatus",
        "Caller" => "caller",
        "CallerIpAddress" => "callerIpAddress",
        "CorrelationId" => "correlationId",
        "OperationId" => "operationId",
        "EventDataId" => "eventDataId",
        "Level" => "level",
        "ResourceId" => "resourceId",
        "Authorization" | "Authorization_d" => "authorization",
        "Claims" | "Claims_d" => "claims",
        "HTTPRequest" => "httpRequest",
        "Properties_d" => "properties",
        "Properties" if !rec.contains_key("properties") => "properties",
        "OperationName" | "Category" | "ActivityStatus" | "Properties" => return,
        _ => {
            extra.insert(k.to_owned(), v);
            return;
        }
    };
    let v = match name {
        "authorization" | "claims" | "httpRequest" | "properties" => dynamic(v),
        _ => v,
    };
    rec.insert(name.into(), v);
}

/// The rows of a Log Analytics query API response (`{"tables": [{"columns", "rows"}]}`, what
/// `az rest` and the REST API return), as one JSON object per row.
pub fn api_rows(obj: &RawObject<'_>) -> Option<Vec<String>> {
    let tables = obj.get("tables")?;
    let tables: Vec<Value> = serde_json::from_str(tables.get()).ok()?;
    let mut out = Vec::new();
    for t in tables {
        let cols: Vec<String> = t
            .get("columns")?
            .as_array()?
            .iter()
            .map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect::<Option<_>>()?;
        for row in t.get("rows")?.as_array()? {
            let row = row.as_array()?;
            let m: Map<String, Value> = cols.iter().cloned().zip(row.iter().cloned()).collect();
            out.push(Value::Object(m).to_string());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portal_display_times() {
        for (s, want) in [
            (
                "6/14/2022, 10:01:02.123 AM",
                Some("2022-06-14T10:01:02.123Z"),
            ),
            ("6/14/2022, 12:00:00 AM", Some("2022-06-14T00:00:00Z")),
            ("6/14/2022, 12:30:00.5 PM", Some("2022-06-14T12:30:00.5Z")),
            (
                "12/31/2022, 11:59:59.9999999 PM",
                Some("2022-12-31T23:59:59.9999999Z"),
            ),
            ("2/30/2022, 1:00:00 PM", None),
            ("6/14/2022, 13:00:00 PM", None),
            ("yesterday", None),
        ] {
            assert_eq!(display_time(s).as_deref(), want, "{s}");
        }
    }

    #[test]
    fn shapes_parse_by_name() {
        for n in Shape::NAMES {
            assert_eq!(n.parse::<Shape>().unwrap().name(), n);
        }
        assert!("sentinel".parse::<Shape>().is_err());
    }
}
