//! Sigma rules, compiled to the same DataFusion evaluation as the native pack.
//!
//! A Sigma file (one or more YAML documents with `logsource` and `detection`, or `correlation`)
//! becomes a [`Rule`] whose SQL filters the table its log source maps to (`azure/activitylogs`
//! → `activity`, `azure/keyvault` → `events`) and groups matches into alert occurrences per
//! window, vault and caller. Fields are mapped to columns by a shipped table
//! ([`SigmaMap`]), overridable in the configuration. Detection grammar: selections (maps, lists
//! of maps), value lists, wildcards, the modifiers `contains`, `startswith`, `endswith`, `all`,
//! `re` (with `i`, `m`, `s`), `cidr`, `exists`, `gt`/`gte`/`lt`/`lte`, `cased` and `windash`,
//! and conditions with `and`/`or`/`not`, parentheses, `1 of`/`all of` (patterns, `them`).
//! Correlation rules (`event_count`, `value_count`, `temporal`) become windowed rules over
//! tumbling windows of their `timespan`. Anything else is a load error that names the rule,
//! the file and the construct: a rule that silently matched less than its author meant would
//! be a detection gap nobody sees.
//!
//! kvwatch's own settings for a Sigma rule go under a custom `kvwatch:` key (Sigma allows
//! custom attributes): `window`, `suppression`, `dedup`, `enabled` and `tests` (fixtures in
//! the native format, run by `kvwatch rules test`).

use crate::alert::Severity;
use crate::rule::{Dur, Entities, Fixture, Rule, RuleDoc, RuleError};
use kvwatch_ingest::query::sql_literal;
use kvwatch_ingest::schema::{activity_schema, events_schema};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Deployment overrides of the field mapping: Sigma field → column, per log source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigmaMap {
    /// For `product: azure, service: keyvault` (the `events` table).
    #[serde(default)]
    pub keyvault: BTreeMap<String, String>,
    /// For `product: azure, service: activitylogs` (the `activity` table).
    #[serde(default)]
    pub activitylogs: BTreeMap<String, String>,
}

/// The table a log source maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Keyvault,
    ActivityLogs,
}

impl Source {
    fn table(self) -> &'static str {
        match self {
            Source::Keyvault => "events",
            Source::ActivityLogs => "activity",
        }
    }
}

/// Shipped mapping for `azure/keyvault`: the record's own field names, their Log Analytics
/// forms (`AzureDiagnostics` flattened, `AZKVAuditLogs` typed) and claim spellings.
const KEYVAULT_FIELDS: &[(&[&str], &str)] = &[
    (&["operationName", "OperationName"], "operation"),
    (&["category", "Category"], "category"),
    (&["resultType", "ResultType"], "result_type"),
    (&["resultSignature", "ResultSignature"], "result_signature"),
    (
        &["resultDescription", "ResultDescription"],
        "result_description",
    ),
    (
        &["callerIpAddress", "CallerIPAddress", "CallerIpAddress"],
        "caller_ip",
    ),
    (&["correlationId", "CorrelationId"], "correlation_id"),
    (&["durationMs", "DurationMs"], "duration_ms"),
    (
        &["operationVersion", "OperationVersion"],
        "operation_version",
    ),
    (&["resourceId", "ResourceId", "_ResourceId"], "resource_id"),
    (&["Resource"], "vault"),
    (&["ResourceGroup"], "resource_group"),
    (&["SubscriptionId"], "subscription_id"),
    (
        &[
            "identity.claim.oid",
            "identity.claim.http://schemas.microsoft.com/identity/claims/objectidentifier",
            "Identity.claim.oid",
            "identity_claim_oid_g",
            "identity_claim_http_schemas_microsoft_com_identity_claims_objectidentifier_g",
        ],
        "principal_oid",
    ),
    (
        &[
            "identity.claim.upn",
            "identity.claim.http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
            "Identity.claim.upn",
            "identity_claim_upn_s",
            "identity_claim_http_schemas_xmlsoap_org_ws_2005_05_identity_claims_upn_s",
        ],
        "principal_upn",
    ),
    (
        &[
            "identity.claim.unique_name",
            "identity.claim.http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
            "identity_claim_unique_name_s",
            "identity_claim_http_schemas_xmlsoap_org_ws_2005_05_identity_claims_name_s",
        ],
        "principal_name",
    ),
    (
        &[
            "identity.claim.appid",
            "Identity.claim.appid",
            "identity_claim_appid_g",
        ],
        "principal_appid",
    ),
    (
        &[
            "identity.claim.xms_mirid",
            "Identity.claim.xms_mirid",
            "identity_claim_xms_mirid_s",
        ],
        "principal_mirid",
    ),
    (
        &[
            "properties.httpStatusCode",
            "httpStatusCode",
            "httpStatusCode_d",
            "HttpStatusCode",
        ],
        "http_status",
    ),
    (&["properties.id", "id_s", "Id"], "object_uri"),
    (
        &[
            "properties.requestUri",
            "requestUri",
            "requestUri_s",
            "RequestUri",
        ],
        "request_uri",
    ),
    (
        &[
            "properties.clientInfo",
            "clientInfo",
            "clientInfo_s",
            "ClientInfo",
        ],
        "client_info",
    ),
    (
        &[
            "properties.isAccessPolicyMatch",
            "isAccessPolicyMatch_b",
            "IsAccessPolicyMatch",
        ],
        "is_access_policy_match",
    ),
    (
        &[
            "properties.isRbacAuthorized",
            "isRbacAuthorized_b",
            "IsRbacAuthorized",
        ],
        "is_rbac_authorized",
    ),
    (
        &[
            "properties.isAddressAuthorized",
            "isAddressAuthorized_b",
            "IsAddressAuthorized",
        ],
        "is_address_authorized",
    ),
    (
        &["properties.tlsVersion", "tlsVersion_s", "Tlsversion"],
        "tls_version",
    ),
    (
        &["properties.subnetId", "subnetId_s", "SubnetId"],
        "subnet_id",
    ),
    (
        &["properties.trustedService", "TrustedService"],
        "trusted_service",
    ),
    (
        &["properties.appliedAssignmentId", "AppliedAssignmentId"],
        "applied_assignment_id",
    ),
    (
        &[
            "properties.addedAccessPolicy.ObjectId",
            "addedAccessPolicy_ObjectId_g",
        ],
        "policy_added_oid",
    ),
    (
        &[
            "properties.removedAccessPolicy.ObjectId",
            "removedAccessPolicy_ObjectId_g",
        ],
        "policy_removed_oid",
    ),
    (
        &["properties.addedIpRule.Value", "addedIpRule_Value_s"],
        "ip_rule_added",
    ),
    (
        &[
            "properties.properties.networkAcls.defaultAction",
            "properties_networkAcls_defaultAction_s",
        ],
        "network_default_action",
    ),
    (
        &[
            "properties.properties.enableRbacAuthorization",
            "properties_enableRbacAuthorization_b",
            "EnableRbacAuthorization",
        ],
        "rbac_enabled",
    ),
    (
        &[
            "properties.properties.enableSoftDelete",
            "properties_enableSoftDelete_b",
            "EnableSoftDelete",
        ],
        "soft_delete_enabled",
    ),
    (
        &[
            "properties.properties.enablePurgeProtection",
            "properties_enablePurgeProtection_b",
            "EnablePurgeProtection",
        ],
        "purge_protection_enabled",
    ),
];

