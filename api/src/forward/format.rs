//! Wire formats of an alert for SIEMs: CEF (ArcSight Common Event Format, also the payload of
//! the syslog sink and of `/export?format=cef`), RFC 5424 syslog lines, the Splunk HEC event
//! envelope and the row shape of the Sentinel custom table.

use kvwatch_detect::{Alert, Severity};
use kvwatch_ingest::time::format_ns;
use serde_json::{Value, json};
use std::fmt::Write as _;

/// CEF severity (0–10).
pub fn cef_severity(s: Severity) -> u8 {
    match s {
        Severity::Informational => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

/// Escapes a CEF header field: backslash and pipe are escaped; line breaks cannot appear in
/// a header and become spaces.
pub fn cef_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a CEF extension value: backslash and equals are escaped, line breaks become `\n`
/// and `\r`.
pub fn cef_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// The alert as one CEF record. Extension keys come from the ArcSight dictionary; the
/// kvwatch-specific fields use the labelled custom strings `cs1`–`cs6`.
pub fn to_cef(a: &Alert) -> String {
    let ms = |ns: i64| ns / 1_000_000;
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", ms(a.updated_at).to_string()),
        ("start", ms(a.first_seen).to_string()),
        ("end", ms(a.last_seen).to_string()),
        ("cnt", a.event_count.to_string()),
        ("externalId", a.id.clone()),
        ("msg", a.summary.clone()),
        ("cat", a.tactics.join(",")),
        ("outcome", a.status.as_str().to_owned()),
    ];
    if let Some(p) = a.principals.first() {
        if let Some(u) = &p.upn {
            ext.push(("suser", u.clone()));
        }
        if let Some(o) = p.oid.as_ref().or(p.appid.as_ref()) {
            ext.push(("suid", o.clone()));
        }
    }
    if let Some(ip) = a
        .ips
        .iter()
        .find(|ip| ip.parse::<std::net::IpAddr>().is_ok())
    {
        ext.push(("src", ip.clone()));
    }
    for (i, (label, value)) in [
        ("vaults", a.vaults.join(",")),
        ("techniques", a.techniques.join(",")),
        ("objects", a.objects.join(",")),
        ("principals", {
            let v: Vec<&str> = a.principals.iter().map(|p| p.label()).collect();
            v.join(",")
        }),
        ("assignee", a.assignee.clone().unwrap_or_default()),
        ("dedupKey", a.dedup_key.clone()),
    ]
    .into_iter()
    .enumerate()
    {
        ext.push((CS_LABELS[i], label.to_owned()));
        ext.push((CS_KEYS[i], value));
    }
    let mut out = format!(
        "CEF:0|kvwatch|kvwatch|{}|{}|{}|{}|",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(&a.rule_id),
        cef_header(&a.title),
        cef_severity(a.severity)
    );
    for (i, (k, v)) in ext.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{k}={}", cef_value(v));
    }
    out
}

const CS_LABELS: [&str; 6] = [
    "cs1Label", "cs2Label", "cs3Label", "cs4Label", "cs5Label", "cs6Label",
];
const CS_KEYS: [&str; 6] = ["cs1", "cs2", "cs3", "cs4", "cs5", "cs6"];

/// Syslog severity of an alert (RFC 5424 numeric severity).
pub fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Informational => 6,
    }
}

/// One RFC 5424 message carrying the alert's CEF record.
pub fn syslog_line(a: &Alert, facility: u8, hostname: &str, app: &str) -> String {
    let pri = u32::from(facility) * 8 + u32::from(syslog_severity(a.severity));
    let time = chrono::DateTime::from_timestamp_nanos(a.updated_at)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    // HOSTNAME and APP-NAME are printable US-ASCII without spaces (RFC 5424 §6.2).
    let token = |s: &str, max: usize| -> String {
        let t: String = s
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(max)
            .collect();
        if t.is_empty() { "-".into() } else { t }
    };
    format!(
        "<{pri}>1 {time} {} {} {} alert - {}",
        token(hostname, 255),
        token(app, 48),
        std::process::id(),
        to_cef(a)
    )
}

