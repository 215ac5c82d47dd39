//! Normalisation of Azure Activity Log records into [`ActivityRow`].
//!
//! RBAC role assignments, diagnostic-setting changes and other ARM writes exist only in the
//! Activity Log, in two shapes: the resource-log shape streamed to Event Hubs/storage
//! (`identity.claims`, `properties.requestbody` as a JSON string) and the REST/portal export shape
//! (`claims`, `caller`, `status.value`, `eventTimestamp`). Volume is low, so this path favours
//! clarity over speed and works on `serde_json::Value`.

use crate::derive::parse_resource_id;
use crate::ids::hex16;
use crate::record::RecordError;
use crate::time::parse_timestamp_ns;
use serde_json::{Map, Value};

/// One normalised Activity Log record.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ActivityRow {
    pub event_id: String,
    pub time_ns: i64,
    pub operation: String,
    pub category: Option<String>,
    pub status: Option<String>,
    pub caller_oid: Option<String>,
    pub caller_upn: Option<String>,
    pub caller_appid: Option<String>,
    /// A parsed address or null, as in `events`.
    pub caller_ip: Option<String>,
    /// The address as logged, when it is not exactly `caller_ip`.
    pub caller_ip_raw: Option<String>,
    pub resource_id: Option<String>,
    pub subscription_id: Option<String>,
    pub scope: Option<String>,
    pub vault: Option<String>,
    pub role_definition_id: Option<String>,
    pub role_name: Option<&'static str>,
    pub target_principal_id: Option<String>,
    pub target_principal_type: Option<String>,
    pub correlation_id: Option<String>,
    pub properties: Option<String>,
}

/// Built-in role definitions that matter for Key Vault (ingestion reference §11.3).
pub const ROLES: &[(&str, &str)] = &[
    (
        "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        "Key Vault Administrator",
    ),
    (
        "8b54135c-b56d-4d72-a534-26097cfdc8d8",
        "Key Vault Data Access Administrator",
    ),
    (
        "f25e0fa2-a7c8-4377-a976-54943a77a395",
        "Key Vault Contributor",
    ),
    (
        "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        "Key Vault Secrets Officer",
    ),
    (
        "4633458b-17de-408a-b874-0445c86b69e6",
        "Key Vault Secrets User",
    ),
    (
        "a4417e6f-fecd-4de8-b567-7b0420556985",
        "Key Vault Certificates Officer",
    ),
    (
        "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba",
        "Key Vault Certificate User",
    ),
    (
        "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
        "Key Vault Crypto Officer",
    ),
    (
        "12338af0-0e69-4776-bea7-57ae8d297424",
        "Key Vault Crypto User",
    ),
    (
        "e147488a-f6f5-4113-8e2d-b22465e65bf6",
        "Key Vault Crypto Service Encryption User",
    ),
    ("21090545-7ca7-4776-b22c-e363652d74d2", "Key Vault Reader"),
    (
        "a68e7c17-0ab2-4c09-9a58-125dae29748c",
        "Key Vault Purge Operator",
    ),
    ("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner"),
    ("b24988ac-6180-42a0-ab88-20f7382dd24c", "Contributor"),
    (
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        "User Access Administrator",
    ),
    (
        "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
        "Role Based Access Control Administrator",
    ),
];

pub fn role_name(guid: &str) -> Option<&'static str> {
    ROLES
        .iter()
        .find(|(g, _)| g.eq_ignore_ascii_case(guid))
        .map(|(_, n)| *n)
}

/// Case-insensitive member lookup.
fn get_ci<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    let obj = v.as_object()?;
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// A string, or the `value` of a `{value, localizedValue}` wrapper.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(_) => text(get_ci(v?, "value")),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn path<'v>(v: &'v Value, keys: &[&str]) -> Option<&'v Value> {
    let mut cur = v;
    for k in keys {
        cur = get_ci(cur, k)?;
    }
    Some(cur)
}

/// Decodes a value that may be a JSON object or a JSON-encoded object in a string.
fn object_or_encoded(v: Option<&Value>) -> Option<Value> {
    match v? {
        Value::Object(_) => v.cloned(),
        Value::String(s) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object),
        _ => None,
    }
}

fn claim(claims: Option<&Value>, keys: &[&str]) -> Option<String> {
    let c = claims?;
    keys.iter().find_map(|k| text(c.get(*k)))
}