/// Shipped mapping for `azure/activitylogs` (the fields SigmaHQ's Azure rules use, and the
/// `AzureActivity` columns).
const ACTIVITY_FIELDS: &[(&[&str], &str)] = &[
    (
        &["operationName", "OperationName", "OperationNameValue"],
        "operation",
    ),
    (&["category", "Category", "CategoryValue"], "category"),
    (
        &[
            "status",
            "status.value",
            "ActivityStatus",
            "ActivityStatusValue",
            "resultType",
            "ResultType",
        ],
        "status",
    ),
    (&["caller", "Caller"], "coalesce(caller_upn, caller_oid)"),
    (&["callerIpAddress", "CallerIpAddress"], "caller_ip"),
    (&["correlationId", "CorrelationId"], "correlation_id"),
    (&["resourceId", "ResourceId", "_ResourceId"], "resource_id"),
    (
        &["ResourceProviderValue", "resourceProviderName.value"],
        "split_part(operation, '/', 1)",
    ),
    (&["SubscriptionId", "subscriptionId"], "subscription_id"),
    (
        &[
            "claims.http://schemas.microsoft.com/identity/claims/objectidentifier",
            "claims.oid",
            "identity.claims.http://schemas.microsoft.com/identity/claims/objectidentifier",
        ],
        "caller_oid",
    ),
    (
        &[
            "claims.http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
            "claims.upn",
            "identity.claims.http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
        ],
        "caller_upn",
    ),
    (&["claims.appid", "identity.claims.appid"], "caller_appid"),
    (
        &["authorization.scope", "identity.authorization.scope"],
        "scope",
    ),
    (
        &["properties", "Properties", "properties.requestbody"],
        "properties",
    ),
];

