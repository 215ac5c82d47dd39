//! The alert model: an [`Occurrence`] is one row a rule returned for one window; an [`Alert`]
//! is what an analyst sees, one or more occurrences of the same rule and dedup key folded
//! together within the rule's suppression period.

use kvwatch_ingest::time::format_ns;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt;

/// Alert severity, ordered from least to most severe.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Informational,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses a severity name; `info` is accepted for `informational`.
    pub fn parse(s: &str) -> Option<Severity> {
        let s = s.trim().to_ascii_lowercase();
        if s == "info" {
            return Some(Severity::Informational);
        }
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// OCSF `severity_id`.
    pub fn ocsf_id(self) -> u8 {
        match self {
            Severity::Informational => 1,
            Severity::Low => 2,
            Severity::Medium => 3,
            Severity::High => 4,
            Severity::Critical => 5,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A principal named by an alert.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct Principal {
    #[serde(default)]
    pub oid: Option<String>,
    #[serde(default)]
    pub upn: Option<String>,
    #[serde(default)]
    pub appid: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

impl Principal {
    pub fn is_empty(&self) -> bool {
        self.oid.is_none() && self.upn.is_none() && self.appid.is_none()
    }
    /// The most readable name: UPN, then object ID, then appid.
    pub fn label(&self) -> &str {
        self.upn
            .as_deref()
            .or(self.oid.as_deref())
            .or(self.appid.as_deref())
            .unwrap_or("-")
    }
}

/// What the alert store needs to know about the analytic behind occurrences (a rule or a model).
#[derive(Debug, Clone, Copy)]
pub struct AlertMeta<'a> {
    pub title: &'a str,
    pub description: &'a str,
    pub tactics: &'a [String],
    pub techniques: &'a [String],
    /// New windows of an open alert's dedup key fold into it within this period (ns).
    pub suppression_ns: i64,
}

/// One rule result row for one window, with deterministic identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Occurrence {
    /// blake3 of (rule id, dedup values, window start): re-evaluation finds the same row.
    pub id: String,
    pub rule_id: String,
    pub dedup_key: String,
    pub window_start: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub event_count: i64,
    pub severity: Severity,
    pub summary: String,
    pub principals: Vec<Principal>,
    pub vaults: Vec<String>,
    pub ips: Vec<String>,
    pub objects: Vec<String>,
    /// Event IDs (`events.event_id` / `activity.event_id`) behind the occurrence.
    pub evidence: Vec<String>,
    /// Every output column of the rule row, for display and fixture matching.
    pub fields: BTreeMap<String, Value>,
}

/// Alert workflow state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    New,
    Acknowledged,
    Resolved,
    Suppressed,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::New,
        Status::Acknowledged,
        Status::Resolved,
        Status::Suppressed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Acknowledged => "acknowledged",
            Status::Resolved => "resolved",
            Status::Suppressed => "suppressed",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
    }
    /// OCSF `status_id`.
    pub fn ocsf_id(self) -> u8 {
        match self {
            Status::New => 1,
            Status::Acknowledged => 2,
            Status::Suppressed => 3,
            Status::Resolved => 4,
        }
    }
}

pub(crate) fn ts<S: serde::Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_ns(*v))
}

fn de_ts<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let s = String::deserialize(d)?;
    kvwatch_ingest::time::parse_timestamp_ns(&s)
        .ok_or_else(|| serde::de::Error::custom(format!("bad timestamp {s:?}")))
}