/// Is this record an Activity Log record? ARM operation names contain `/`.
pub fn looks_like_activity(operation_name: &str) -> bool {
    operation_name.contains('/')
}

/// Normalises one Activity Log record (its JSON text).
pub fn normalize(raw: &str) -> Result<ActivityRow, RecordError> {
    let v: Value = serde_json::from_str(raw).map_err(|e| RecordError::Nested {
        field: "record",
        msg: e.to_string(),
    })?;
    if !v.is_object() {
        return Err(RecordError::Missing("operationName"));
    }
    let mut row = ActivityRow {
        operation: text(get_ci(&v, "operationName"))
            .ok_or(RecordError::Missing("operationName"))?
            .to_ascii_lowercase(),
        ..Default::default()
    };
    let time_text = text(get_ci(&v, "time"))
        .or_else(|| text(get_ci(&v, "eventTimestamp")))
        .ok_or(RecordError::Missing("time"))?;
    row.time_ns = parse_timestamp_ns(&time_text).ok_or(RecordError::BadTime(time_text))?;
    row.category = text(get_ci(&v, "category"));
    row.status = text(get_ci(&v, "status"))
        .or_else(|| text(get_ci(&v, "resultType")))
        .or_else(|| text(path(&v, &["properties", "activityStatusValue"])));
    row.correlation_id = text(get_ci(&v, "correlationId"));
    let ip = text(get_ci(&v, "callerIpAddress"))
        .or_else(|| text(path(&v, &["httpRequest", "clientIpAddress"])));
    let (ip, logged) = crate::derive::split_caller_ip(ip.map(std::borrow::Cow::Owned));
    row.caller_ip = ip.map(std::borrow::Cow::into_owned);
    row.caller_ip_raw = logged.map(std::borrow::Cow::into_owned);
    let claims = path(&v, &["identity", "claims"]).or_else(|| get_ci(&v, "claims"));
    row.caller_oid = claim(
        claims,
        &[
            "http://schemas.microsoft.com/identity/claims/objectidentifier",
            "oid",
        ],
    )
    .map(|s| s.to_ascii_lowercase());
    row.caller_upn = claim(
        claims,
        &[
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
            "upn",
        ],
    );
    row.caller_appid = claim(claims, &["appid"]).map(|s| s.to_ascii_lowercase());
    if row.caller_upn.is_none() && row.caller_oid.is_none() {
        // REST shape: `caller` is a UPN for users, an object ID for applications.
        if let Some(c) = text(get_ci(&v, "caller")) {
            if c.contains('@') {
                row.caller_upn = Some(c);
            } else {
                row.caller_oid = Some(c.to_ascii_lowercase());
            }
        }
    }
    let resource_id = text(get_ci(&v, "resourceId"));
    row.resource_id = resource_id.as_deref().map(crate::derive::resource_id_key);
    let auth_scope = text(path(&v, &["identity", "authorization", "scope"]))
        .or_else(|| text(path(&v, &["authorization", "scope"])));

    // The new assignment is in the request body; `authorization.evidence` describes the
    // caller's own rights and must never be read as the granted role.
    let props = get_ci(&v, "properties");
    let body = object_or_encoded(props.and_then(|p| get_ci(p, "requestbody")));
    let body_props = body
        .as_ref()
        .and_then(|b| get_ci(b, "properties").cloned().or_else(|| Some(b.clone())));
    if let Some(bp) = &body_props {
        row.role_definition_id = text(get_ci(bp, "roleDefinitionId")).and_then(|p| {
            p.rsplit('/')
                .find(|s| !s.is_empty())
                .map(str::to_ascii_lowercase)
        });
        row.target_principal_id = text(get_ci(bp, "principalId")).map(|s| s.to_ascii_lowercase());
        row.target_principal_type = text(get_ci(bp, "principalType"));
        row.scope = text(get_ci(bp, "scope")).map(|s| crate::derive::resource_id_key(&s));
    }
    row.role_name = row.role_definition_id.as_deref().and_then(role_name);
    if row.scope.is_none() {
        row.scope = match &row.resource_id {
            // A role assignment's resource ID is `{scope}/providers/Microsoft.Authorization/roleAssignments/{id}`.
            Some(r) if r.contains("/providers/microsoft.authorization/roleassignments/") => r
                .split("/providers/microsoft.authorization/roleassignments/")
                .next()
                .map(str::to_owned),
            _ => auth_scope.map(|s| crate::derive::resource_id_key(&s)),
        };
    }
    let parts = resource_id
        .as_deref()
        .map(parse_resource_id)
        .unwrap_or_default();
    row.subscription_id = parts.subscription_id;
    row.vault = parts.vault.or_else(|| {
        row.scope
            .as_deref()
            .and_then(|s| parse_resource_id(s).vault)
    });
    if let Some(Value::Object(m)) = props {
        let mut kept = Map::new();
        for (k, val) in m {
            kept.insert(k.clone(), val.clone());
        }
        row.properties = Some(Value::Object(kept).to_string());
    }
    row.event_id = event_id(&row, raw);
    Ok(row)
}