impl SigmaMap {
    /// The SQL expression a field of `source` reads: the deployment's mapping, the shipped
    /// one, or a column of the table with that name.
    fn column(&self, source: Source, field: &str) -> Option<String> {
        let (user, shipped, schema) = match source {
            Source::Keyvault => (&self.keyvault, KEYVAULT_FIELDS, events_schema()),
            Source::ActivityLogs => (&self.activitylogs, ACTIVITY_FIELDS, activity_schema()),
        };
        if let Some(c) = user.get(field) {
            return Some(c.clone());
        }
        if let Some((_, c)) = shipped
            .iter()
            .find(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(field)))
        {
            return Some((*c).to_owned());
        }
        schema
            .fields()
            .iter()
            .find(|f| f.name().eq_ignore_ascii_case(field))
            .map(|f| f.name().clone())
    }

    /// Checks the deployment's overrides name columns, not SQL.
    pub fn validate(&self) -> Result<(), String> {
        for (source, m) in [
            ("keyvault", &self.keyvault),
            ("activitylogs", &self.activitylogs),
        ] {
            for (field, col) in m {
                let ok = !col.is_empty()
                    && col
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !ok {
                    return Err(format!(
                        "sigma.{source}: field {field:?} maps to {col:?}, which is not a column name"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// kvwatch's settings for a Sigma rule (the custom `kvwatch:` attribute).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Extension {
    #[serde(default)]
    window: Option<Dur>,
    #[serde(default)]
    suppression: Option<Dur>,
    #[serde(default)]
    dedup: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    tests: Vec<Fixture>,
}

/// One Sigma document, as written; custom attributes other than `kvwatch` are ignored.
#[derive(Debug, Clone, Deserialize)]
struct Doc {
    title: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    logsource: Option<Mapping>,
    #[serde(default)]
    detection: Option<Mapping>,
    #[serde(default)]
    correlation: Option<Mapping>,
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    falsepositives: Vec<String>,
    #[serde(default)]
    kvwatch: Option<Extension>,
}

/// A Sigma document and where it came from.
#[derive(Debug, Clone)]
pub struct SigmaDoc {
    doc: Doc,
    file: String,
    line: usize,
    dir: Option<PathBuf>,
}

/// Is this YAML text Sigma (a `detection` or `correlation` at the top of some document)?
pub fn is_sigma(text: &str) -> bool {
    text.lines().any(|l| {
        l.starts_with("detection:") || l.starts_with("correlation:") || l.starts_with("logsource:")
    })
}

/// Reads the documents of one Sigma file.
pub fn parse_file(
    file: &str,
    text: &str,
    dir: Option<PathBuf>,
) -> Result<Vec<SigmaDoc>, RuleError> {
    let mut out = Vec::new();
    // Line where each document starts, for messages.
    let mut starts = vec![1];
    for (i, l) in text.lines().enumerate() {
        if l.trim_end() == "---" && i > 0 {
            starts.push(i + 2);
        }
    }
    for (n, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let base = starts.get(n).copied().unwrap_or(1);
        let v = Value::deserialize(de).map_err(|e| RuleError::Invalid {
            file: file.to_owned(),
            line: base + e.location().map_or(0, |l| l.line().saturating_sub(1)),
            message: format!("Sigma: {e}"),
        })?;
        if v.is_null() {
            continue;
        }
        let doc: Doc = serde_yaml::from_value(v).map_err(|e| RuleError::Invalid {
            file: file.to_owned(),
            line: base,
            message: format!("Sigma: {e}"),
        })?;
        out.push(SigmaDoc {
            doc,
            file: file.to_owned(),
            line: base,
            dir: dir.clone(),
        });
    }
    Ok(out)
}

impl SigmaDoc {
    fn err(&self, what: impl std::fmt::Display) -> RuleError {
        RuleError::Invalid {
            file: self.file.clone(),
            line: self.line,
            message: format!("Sigma rule {:?}: {what}", self.doc.title),
        }
    }

    fn refers_to(&self, name: &str) -> bool {
        self.doc.name.as_deref() == Some(name) || self.doc.id.as_deref() == Some(name)
    }
}

/// Compiles Sigma documents (of one directory: correlations may refer to rules of other
/// files) into rules. Rules a correlation refers to are not rules of their own unless the
/// correlation says `generate: true`.
pub fn compile_all(docs: &[SigmaDoc], map: &SigmaMap) -> Result<Vec<Rule>, RuleError> {
    let mut referenced: Vec<&str> = Vec::new();
    for d in docs {
        if let Some(c) = &d.doc.correlation {
            let generate = c.get("generate").and_then(Value::as_bool).unwrap_or(false);
            if !generate {
                for r in str_list(c.get("rules")) {
                    referenced.push(r);
                }
            }
        }
    }
    let mut out = Vec::new();
    for d in docs {
        if d.doc.correlation.is_some() {
            out.push(compile_correlation(d, docs, map)?);
        } else if !referenced.iter().any(|r| d.refers_to(r)) {
            out.push(compile_single(d, map)?);
        }
    }
    Ok(out)
}

fn str_list(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Sequence(s)) => s.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn source_of(d: &SigmaDoc) -> Result<Source, RuleError> {
    let ls = d
        .doc
        .logsource
        .as_ref()
        .ok_or_else(|| d.err("has no logsource"))?;
    let get = |k: &str| {
        ls.get(k)
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    };
    let (product, service, category) = (get("product"), get("service"), get("category"));
    match (product.as_deref(), service.as_deref(), category.as_deref()) {
        (Some("azure"), Some("activitylogs" | "activitylog"), _) => Ok(Source::ActivityLogs),
        (Some("azure"), Some("keyvault" | "auditevent" | "keyvault_audit"), _)
        | (Some("azure"), None, Some("keyvault")) => Ok(Source::Keyvault),
        _ => Err(d.err(format!(
            "unsupported logsource {}: kvwatch reads product: azure with service: keyvault (Key Vault audit events) or service: activitylogs",
            serde_yaml::to_string(ls).unwrap_or_default().trim().replace('\n', ", ")
        ))),
    }
}

/// The condition of a detection, as SQL over the source's table.
fn condition(
    d: &SigmaDoc,
    det: &Mapping,
    source: Source,
    map: &SigmaMap,
) -> Result<String, RuleError> {
    let mut selections: BTreeMap<String, String> = BTreeMap::new();
    let mut cond = None;
    for (k, v) in det {
        let name = k
            .as_str()
            .ok_or_else(|| d.err("a detection key is not a string"))?;
        match name {
            "condition" => {
                cond = Some(match v {
                    Value::String(s) => s.clone(),
                    Value::Sequence(list) => {
                        // Several conditions: any of them.
                        let parts: Vec<String> = list
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|s| format!("({s})"))
                            .collect();
                        parts.join(" or ")
                    }
                    _ => return Err(d.err("condition must be a string")),
                })
            }
            "timeframe" => {
                return Err(d.err(
                    "construct `timeframe` (Sigma v1 aggregations): write a correlation rule instead",
                ));
            }
            _ => {
                selections.insert(name.to_owned(), selection(d, name, v, source, map)?);
            }
        }
    }
    let cond = cond.ok_or_else(|| d.err("detection has no condition"))?;
    Cond::parse(d, &cond, &selections)
}

/// One named selection: a map (every field matches) or a list of maps (any map matches).
fn selection(
    d: &SigmaDoc,
    name: &str,
    v: &Value,
    source: Source,
    map: &SigmaMap,
) -> Result<String, RuleError> {
    let sql = match v {
        Value::Mapping(m) => fields(d, m, source, map)?,
        Value::Sequence(items) if items.iter().all(Value::is_mapping) => {
            let parts = items
                .iter()
                .map(|i| fields(d, i.as_mapping().expect("checked"), source, map))
                .collect::<Result<Vec<_>, _>>()?;
            format!("({})", parts.join(" OR "))
        }
        _ => {
            return Err(d.err(format!(
                "selection {name}: construct `keywords` (values without a field) is not supported; name the field"
            )));
        }
    };
    // NULL (a field the event lacks) matches nothing, and `not` of it matches: Sigma's
    // semantics, not SQL's three-valued ones.
    Ok(format!("coalesce({sql}, false)"))
}

fn fields(d: &SigmaDoc, m: &Mapping, source: Source, map: &SigmaMap) -> Result<String, RuleError> {
    if m.is_empty() {
        return Err(d.err(
            "an empty selection matches everything; write `condition: true`-style logic explicitly",
        ));
    }
    let parts = m
        .iter()
        .map(|(k, v)| {
            let key = k
                .as_str()
                .ok_or_else(|| d.err("a field name is not a string"))?;
            field(d, key, v, source, map)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!("({})", parts.join(" AND ")))
}

/// How one field is compared.
#[derive(Default)]
struct Mods {
    contains: bool,
    startswith: bool,
    endswith: bool,
    all: bool,
    re: bool,
    re_flags: String,
    cidr: bool,
    exists: bool,
    cased: bool,
    windash: bool,
    cmp: Option<&'static str>,
}

fn field(
    d: &SigmaDoc,
    key: &str,
    v: &Value,
    source: Source,
    map: &SigmaMap,
) -> Result<String, RuleError> {
    let mut parts = key.split('|');
    let name = parts.next().unwrap_or_default();
    if name.is_empty() {
        return Err(d.err(format!(
            "{key}: construct `keywords` (modifiers without a field) is not supported"
        )));
    }
    let mut m = Mods::default();
    for modifier in parts {
        match modifier {
            "contains" => m.contains = true,
            "startswith" => m.startswith = true,
            "endswith" => m.endswith = true,
            "all" => m.all = true,
            "re" => m.re = true,
            "i" | "m" | "s" if m.re => m.re_flags.push_str(modifier),
            "cidr" => m.cidr = true,
            "exists" => m.exists = true,
            "cased" => m.cased = true,
            "windash" => m.windash = true,
            "gt" => m.cmp = Some(">"),
            "gte" => m.cmp = Some(">="),
            "lt" => m.cmp = Some("<"),
            "lte" => m.cmp = Some("<="),
            other => {
                return Err(d.err(format!(
                    "field {name}: unsupported modifier `{other}` (kvwatch supports contains, startswith, endswith, all, re, re|i|m|s, cidr, exists, cased, windash, gt, gte, lt, lte)"
                )));
            }
        }
    }
    let col = map.column(source, name).ok_or_else(|| {
        let section = match source {
            Source::Keyvault => "keyvault",
            Source::ActivityLogs => "activitylogs",
        };
        d.err(format!(
            "field {name} has no mapping to a column of `{}`; map it under [sigma.{section}] in kvwatch.toml",
            source.table()
        ))
    })?;
    if m.exists {
        let want = v
            .as_bool()
            .ok_or_else(|| d.err(format!("field {name}|exists takes true or false")))?;
        return Ok(format!("({col} IS {}NULL)", if want { "NOT " } else { "" }));
    }
    let values: Vec<&Value> = match v {
        Value::Sequence(s) => s.iter().collect(),
        other => vec![other],
    };
    if values.is_empty() {
        return Err(d.err(format!("field {name}: an empty list of values")));
    }
    let mut terms = Vec::new();
    for val in values {
        terms.push(value(d, name, &col, val, &m)?);
    }
    let joiner = if m.all { " AND " } else { " OR " };
    Ok(format!("({})", terms.join(joiner)))
}

fn value(d: &SigmaDoc, name: &str, col: &str, v: &Value, m: &Mods) -> Result<String, RuleError> {
    let text = match v {
        Value::Null => return Ok(format!("({col} IS NULL)")),
        Value::Bool(b) => {
            return Ok(format!(
                "(CAST({col} AS VARCHAR) = {})",
                sql_literal(&b.to_string())
            ));
        }
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => {
            return Err(d.err(format!(
                "field {name}: a value is neither text, a number, a boolean nor null"
            )));
        }
    };
    if let Some(op) = m.cmp {
        let n: f64 = text
            .parse()
            .map_err(|_| d.err(format!("field {name}: {text:?} is not a number")))?;
        return Ok(format!("(TRY_CAST({col} AS DOUBLE) {op} {n:?})"));
    }
    if m.cidr {
        return Ok(format!("ip_in_cidrs({col}, {})", sql_literal(&text)));
    }
    let s = format!("CAST({col} AS VARCHAR)");
    if m.re {
        return Ok(if m.re_flags.is_empty() {
            format!("regexp_like({s}, {})", sql_literal(&text))
        } else {
            format!(
                "regexp_like({s}, {}, {})",
                sql_literal(&text),
                sql_literal(&m.re_flags)
            )
        });
    }
    let variants = if m.windash {
        ["-", "/", "\u{2013}", "\u{2014}", "\u{2015}"]
            .iter()
            .map(|dash| text.replace('-', dash))
            .collect()
    } else {
        vec![text]
    };
    let mut out = Vec::new();
    for t in variants {
        let mut pattern = like_pattern(&t);
        let wild = pattern.1;
        if m.contains {
            pattern.0 = format!("%{}%", pattern.0);
        } else if m.startswith {
            pattern.0 = format!("{}%", pattern.0);
        } else if m.endswith {
            pattern.0 = format!("%{}", pattern.0);
        }
        let like = m.contains || m.startswith || m.endswith || wild;
        out.push(match (like, m.cased) {
            (false, false) => format!("(lower({s}) = lower({}))", sql_literal(&unescape(&t))),
            (false, true) => format!("({s} = {})", sql_literal(&unescape(&t))),
            (true, false) => format!("({s} ILIKE {} ESCAPE '\\')", sql_literal(&pattern.0)),
            (true, true) => format!("({s} LIKE {} ESCAPE '\\')", sql_literal(&pattern.0)),
        });
    }
    Ok(if out.len() == 1 {
        out.remove(0)
    } else {
        format!("({})", out.join(" OR "))
    })
}

/// A Sigma value as a LIKE pattern (`*` → `%`, `?` → `_`, `\*` `\?` `\\` literal), and whether
/// it has wildcards.
fn like_pattern(v: &str) -> (String, bool) {
    let mut out = String::new();
    let mut wild = false;
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('*' | '?' | '\\')) => {
                let n = chars.next().expect("peeked");
                if n == '\\' {
                    out.push_str("\\\\");
                } else {
                    out.push(n);
                }
            }
            '*' => {
                out.push('%');
                wild = true;
            }
            '?' => {
                out.push('_');
                wild = true;
            }
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    (out, wild)
}

/// A Sigma value without wildcards, its escapes removed.
fn unescape(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && matches!(chars.peek(), Some('*' | '?' | '\\')) {
            out.push(chars.next().expect("peeked"));
        } else {
            out.push(c);
        }
    }
    out
}

/// The condition grammar: `or` < `and` < `not` < atoms (names, `1 of`/`all of`, parentheses).
struct Cond<'a> {
    d: &'a SigmaDoc,
    toks: Vec<String>,
    pos: usize,
    sels: &'a BTreeMap<String, String>,
}

impl<'a> Cond<'a> {
    fn parse(
        d: &'a SigmaDoc,
        text: &str,
        sels: &'a BTreeMap<String, String>,
    ) -> Result<String, RuleError> {
        if text.contains('|') {
            return Err(d.err(
                "construct `| count()` (Sigma v1 aggregation) in the condition: write a correlation rule instead",
            ));
        }
        let mut toks = Vec::new();
        let mut cur = String::new();
        for c in text.chars() {
            match c {
                '(' | ')' => {
                    if !cur.is_empty() {
                        toks.push(std::mem::take(&mut cur));
                    }
                    toks.push(c.to_string());
                }
                c if c.is_whitespace() => {
                    if !cur.is_empty() {
                        toks.push(std::mem::take(&mut cur));
                    }
                }
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            toks.push(cur);
        }
        let mut p = Cond {
            d,
            toks,
            pos: 0,
            sels,
        };
        let sql = p.or()?;
        if p.pos != p.toks.len() {
            return Err(d.err(format!(
                "condition {text:?}: unexpected `{}`",
                p.toks[p.pos]
            )));
        }
        Ok(sql)
    }

    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(String::as_str)
    }

    fn eat(&mut self, word: &str) -> bool {
        if self.peek().is_some_and(|t| t.eq_ignore_ascii_case(word)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<String, RuleError> {
        let mut parts = vec![self.and()?];
        while self.eat("or") {
            parts.push(self.and()?);
        }
        Ok(join(parts, "OR"))
    }

    fn and(&mut self) -> Result<String, RuleError> {
        let mut parts = vec![self.not()?];
        while self.eat("and") {
            parts.push(self.not()?);
        }
        Ok(join(parts, "AND"))
    }

    fn not(&mut self) -> Result<String, RuleError> {
        if self.eat("not") {
            return Ok(format!("(NOT {})", self.not()?));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<String, RuleError> {
        let Some(t) = self.peek().map(str::to_owned) else {
            return Err(self.d.err("condition ends early"));
        };
        self.pos += 1;
        if t == "(" {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err(self.d.err("condition: `(` without `)`"));
            }
            return Ok(inner);
        }
        let quantifier = match t.to_ascii_lowercase().as_str() {
            "1" | "any" => Some("OR"),
            "all" => Some("AND"),
            _ => None,
        };
        if let Some(op) = quantifier
            && self.eat("of")
        {
            let pattern = self
                .peek()
                .map(str::to_owned)
                .ok_or_else(|| self.d.err("condition: `of` without a name"))?;
            self.pos += 1;
            let names: Vec<&String> = self
                .sels
                .keys()
                .filter(|n| {
                    if pattern == "them" {
                        !n.starts_with('_')
                    } else {
                        glob(&pattern, n)
                    }
                })
                .collect();
            if names.is_empty() {
                return Err(self
                    .d
                    .err(format!("condition: no selection matches {pattern:?}")));
            }
            return Ok(join(
                names.iter().map(|n| self.sels[*n].clone()).collect(),
                op,
            ));
        }
        if matches!(t.as_str(), ")" | "and" | "or" | "of") {
            return Err(self.d.err(format!("condition: unexpected `{t}`")));
        }
        self.sels.get(&t).cloned().ok_or_else(|| {
            self.d.err(format!(
                "condition names selection {t:?}, which the detection does not define"
            ))
        })
    }
}

fn join(parts: Vec<String>, op: &str) -> String {
    if parts.len() == 1 {
        parts.into_iter().next().expect("one part")
    } else {
        format!("({})", parts.join(&format!(" {op} ")))
    }
}

/// `*` matches any run of characters in a selection-name pattern.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len()).any(|i| {
                    name.is_char_boundary(head.len() + i) && glob(tail, &name[head.len() + i..])
                })
        }
    }
}