/// The row of the Sentinel custom table (`KvwatchAlerts_CL`) for an alert. Column names are
/// the DCR stream's; arrays become `dynamic` columns.
pub fn sentinel_row(a: &Alert, change_seq: i64) -> Value {
    json!({
        "TimeGenerated": format_ns(a.updated_at),
        "AlertId": a.id,
        "RuleId": a.rule_id,
        "Title": a.title,
        "Description": a.description,
        "Severity": a.severity.as_str(),
        "Status": a.status.as_str(),
        "Assignee": a.assignee,
        "FirstSeen": format_ns(a.first_seen),
        "LastSeen": format_ns(a.last_seen),
        "CreatedAt": format_ns(a.created_at),
        "EventCount": a.event_count,
        "Occurrences": a.occurrences,
        "Vaults": a.vaults,
        "Principals": a.principals,
        "CallerIps": a.ips,
        "Objects": a.objects,
        "Tactics": a.tactics,
        "Techniques": a.techniques,
        "Summary": a.summary,
        "Evidence": a.evidence,
        "DedupKey": a.dedup_key,
        "ChangeSeq": change_seq,
    })
}

/// The Splunk HEC event envelope for an alert.
pub fn hec_event(
    a: &Alert,
    host: &str,
    source: &str,
    sourcetype: &str,
    index: Option<&str>,
) -> Value {
    let mut v = json!({
        "time": a.updated_at as f64 / 1e9,
        "host": host,
        "source": source,
        "sourcetype": sourcetype,
        "event": a,
    });
    if let Some(i) = index {
        v["index"] = json!(i);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvwatch_detect::{Principal, Status};

    pub(crate) fn alert() -> Alert {
        Alert {
            id: "a1".into(),
            rule_id: "kv-secret|mass=read".into(),
            title: "Mass read | of secrets\nnow".into(),
            severity: Severity::High,
            status: Status::New,
            first_seen: 1_700_000_000_000_000_000,
            last_seen: 1_700_000_060_000_000_000,
            created_at: 1_700_000_100_000_000_000,
            detected_at: 1_700_000_100_000_000_000,
            updated_at: 1_700_000_100_123_456_789,
            event_count: 42,
            occurrences: 1,
            dedup_key: "oid=1\\2".into(),
            vaults: vec!["kv-prod".into()],
            principals: vec![Principal {
                upn: Some("eve@contoso.com".into()),
                oid: Some("0000-1".into()),
                ..Default::default()
            }],
            ips: vec!["203.0.113.9".into()],
            objects: vec!["db=password".into()],
            tactics: vec!["TA0006".into()],
            techniques: vec!["T1555.006".into()],
            summary: "eve read 42 secrets\r\nin 1 min = bad".into(),
            description: String::new(),
            evidence: vec![],
            evidence_truncated: false,
            assignee: None,
        }
    }

    #[test]
    fn cef_escapes_header_and_extension() {
        let c = to_cef(&alert());
        assert!(c.starts_with("CEF:0|kvwatch|kvwatch|"), "{c}");
        assert!(
            c.contains("|kv-secret\\|mass=read|Mass read \\| of secrets now|8|"),
            "{c}"
        );
        assert!(
            c.contains("msg=eve read 42 secrets\\r\\nin 1 min \\= bad"),
            "{c}"
        );
        assert!(c.contains("cs3Label=objects"), "{c}");
        assert!(c.contains("cs3=db\\=password"), "{c}");
        assert!(c.contains("cs6=oid\\=1\\\\2"), "{c}");
        assert!(
            c.contains("suser=eve@contoso.com suid=0000-1 src=203.0.113.9"),
            "{c}"
        );
        assert!(!c.contains('\n') && !c.contains('\r'));
    }

    #[test]
    fn syslog_line_is_rfc5424() {
        let l = syslog_line(&alert(), 20, "host one", "kvwatch");
        // local4 (20) * 8 + err (3) = 163
        assert!(
            l.starts_with("<163>1 2023-11-14T22:15:00.123456Z hostone kvwatch "),
            "{l}"
        );
        assert!(l.contains(" alert - CEF:0|"), "{l}");
    }
}
