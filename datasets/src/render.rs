//! Renders generated events as real-format Azure records (Key Vault `AuditEvent` and Activity
//! Log), with the quirks real records have: upper-case resource IDs, 7-digit fractional times,
//! `durationMs` as a string, short or long claim names, management-plane request URIs for
//! ARM-proxied calls.

use crate::world::{ClaimStyle, IdKind, Identity, ObjKind, TENANT_ID, Vault};
use serde::Serialize;
use serde_json::{Value, json};

/// One generated audit event, before rendering.
#[derive(Debug, Clone)]
pub struct Ev {
    pub time_ns: i64,
    pub vault: usize,
    pub op: &'static str,
    /// (kind, name, version) of the object, if any.
    pub object: Option<(ObjKind, String, Option<String>)>,
    pub status: u16,
    pub caller: Caller,
    pub ip: String,
    pub correlation: String,
    pub duration_ms: u32,
    pub tls: &'static str,
    /// Vault-configuration payload for `VaultPut`/`VaultPatch` (`properties` members).
    pub config: Option<Value>,
    /// Crypto action segment appended to the request URI (`unwrapkey`, `sign`…).
    pub action: Option<&'static str>,
}

/// Who made the call, as the token shows it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Option<Identity>,
    pub style: ClaimStyle,
    /// Application the user signed in through (CLI, portal); the identity's own appid otherwise.
    pub appid: Option<String>,
    pub user_agent: String,
}