/// ATT&CK tactic names as Sigma tags them, and their IDs.
const TACTICS: &[(&str, &str)] = &[
    ("reconnaissance", "TA0043"),
    ("resource_development", "TA0042"),
    ("initial_access", "TA0001"),
    ("execution", "TA0002"),
    ("persistence", "TA0003"),
    ("privilege_escalation", "TA0004"),
    ("defense_evasion", "TA0005"),
    ("credential_access", "TA0006"),
    ("discovery", "TA0007"),
    ("lateral_movement", "TA0008"),
    ("collection", "TA0009"),
    ("exfiltration", "TA0010"),
    ("command_and_control", "TA0011"),
    ("impact", "TA0040"),
];

fn attack(tags: &[String]) -> (Vec<String>, Vec<String>) {
    let mut tactics = Vec::new();
    let mut techniques = Vec::new();
    for t in tags {
        let Some(rest) = t
            .to_ascii_lowercase()
            .strip_prefix("attack.")
            .map(str::to_owned)
        else {
            continue;
        };
        if rest.starts_with('t') && rest[1..].starts_with(|c: char| c.is_ascii_digit()) {
            techniques.push(rest.to_ascii_uppercase());
        } else if let Some((_, id)) = TACTICS.iter().find(|(n, _)| *n == rest.replace('-', "_")) {
            tactics.push((*id).to_owned());
        }
    }
    (tactics, techniques)
}