fn event_id(row: &ActivityRow, raw: &str) -> String {
    let mut h = blake3::Hasher::new();
    let mut put = |s: Option<&str>| {
        let s = s.unwrap_or("");
        h.update(&(s.len() as u32).to_le_bytes());
        h.update(s.as_bytes());
    };
    put(Some("al1"));
    put(Some(&row.time_ns.to_string()));
    put(Some(&row.operation));
    put(row.resource_id.as_deref());
    put(row.correlation_id.as_deref());
    put(row.status.as_deref());
    put(row.caller_oid.as_deref().or(row.caller_upn.as_deref()));
    // Records without a correlation ID (hand-made exports) fall back to their whole content.
    if row.correlation_id.is_none() {
        let canon: Option<Value> = serde_json::from_str(raw).ok();
        put(canon.map(|c| c.to_string()).as_deref());
    }
    hex16(h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_assignment_resource_log_shape() {
        let body = r#"{"Id":"x","Properties":{"PrincipalId":"AAAA-1","PrincipalType":"User","RoleDefinitionId":"/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/00482a5a-887f-4fb3-b363-3b7fe8e74483","Scope":"/subscriptions/S/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/KV1"}}"#;
        let rec = serde_json::json!({
            "time": "2024-05-03T10:00:00.1234567Z",
            "resourceId": "/subscriptions/S/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/KV1/providers/Microsoft.Authorization/roleAssignments/abc",
            "operationName": "MICROSOFT.AUTHORIZATION/ROLEASSIGNMENTS/WRITE",
            "category": "Administrative", "resultType": "Success", "correlationId": "c1",
            "callerIpAddress": "203.0.113.5",
            "identity": {"authorization": {"evidence": {"roleDefinitionId": "8e3af657a8ff443ca75c2fe8c4bcb635"}},
                         "claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": "OID-1", "appid": "APP"}},
            "properties": {"requestbody": body, "statusCode": "Created"}
        });
        let row = normalize(&rec.to_string()).unwrap();
        assert_eq!(
            row.operation,
            "microsoft.authorization/roleassignments/write"
        );
        assert_eq!(
            row.role_definition_id.as_deref(),
            Some("00482a5a-887f-4fb3-b363-3b7fe8e74483")
        );
        assert_eq!(row.role_name, Some("Key Vault Administrator"));
        assert_eq!(row.target_principal_id.as_deref(), Some("aaaa-1"));
        assert_eq!(row.vault.as_deref(), Some("kv1"));
        assert_eq!(row.caller_oid.as_deref(), Some("oid-1"));
        assert_eq!(row.status.as_deref(), Some("Success"));
    }

    #[test]
    fn rest_shape() {
        let rec = serde_json::json!({
            "eventTimestamp": "2024-05-03T10:00:00Z",
            "operationName": {"value": "Microsoft.Insights/diagnosticSettings/delete", "localizedValue": "Delete"},
            "status": {"value": "Succeeded"}, "caller": "eve@contoso.com",
            "resourceId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv2/providers/Microsoft.Insights/diagnosticSettings/d1",
            "httpRequest": {"clientIpAddress": "198.51.100.1"}
        });
        let row = normalize(&rec.to_string()).unwrap();
        assert_eq!(
            row.operation,
            "microsoft.insights/diagnosticsettings/delete"
        );
        assert_eq!(row.status.as_deref(), Some("Succeeded"));
        assert_eq!(row.caller_upn.as_deref(), Some("eve@contoso.com"));
        assert_eq!(row.vault.as_deref(), Some("kv2"));
        assert_eq!(row.caller_ip.as_deref(), Some("198.51.100.1"));
    }
}