/// An alert as stored and as printed by `kvwatch alerts --format json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: String,
    pub rule_id: String,
    pub title: String,
    pub severity: Severity,
    pub status: Status,
    #[serde(serialize_with = "ts", deserialize_with = "de_ts")]
    #[schema(value_type = String, format = DateTime)]
    pub first_seen: i64,
    #[serde(serialize_with = "ts", deserialize_with = "de_ts")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: i64,
    /// Wall-clock time kvwatch first raised the alert (of an incident folded from several,
    /// the earliest).
    #[serde(serialize_with = "ts", deserialize_with = "de_ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// The same instant as `created_at`, under the name time-to-detect measurements use:
    /// `detected_at` minus the events' arrival is the pipeline's detection latency.
    #[serde(serialize_with = "ts", deserialize_with = "de_ts", default)]
    #[schema(value_type = String, format = DateTime)]
    pub detected_at: i64,
    #[serde(serialize_with = "ts", deserialize_with = "de_ts")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    pub event_count: i64,
    /// How many rule windows folded into this alert (1 = not folded).
    pub occurrences: i64,
    pub dedup_key: String,
    pub vaults: Vec<String>,
    pub principals: Vec<Principal>,
    pub ips: Vec<String>,
    pub objects: Vec<String>,
    pub tactics: Vec<String>,
    pub techniques: Vec<String>,
    pub summary: String,
    pub description: String,
    /// Event IDs behind the alert (capped; see `evidence_truncated`).
    pub evidence: Vec<String>,
    pub evidence_truncated: bool,
    /// The analyst the alert is assigned to.
    #[serde(default)]
    pub assignee: Option<String>,
}

impl Alert {
    /// The alert as an OCSF 1.3 Detection Finding (class 2004).
    pub fn to_ocsf(&self) -> Value {
        let ms = |ns: i64| ns / 1_000_000;
        let attacks: Vec<Value> = self
            .techniques
            .iter()
            .map(|t| json!({"technique": {"uid": t}}))
            .chain(self.tactics.iter().map(|t| json!({"tactic": {"uid": t}})))
            .collect();
        let mut observables: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| json!({"name": "ip", "type_id": 2, "value": ip}))
            .collect();
        for p in &self.principals {
            if let Some(u) = &p.upn {
                observables.push(json!({"name": "principal.upn", "type_id": 4, "value": u}));
            }
            if let Some(o) = &p.oid {
                observables.push(json!({"name": "principal.oid", "type_id": 10, "value": o}));
            }
        }
        json!({
            "class_uid": 2004,
            "class_name": "Detection Finding",
            "category_uid": 2,
            "category_name": "Findings",
            "activity_id": if self.occurrences > 1 || self.updated_at > self.created_at { 2 } else { 1 },
            "type_uid": 200401 + i64::from(self.occurrences > 1 || self.updated_at > self.created_at),
            "time": ms(self.updated_at),
            "severity_id": self.severity.ocsf_id(),
            "severity": self.severity.as_str(),
            "status_id": self.status.ocsf_id(),
            "status": self.status.as_str(),
            "message": self.summary,
            "count": self.event_count,
            "metadata": {
                "version": "1.3.0",
                "product": {"name": "kvwatch", "vendor_name": "kvwatch", "version": env!("CARGO_PKG_VERSION")},
                "uid": self.id,
            },
            "finding_info": {
                "uid": self.id,
                "title": self.title,
                "desc": self.description,
                "created_time": ms(self.created_at),
                "modified_time": ms(self.updated_at),
                "first_seen_time": ms(self.first_seen),
                "last_seen_time": ms(self.last_seen),
                "analytic": if self.rule_id.starts_with("anomaly-") {
                    json!({"uid": self.rule_id, "name": self.title, "type_id": 3, "type": "Statistical"})
                } else {
                    json!({"uid": self.rule_id, "name": self.title, "type_id": 1, "type": "Rule"})
                },
                "attacks": attacks,
                "related_events": self.evidence.iter().map(|e| json!({"uid": e})).collect::<Vec<_>>(),
            },
            "resources": self.vaults.iter().map(|v| json!({"name": v, "type": "Azure Key Vault"})).collect::<Vec<_>>(),
            "observables": observables,
            "unmapped": {"objects": self.objects, "principals": self.principals, "dedup_key": self.dedup_key},
        })
    }
}

/// Adds the items of `more` missing from `into`, keeping first-seen order.
pub fn union_into<T: PartialEq + Clone>(into: &mut Vec<T>, more: &[T]) {
    for m in more {
        if !into.contains(m) {
            into.push(m.clone());
        }
    }
}