fn severity(d: &SigmaDoc) -> Result<Severity, RuleError> {
    Ok(match d.doc.level.as_deref().unwrap_or("medium") {
        "informational" => Severity::Informational,
        "low" => Severity::Low,
        "medium" => Severity::Medium,
        "high" => Severity::High,
        "critical" => Severity::Critical,
        other => return Err(d.err(format!("unknown level {other:?}"))),
    })
}

fn rule_id(d: &SigmaDoc) -> String {
    let raw = d
        .doc
        .id
        .clone()
        .or_else(|| d.doc.name.clone())
        .unwrap_or_else(|| d.doc.title.clone());
    let mut id = String::from("sigma-");
    for c in raw.to_ascii_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            id.push(c);
        } else if !id.ends_with('-') {
            id.push('-');
        }
    }
    id.trim_end_matches('-').to_owned()
}

/// The output columns every compiled rule has: entities, times, counts, evidence.
fn entity_columns(source: Source) -> String {
    let (oid, upn, appid, kind, objects) = match source {
        Source::Keyvault => (
            "principal_oid",
            "principal_upn",
            "principal_appid",
            "max(principal_type)",
            "object_name",
        ),
        Source::ActivityLogs => (
            "caller_oid",
            "caller_upn",
            "caller_appid",
            "CASE WHEN max(caller_upn) IS NOT NULL THEN 'user' ELSE 'unknown' END",
            "coalesce(target_principal_id, resource_id)",
        ),
    };
    format!(
        "max({oid}) AS principal_oid, max({upn}) AS principal_upn, max({appid}) AS principal_appid,
  {kind} AS principal_type,
  coalesce(max({upn}), max({oid}), max({appid}), 'an unknown caller') AS caller,
  min(time) AS first_seen, max(time) AS last_seen, count(*) AS event_count,
  array_agg(DISTINCT operation) AS operations, array_agg(DISTINCT caller_ip) AS ips,
  array_agg(DISTINCT vault) AS vaults, array_agg(DISTINCT {objects}) AS objects,
  array_agg(event_id) AS event_ids"
    )
}