impl Caller {
    pub fn of(id: &Identity) -> Caller {
        Caller {
            appid: Some(id.appid.clone()),
            user_agent: id.user_agent.clone(),
            style: ClaimStyle::Short,
            id: Some(id.clone()),
        }
    }
    pub fn anonymous(ua: &str) -> Caller {
        Caller {
            id: None,
            style: ClaimStyle::Short,
            appid: None,
            user_agent: ua.to_owned(),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.fffffffZ` (7 digits, as vault records carry).
pub fn fmt_time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let sub = ns.rem_euclid(1_000_000_000) as u32;
    let t = chrono::DateTime::from_timestamp(secs, sub).unwrap_or_default();
    format!("{}.{:07}Z", t.format("%Y-%m-%dT%H:%M:%S"), sub / 100)
}

fn signature(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "NoContent",
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        429 => "TooManyRequests",
        _ => "InternalServerError",
    }
}

#[derive(Serialize)]
struct Record<'a> {
    time: String,
    category: &'static str,
    #[serde(rename = "operationName")]
    operation_name: &'a str,
    #[serde(rename = "resultType")]
    result_type: &'a str,
    #[serde(rename = "correlationId")]
    correlation_id: &'a str,
    #[serde(rename = "callerIpAddress")]
    caller_ip: &'a str,
    identity: Value,
    properties: Value,
    #[serde(rename = "resourceId")]
    resource_id: String,
    #[serde(rename = "operationVersion")]
    operation_version: &'a str,
    #[serde(rename = "resultSignature")]
    result_signature: &'a str,
    #[serde(rename = "resultDescription")]
    result_description: &'a str,
    #[serde(rename = "durationMs")]
    duration_ms: String,
}

fn claims(c: &Caller, ip: &str) -> Value {
    let Some(id) = &c.id else {
        return json!({});
    };
    let appid = c.appid.clone().unwrap_or_else(|| id.appid.clone());
    let mut m = serde_json::Map::new();
    match (c.style, id.kind) {
        (ClaimStyle::Long, _) => {
            m.insert(
                "http://schemas.microsoft.com/identity/claims/objectidentifier".into(),
                json!(id.oid),
            );
            if let Some(upn) = &id.upn {
                m.insert(
                    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn".into(),
                    json!(upn),
                );
                m.insert(
                    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name".into(),
                    json!(upn),
                );
            }
            m.insert("appid".into(), json!(appid));
        }
        (ClaimStyle::Short, IdKind::User) => {
            m.insert("oid".into(), json!(id.oid));
            m.insert("appid".into(), json!(appid));
            m.insert("scp".into(), json!("user_impersonation"));
            if let Some(upn) = &id.upn {
                m.insert("upn".into(), json!(upn));
                m.insert("unique_name".into(), json!(upn));
            }
            m.insert("ipaddr".into(), json!(ip));
            m.insert("amr".into(), json!("pwd"));
        }
        (ClaimStyle::Short, kind) => {
            m.insert("oid".into(), json!(id.oid));
            m.insert("appid".into(), json!(appid));
            m.insert("appidacr".into(), json!("2"));
            m.insert("idtyp".into(), json!("app"));
            if kind == IdKind::ManagedIdentity {
                m.insert("xms_az_nwperimid".into(), json!([]));
                if let Some(mirid) = &id.mirid {
                    m.insert("xms_mirid".into(), json!(mirid));
                }
            }
        }
    }
    json!({ "claim": m })
}

const DATA_API: &str = "7.4";
const MGMT_API: &str = "2023-07-01";

/// Is this a management-plane (ARM-proxied) operation?
pub fn is_management(op: &str) -> bool {
    matches!(op, "VaultGet" | "VaultPut" | "VaultPatch" | "VaultDelete")
}

/// Renders one audit event as a JSON object (one line, no trailing newline).
pub fn render(ev: &Ev, v: &Vault) -> String {
    let mgmt = is_management(ev.op);
    let api = if mgmt { MGMT_API } else { DATA_API };
    let host = v.host();
    let (id, uri) = if mgmt {
        let uri = format!(
            "https://control-prod-{}.vaultcore.azure.net/subscriptions/{}/resourcegroups/{}/providers/Microsoft.KeyVault/vaults/{}?api-version={api}",
            &v.region[..3.min(v.region.len())],
            v.subscription,
            v.resource_group,
            v.name
        );
        (Some(format!("{host}/")), uri)
    } else {
        match &ev.object {
            Some((kind, name, version)) => {
                let coll = kind.collection();
                let id = match (version, ev.status) {
                    (Some(ver), 200..=299) => Some(format!("{host}/{coll}/{name}/{ver}")),
                    _ => Some(format!("{host}/{coll}/{name}")),
                };
                let uri = match (ev.action, version) {
                    (Some(action), Some(ver)) => {
                        format!("{host}/{coll}/{name}/{ver}/{action}?api-version={api}")
                    }
                    _ if ev.op.ends_with("List") => format!("{host}/{coll}?api-version={api}"),
                    _ if ev.op.ends_with("ListVersions") => {
                        format!("{host}/{coll}/{name}/versions?api-version={api}")
                    }
                    _ => format!("{host}/{coll}/{name}/?api-version={api}"),
                };
                let id = if ev.op.ends_with("List") { None } else { id };
                (id, uri)
            }
            None => (
                Some(format!("{host}/")),
                format!("{host}/?api-version={api}"),
            ),
        }
    };
    let mut props = serde_json::Map::new();
    if let Some(id) = id {
        props.insert("id".into(), json!(id));
    }
    props.insert("clientInfo".into(), json!(ev.caller.user_agent));
    props.insert("httpStatusCode".into(), json!(ev.status));
    props.insert("requestUri".into(), json!(uri));
    if ev.op != "Authentication" && !mgmt && ev.caller.id.is_some() {
        let ok = ev.status < 300;
        if v.rbac {
            props.insert("isRbacAuthorized".into(), json!(ok));
            if ok {
                let h = blake_hex(&format!(
                    "{}{}",
                    v.name,
                    ev.caller.id.as_ref().map(|i| i.oid.as_str()).unwrap_or("")
                ));
                props.insert("appliedAssignmentId".into(), json!(h));
            }
        } else {
            props.insert("isAccessPolicyMatch".into(), json!(ok));
        }
    }
    props.insert("tlsVersion".into(), json!(ev.tls));
    if let Some(Value::Object(cfg)) = &ev.config {
        for (k, val) in cfg {
            props.insert(k.clone(), val.clone());
        }
    }
    let rec = Record {
        time: fmt_time(ev.time_ns),
        category: "AuditEvent",
        operation_name: ev.op,
        result_type: if ev.status < 400 {
            "Success"
        } else {
            signature(ev.status)
        },
        correlation_id: &ev.correlation,
        caller_ip: &ev.ip,
        identity: claims(&ev.caller, &ev.ip),
        properties: Value::Object(props),
        resource_id: v.resource_id(),
        operation_version: api,
        result_signature: signature(ev.status),
        result_description: "",
        duration_ms: ev.duration_ms.to_string(),
    };
    serde_json::to_string(&rec).unwrap_or_default()
}

fn blake_hex(s: &str) -> String {
    // A stable 32-hex stand-in for a role assignment ID (FNV-based; no cryptography needed).
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x8422_2325_cbf2_9ce4;
    for c in s.bytes() {
        a = (a ^ c as u64).wrapping_mul(0x0000_0100_0000_01b3);
        b = (b ^ c as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    format!("{a:016x}{b:016x}")
}

/// The vault configuration payload of a `VaultPut`/`VaultPatch`.
pub fn vault_state(
    rbac: bool,
    soft_delete: bool,
    retention: u32,
    purge_protection: bool,
    default_action: Option<&str>,
) -> Value {
    json!({
        "sku": {"Family": "A", "Name": "Standard", "Capacity": null},
        "tenantId": TENANT_ID,
        "networkAcls": default_action.map(|a| json!({"bypass": "AzureServices", "defaultAction": a, "ipRules": [], "virtualNetworkRules": []})),
        "enabledForDeployment": false,
        "enabledForDiskEncryption": false,
        "enabledForTemplateDeployment": false,
        "enableSoftDelete": soft_delete,
        "softDeleteRetentionInDays": retention,
        "enableRbacAuthorization": rbac,
        "enablePurgeProtection": if purge_protection { json!(true) } else { Value::Null },
    })
}

/// An access-policy delta (`addedAccessPolicy` / `removedAccessPolicy`).
pub fn policy(oid: &str, secrets: &[&str], keys: &[&str], certs: &[&str]) -> Value {
    json!({
        "TenantId": TENANT_ID,
        "ObjectId": oid,
        "Permissions": {"keys": keys, "secrets": secrets, "certificates": certs}
    })
}

/// An Activity Log record in the resource-log shape streamed by diagnostic settings.
#[allow(clippy::too_many_arguments)]
pub fn render_activity(
    time_ns: i64,
    operation: &str,
    resource_id: &str,
    caller: &Identity,
    ip: &str,
    correlation: &str,
    status: &str,
    request_body: Option<Value>,
) -> String {
    let mut props = serde_json::Map::new();
    props.insert(
        "statusCode".into(),
        json!(if status == "Started" {
            "Accepted"
        } else {
            "OK"
        }),
    );
    props.insert("eventCategory".into(), json!("Administrative"));
    props.insert("entity".into(), json!(resource_id));
    props.insert("message".into(), json!(operation));
    if let Some(body) = request_body {
        props.insert("requestbody".into(), json!(body.to_string()));
    }
    let mut claims = serde_json::Map::new();
    claims.insert(
        "http://schemas.microsoft.com/identity/claims/objectidentifier".into(),
        json!(caller.oid),
    );
    if let Some(upn) = &caller.upn {
        claims.insert(
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn".into(),
            json!(upn),
        );
    }
    claims.insert("appid".into(), json!(caller.appid));
    let rec = json!({
        "time": fmt_time(time_ns),
        "resourceId": resource_id,
        "operationName": operation.to_uppercase(),
        "category": "Administrative",
        "resultType": status,
        "resultSignature": if status == "Started" { "Started." } else { "Succeeded." },
        "durationMs": if status == "Started" { 0 } else { 1432 },
        "callerIpAddress": ip,
        "correlationId": correlation,
        "identity": {
            "authorization": {
                "scope": resource_id,
                "action": operation,
                "evidence": {"role": "Owner", "roleAssignmentScope": "/subscriptions", "principalType": "User"}
            },
            "claims": claims
        },
        "level": "Information",
        "location": "global",
        "properties": props
    });
    rec.to_string()
}