fn description(d: &SigmaDoc) -> String {
    let mut text = d.doc.description.clone().unwrap_or_default();
    if !d.doc.falsepositives.is_empty() {
        text.push_str(&format!(
            "\nFalse positives: {}.",
            d.doc.falsepositives.join("; ")
        ));
    }
    text.push_str(&format!("\nSigma rule from {}.", d.file));
    text
}

fn safe_title(d: &SigmaDoc) -> String {
    d.doc.title.replace(['{', '}'], "")
}

fn build(
    d: &SigmaDoc,
    sql: String,
    window: Dur,
    default_dedup: Vec<String>,
    summary: String,
    tests: Vec<Fixture>,
) -> Result<Rule, RuleError> {
    let ext = d.doc.kvwatch.clone().unwrap_or_default();
    let (tactics, techniques) = attack(&d.doc.tags);
    let doc = RuleDoc {
        id: rule_id(d),
        title: d.doc.title.clone(),
        description: description(d),
        severity: severity(d)?,
        tactics,
        techniques,
        interval: Dur(0),
        complete: false,
        window: ext.window.unwrap_or(window),
        lookback: None,
        history: None,
        params: BTreeMap::new(),
        entities: Entities::default(),
        dedup: ext.dedup.unwrap_or(default_dedup),
        suppression: ext.suppression.unwrap_or(Dur(86_400)),
        summary,
        sql,
        tests: if ext.tests.is_empty() {
            tests
        } else {
            ext.tests
        },
        enabled: ext.enabled.unwrap_or(true),
    };
    let text = serde_yaml::to_string(&doc).map_err(|e| d.err(e))?;
    let mut rule = Rule::parse(&d.file, &text, d.dir.clone())?;
    rule.file = d.file.clone();
    rule.sql_line = d.line;
    Ok(rule)
}

fn compile_single(d: &SigmaDoc, map: &SigmaMap) -> Result<Rule, RuleError> {
    let source = source_of(d)?;
    let det = d
        .doc
        .detection
        .as_ref()
        .ok_or_else(|| d.err("has neither detection nor correlation"))?;
    let cond = condition(d, det, source, map)?;
    let principal = match source {
        Source::Keyvault => "principal_oid",
        Source::ActivityLogs => "caller_oid",
    };
    let sql = format!(
        "SELECT date_bin({{{{window}}}}, time) AS window_start, vault,
  {}
FROM {}
WHERE {cond}
GROUP BY date_bin({{{{window}}}}, time), vault, {principal}",
        entity_columns(source),
        source.table(),
    );
    let summary = format!(
        "{{caller}} matched Sigma rule \"{}\" on {{vault}}: {{operations}}",
        safe_title(d)
    );
    build(
        d,
        sql,
        Dur(3600),
        vec!["vault".into(), "principal_oid".into()],
        summary,
        Vec::new(),
    )
}

fn compile_correlation(d: &SigmaDoc, docs: &[SigmaDoc], map: &SigmaMap) -> Result<Rule, RuleError> {
    let c = d.doc.correlation.as_ref().expect("a correlation");
    for key in c.keys().filter_map(Value::as_str) {
        if !matches!(
            key,
            "type" | "rules" | "group-by" | "timespan" | "condition" | "generate"
        ) {
            return Err(d.err(format!("correlation: unsupported construct `{key}`")));
        }
    }
    let kind = c
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| d.err("correlation has no type"))?;
    let names = str_list(c.get("rules"));
    if names.is_empty() {
        return Err(d.err("correlation names no rules"));
    }
    let mut bases = Vec::new();
    for n in &names {
        let base = docs
            .iter()
            .find(|o| o.doc.correlation.is_none() && o.refers_to(n))
            .ok_or_else(|| {
                d.err(format!(
                    "correlation refers to rule {n:?}, which is not loaded (by name or id)"
                ))
            })?;
        bases.push(base);
    }
    let source = source_of(bases[0])?;
    for b in &bases {
        if source_of(b)? != source {
            return Err(d.err("correlation joins rules of different log sources"));
        }
    }
    let conds = bases
        .iter()
        .map(|b| {
            let det = b
                .doc
                .detection
                .as_ref()
                .ok_or_else(|| b.err("has no detection"))?;
            condition(b, det, source, map)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let timespan = c
        .get("timespan")
        .and_then(Value::as_str)
        .and_then(Dur::parse)
        .ok_or_else(|| d.err("correlation needs a timespan such as 10m or 1h"))?;
    let group: Vec<String> = str_list(c.get("group-by"))
        .into_iter()
        .map(|f| {
            map.column(source, f)
                .filter(|col| col.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'))
                .ok_or_else(|| d.err(format!("group-by field {f} has no column mapping")))
        })
        .collect::<Result<_, _>>()?;
    // A temporal correlation without a condition asks for every rule it names.
    let every = Mapping::from_iter([(Value::from("gte"), Value::from(names.len() as i64))]);
    let cond_map = match c.get("condition").and_then(Value::as_mapping) {
        Some(m) => m,
        None if kind == "temporal" => &every,
        None => return Err(d.err("correlation needs a condition such as {gte: 10}")),
    };
    let mut field_col = None;
    let mut tests = Vec::new();
    for (k, v) in cond_map {
        let k = k.as_str().unwrap_or_default();
        let op = match k {
            "gt" => ">",
            "gte" => ">=",
            "lt" => "<",
            "lte" => "<=",
            "eq" => "=",
            "field" => {
                let f = v
                    .as_str()
                    .ok_or_else(|| d.err("condition field must be a field name"))?;
                field_col =
                    Some(map.column(source, f).ok_or_else(|| {
                        d.err(format!("condition field {f} has no column mapping"))
                    })?);
                continue;
            }
            other => {
                return Err(d.err(format!(
                    "correlation condition: unsupported construct `{other}`"
                )));
            }
        };
        let n = v
            .as_i64()
            .ok_or_else(|| d.err(format!("correlation condition {k} needs a whole number")))?;
        tests.push((op, n));
    }
    if tests.is_empty() {
        return Err(d.err("correlation condition compares nothing (gte, gt, lte, lt or eq)"));
    }
    let (measure, matched) = match kind {
        "event_count" => ("count(*)".to_owned(), join(conds, "OR")),
        "value_count" => {
            let f = field_col.ok_or_else(|| d.err("value_count needs condition.field"))?;
            (format!("count(DISTINCT {f})"), join(conds, "OR"))
        }
        "temporal" => {
            let hits: Vec<String> = conds
                .iter()
                .map(|c| format!("max(CASE WHEN {c} THEN 1 ELSE 0 END)"))
                .collect();
            (format!("({})", hits.join(" + ")), join(conds, "OR"))
        }
        other => {
            return Err(d.err(format!(
                "correlation type `{other}` is not supported (event_count, value_count, temporal)"
            )));
        }
    };
    let having: Vec<String> = tests
        .iter()
        .map(|(op, n)| format!("{measure} {op} {n}"))
        .collect();
    let entity_names = [
        "principal_oid",
        "principal_upn",
        "principal_appid",
        "principal_type",
    ];
    let group_out: Vec<&String> = group
        .iter()
        .filter(|g| !entity_names.contains(&g.as_str()))
        .collect();
    let mut select = String::from("date_bin({{window}}, time) AS window_start");
    for g in &group_out {
        select.push_str(&format!(", {g}"));
    }
    let scope = if group.is_empty() {
        select.push_str(", 'all' AS scope");
        vec!["scope".to_owned()]
    } else {
        group.clone()
    };
    let mut group_by = String::from("date_bin({{window}}, time)");
    for g in &group {
        group_by.push_str(&format!(", {g}"));
    }
    let sql = format!(
        "SELECT {select}, {measure} AS measure,
  {}
FROM {}
WHERE {matched}
GROUP BY {group_by}
HAVING {}",
        entity_columns(source),
        source.table(),
        having.join(" AND "),
    );
    let summary = format!(
        "Sigma correlation \"{}\" ({kind}): {{measure}} in {} for {{caller}} on {{vaults}}",
        safe_title(d),
        String::from(timespan)
    );
    build(d, sql, timespan, scope, summary, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<Vec<Rule>, RuleError> {
        let docs = parse_file("t.yml", text, None)?;
        compile_all(&docs, &SigmaMap::default())
    }

    const HEAD: &str = "title: T\nid: 0e6a2b8e-1111-4222-8333-444455556666\nlogsource: {product: azure, service: keyvault}\nlevel: high\ntags: [attack.credential_access, attack.t1555.006]\n";

    #[test]
    fn selection_and_modifiers_compile() {
        let r = compile(&format!(
            "{HEAD}detection:\n  sel:\n    operationName|endswith: Get\n    callerIpAddress|cidr: [10.0.0.0/8, 192.168.0.0/16]\n  filter:\n    identity.claim.upn|contains|all: ['@', contoso]\n  condition: sel and not filter\n"
        ))
        .unwrap();
        let sql = &r[0].doc.sql;
        assert!(sql.contains("ILIKE '%Get'"), "{sql}");
        assert!(
            sql.contains("ip_in_cidrs(caller_ip, '10.0.0.0/8')"),
            "{sql}"
        );
        assert!(sql.contains("(NOT coalesce("), "{sql}");
        assert_eq!(r[0].id(), "sigma-0e6a2b8e-1111-4222-8333-444455556666");
        assert_eq!(r[0].doc.severity, Severity::High);
        assert_eq!(r[0].doc.tactics, ["TA0006"]);
        assert_eq!(r[0].doc.techniques, ["T1555.006"]);
    }

    #[test]
    fn unsupported_constructs_name_rule_file_and_construct() {
        for (detection, construct) in [
            (
                "  sel:\n    operationName|base64: x\n  condition: sel\n",
                "modifier `base64`",
            ),
            ("  sel: [SecretGet]\n  condition: sel\n", "keywords"),
            (
                "  sel:\n    operationName: x\n  condition: sel | count() > 5\n",
                "count()",
            ),
            (
                "  sel:\n    nosuchfield: x\n  condition: sel\n",
                "nosuchfield",
            ),
            (
                "  sel:\n    operationName: x\n  condition: sel and other\n",
                "\"other\"",
            ),
        ] {
            let e = compile(&format!("{HEAD}detection:\n{detection}"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("t.yml:1:"), "{e}");
            assert!(e.contains("Sigma rule \"T\""), "{e}");
            assert!(e.contains(construct), "{construct}: {e}");
        }
        let e = compile("title: W\nlogsource: {product: windows, service: security}\ndetection:\n  s: {EventID: 4624}\n  condition: s\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported logsource"), "{e}");
        let e = compile(&format!("{HEAD}name: base\ndetection:\n  s: {{operationName: SecretGet}}\n  condition: s\n---\ntitle: C\ncorrelation:\n  type: temporal_ordered\n  rules: [base]\n  timespan: 1h\n  condition: {{gte: 2}}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.yml:11:") && e.contains("temporal_ordered"),
            "{e}"
        );
    }

    #[test]
    fn wildcards_and_escapes() {
        assert_eq!(like_pattern("a*b?c"), ("a%b_c".into(), true));
        assert_eq!(like_pattern(r"100\*_%"), (r"100*\_\%".into(), false));
        assert_eq!(unescape(r"a\*b"), "a*b");
        assert!(glob("sel*", "selection1"));
        assert!(!glob("sel*", "filter"));
        assert!(glob("*_1", "a_1"));
    }
}
