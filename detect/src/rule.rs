//! Detection rules as data: one YAML file per rule, holding the SQL, its parameters, the
//! entity mapping, dedup/suppression policy and test fixtures.
//!
//! Loading is strict on purpose. A rule with an unknown key, a bad duration, an undefined
//! `{{parameter}}` or SQL that does not plan is rejected with the file and line, because a
//! silently skipped rule is a detection gap nobody notices.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::alert::Severity;
use kvwatch_ingest::query::sql_literal;

/// Errors from loading, rendering or planning rules.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("two rules have id {id}: {first} and {second}")]
    DuplicateId {
        id: String,
        first: String,
        second: String,
    },
    #[error("no rule with id {0}")]
    Unknown(String),
    #[error("rule {rule}: unknown parameter {param} in the configuration")]
    UnknownParam { rule: String, param: String },
    #[error("configuration names rule {0:?}, which is not in the rule pack")]
    UnknownConfigured(String),
    #[error(
        "rule {rule}: {param} must be a number, boolean, string or list (a duration like 5m for interval)"
    )]
    BadConfigValue { rule: String, param: String },
}

/// A duration written `30s`, `10m`, `1h` or `14d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct Dur(pub i64);

impl Dur {
    pub fn secs(self) -> i64 {
        self.0
    }
    pub fn nanos(self) -> i64 {
        self.0 * 1_000_000_000
    }
    /// Parses `<n><unit>` with unit s, m, h or d.
    pub fn parse(s: &str) -> Option<Dur> {
        let s = s.trim();
        let (num, unit) = s.split_at(s.len().checked_sub(1)?);
        let n: i64 = num.parse().ok()?;
        if n < 0 {
            return None;
        }
        let mult = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return None,
        };
        n.checked_mul(mult).map(Dur)
    }
    /// SQL interval literal understood by DataFusion and DuckDB alike.
    pub fn sql(self) -> String {
        format!("INTERVAL '{} seconds'", self.0)
    }
}

impl From<Dur> for String {
    fn from(d: Dur) -> String {
        let s = d.0;
        if s % 86_400 == 0 && s > 0 {
            format!("{}d", s / 86_400)
        } else if s % 3600 == 0 && s > 0 {
            format!("{}h", s / 3600)
        } else if s % 60 == 0 && s > 0 {
            format!("{}m", s / 60)
        } else {
            format!("{s}s")
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Dur::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("bad duration {s:?} (write e.g. 30s, 10m, 1h, 14d)"))
        })
    }
}

/// A rule parameter: its value decides how it is written into the SQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Param {
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A string; `10m`-style strings are durations and become intervals.
    Str(String),
    /// A list of strings, rendered as the inside of an `IN (…)`.
    List(Vec<String>),
}

/// What no value can equal: an empty list renders as this one-element list, so that
/// `x IN ({{list}})` is false and `x NOT IN ({{list}})` is true, as a reader expects
/// (`IN (NULL)` would make `NOT IN` filter out everything).
const EMPTY_LIST_SENTINEL: &str = "'\u{1}kvwatch-empty-list'";

impl Param {
    /// The SQL text substituted for `{{name}}`.
    pub fn sql(&self) -> String {
        match self {
            Param::Bool(b) => b.to_string(),
            Param::Int(i) => i.to_string(),
            Param::Float(f) => format!("{f:?}"),
            Param::Str(s) => match Dur::parse(s) {
                Some(d) => d.sql(),
                None => sql_literal(s),
            },
            Param::List(l) if l.is_empty() => EMPTY_LIST_SENTINEL.to_owned(),
            Param::List(l) => l
                .iter()
                .map(|s| sql_literal(s))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Converts a TOML configuration value.
    pub fn from_toml(v: &toml::Value) -> Option<Param> {
        Some(match v {
            toml::Value::Boolean(b) => Param::Bool(*b),
            toml::Value::Integer(i) => Param::Int(*i),
            toml::Value::Float(f) => Param::Float(*f),
            toml::Value::String(s) => Param::Str(s.clone()),
            toml::Value::Array(a) => Param::List(
                a.iter()
                    .map(|x| match x {
                        toml::Value::String(s) => Some(s.clone()),
                        other => Some(other.to_string()),
                    })
                    .collect::<Option<Vec<_>>>()?,
            ),
            _ => return None,
        })
    }

    fn same_kind(&self, other: &Param) -> bool {
        matches!(
            (self, other),
            (Param::Bool(_), Param::Bool(_))
                | (
                    Param::Int(_) | Param::Float(_),
                    Param::Int(_) | Param::Float(_)
                )
                | (Param::Str(_), Param::Str(_))
                | (Param::List(_), Param::List(_))
        )
    }
}

/// Which output columns hold a principal's identifiers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PrincipalMap {
    #[serde(default)]
    pub oid: Option<String>,
    #[serde(default)]
    pub upn: Option<String>,
    #[serde(default)]
    pub appid: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

impl PrincipalMap {
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        [&self.oid, &self.upn, &self.appid, &self.kind]
            .into_iter()
            .flatten()
            .map(String::as_str)
    }
}

/// Entity mapping: which output columns name principals, IPs, vaults and objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entities {
    #[serde(default = "default_principals")]
    pub principals: Vec<PrincipalMap>,
    #[serde(default = "default_ips")]
    pub ips: Vec<String>,
    #[serde(default = "default_vaults")]
    pub vaults: Vec<String>,
    #[serde(default = "default_objects")]
    pub objects: Vec<String>,
}

fn default_principals() -> Vec<PrincipalMap> {
    vec![PrincipalMap {
        oid: Some("principal_oid".into()),
        upn: Some("principal_upn".into()),
        appid: Some("principal_appid".into()),
        kind: Some("principal_type".into()),
    }]
}
fn default_ips() -> Vec<String> {
    vec!["ips".into()]
}
fn default_vaults() -> Vec<String> {
    vec!["vaults".into()]
}
fn default_objects() -> Vec<String> {
    vec!["objects".into()]
}

impl Default for Entities {
    fn default() -> Self {
        Entities {
            principals: default_principals(),
            ips: default_ips(),
            vaults: default_vaults(),
            objects: default_objects(),
        }
    }
}

impl Entities {
    /// Every column the mapping refers to.
    pub fn columns(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.principals.iter().flat_map(|p| p.columns()).collect();
        v.extend(self.ips.iter().map(String::as_str));
        v.extend(self.vaults.iter().map(String::as_str));
        v.extend(self.objects.iter().map(String::as_str));
        v
    }
}

/// What a fixture expects the rule to produce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Exact number of alert occurrences.
    pub alerts: usize,
    /// Each entry must match at least one occurrence: column → value (a list column matches
    /// when it contains the value; numbers compare numerically).
    #[serde(default, rename = "match")]
    pub matches: Vec<BTreeMap<String, serde_json::Value>>,
    /// Expected severity of every occurrence, when given.
    #[serde(default)]
    pub severity: Option<Severity>,
}

/// A test case: events in Azure's record format, fed through the real ingest path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub name: String,
    /// Parameter overrides for this case.
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
    /// Fields merged into every event (an event's own fields win).
    #[serde(default)]
    pub defaults: serde_json::Map<String, serde_json::Value>,
    /// Records; `repeat: n` with `every: 30s` expands one entry into n records, and `{i}` in
    /// any string is replaced with the repetition index.
    #[serde(default)]
    pub events: Vec<serde_json::Map<String, serde_json::Value>>,
    /// A file of records (any format `kvwatch ingest` reads), relative to the rule file.
    #[serde(default)]
    pub input: Option<PathBuf>,
    pub expect: Expect,
}

/// The YAML document of one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    #[serde(default)]
    pub tactics: Vec<String>,
    #[serde(default)]
    pub techniques: Vec<String>,
    /// The least time between two evaluations in continuous detection (new data waits for
    /// the next due run; nothing is skipped). `0s`, the default, evaluates at every commit.
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// Judge only event time the store's watermark has passed (see `kvwatch_ingest::
    /// watermark`): for rules about what did *not* happen, which data still in flight would
    /// contradict. Windows at or after the watermark are left for a later pass.
    #[serde(default)]
    pub complete: bool,
    /// Bucket size: `window_start` values are multiples of it.
    pub window: Dur,
    /// How far after its `window_start` an occurrence can still gain events (sequences).
    #[serde(default)]
    pub lookback: Option<Dur>,
    /// How much data before the evaluated windows the SQL reads (baselines, previous state).
    #[serde(default)]
    pub history: Option<Dur>,
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
    #[serde(default)]
    pub entities: Entities,
    /// Output columns that identify "the same alert" (with the rule id and window).
    pub dedup: Vec<String>,
    /// Occurrences of the same dedup key within this period fold into one open alert.
    pub suppression: Dur,
    /// One sentence; `{column}` is replaced with that output column's value.
    pub summary: String,
    pub sql: String,
    #[serde(default)]
    pub tests: Vec<Fixture>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_interval() -> Dur {
    Dur(0)
}
fn yes() -> bool {
    true
}

/// A loaded rule: the document plus where it came from and its effective parameters.
#[derive(Debug, Clone)]
pub struct Rule {
    pub doc: RuleDoc,
    /// File the rule was read from (or its embedded name).
    pub file: String,
    /// Directory fixture `input` paths are relative to, when the rule came from disk.
    pub dir: Option<PathBuf>,
    /// 1-based line of the `sql:` key, for error messages.
    pub sql_line: usize,
    /// Parameters after configuration overrides.
    pub params: BTreeMap<String, Param>,
}

/// Columns every rule's SQL must return.
pub const REQUIRED_COLUMNS: &[&str] = &[
    "window_start",
    "first_seen",
    "last_seen",
    "event_count",
    "event_ids",
];

/// Values the engine supplies to every rule, beside the rule's own parameters.
pub const BUILTINS: &[&str] = &["window", "lookback", "history", "data_start", "watermark"];

/// The values of the builtins that depend on the store, as SQL literals.
#[derive(Debug, Clone)]
pub struct StoreValues {
    /// The store's first event (learning periods are measured from it).
    pub data_start: String,
    /// The event time before which the store's data is complete.
    pub watermark: String,
}

impl Rule {
    /// The rule as listed (CLI `rules list --format json`, API `GET /rules`).
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id(), "title": self.doc.title, "severity": self.doc.severity,
            "window": self.doc.window, "suppression": self.doc.suppression,
            "tactics": self.doc.tactics, "techniques": self.doc.techniques,
            "tests": self.doc.tests.len(), "enabled": self.doc.enabled, "file": self.file,
        })
    }

    /// The summary plus what an analyst needs to judge an alert: the description, the dedup
    /// key, lookback and history, and the effective parameters as SQL literals.
    pub fn detail(&self) -> serde_json::Value {
        let mut v = self.summary();
        let params: BTreeMap<&str, String> = self
            .params
            .iter()
            .map(|(k, p)| (k.as_str(), p.sql()))
            .collect();
        v["description"] = self.doc.description.trim().into();
        v["dedup"] = serde_json::json!(self.doc.dedup);
        v["lookback"] = String::from(self.lookback()).into();
        v["history"] = String::from(self.history()).into();
        v["params"] = serde_json::json!(params);
        v
    }

    pub fn id(&self) -> &str {
        &self.doc.id
    }
    /// What the alert store records about this rule.
    pub fn meta(&self) -> crate::alert::AlertMeta<'_> {
        crate::alert::AlertMeta {
            title: &self.doc.title,
            description: self.doc.description.trim(),
            tactics: &self.doc.tactics,
            techniques: &self.doc.techniques,
            suppression_ns: self.doc.suppression.nanos(),
        }
    }
    pub fn lookback(&self) -> Dur {
        self.doc.lookback.unwrap_or(self.doc.window)
    }
    pub fn history(&self) -> Dur {
        self.doc.history.unwrap_or(Dur(0))
    }

    /// Parses one rule file's text.
    pub fn parse(file: &str, text: &str, dir: Option<PathBuf>) -> Result<Rule, RuleError> {
        let doc: RuleDoc = serde_yaml::from_str(text).map_err(|e| RuleError::Invalid {
            file: file.to_owned(),
            line: e.location().map(|l| l.line()).unwrap_or(1),
            message: e.to_string(),
        })?;
        let sql_line = text
            .lines()
            .position(|l| l.starts_with("sql:"))
            .map(|i| i + 1)
            .unwrap_or(1);
        let rule = Rule {
            params: doc.params.clone(),
            doc,
            file: file.to_owned(),
            dir,
            sql_line,
        };
        rule.check_static()?;
        Ok(rule)
    }

    fn invalid(&self, line: usize, message: impl Into<String>) -> RuleError {
        RuleError::Invalid {
            file: self.file.clone(),
            line,
            message: message.into(),
        }
    }

    /// Checks what can be checked without planning: ids, windows, template references.
    fn check_static(&self) -> Result<(), RuleError> {
        let d = &self.doc;
        let ok_id = !d.id.is_empty()
            && d.id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok_id {
            return Err(self.invalid(
                1,
                format!("rule id {:?} must be lower-case kebab-case", d.id),
            ));
        }
        if d.window.secs() <= 0 {
            return Err(self.invalid(1, "window must be positive"));
        }
        if d.dedup.is_empty() {
            return Err(self.invalid(1, "dedup must name at least one output column"));
        }
        for name in template_names(&d.sql) {
            if !self.params.contains_key(&name) && !BUILTINS.contains(&name.as_str()) {
                return Err(self.invalid(
                    self.sql_line,
                    format!(
                        "{{{{{name}}}}} is neither a parameter of this rule nor a built-in ({})",
                        BUILTINS.join(", ")
                    ),
                ));
            }
        }
        for (i, t) in d.tests.iter().enumerate() {
            for p in t.params.keys() {
                if !self.params.contains_key(p) {
                    return Err(self.invalid(
                        1,
                        format!(
                            "test {} ({:?}) overrides unknown parameter {p}",
                            i + 1,
                            t.name
                        ),
                    ));
                }
            }
            if t.events.is_empty() && t.input.is_none() {
                return Err(
                    self.invalid(1, format!("test {:?} has neither events nor input", t.name))
                );
            }
        }
        Ok(())
    }

    /// Applies configuration overrides; a value must have the default's kind.
    pub fn set_params(&mut self, overrides: &BTreeMap<String, Param>) -> Result<(), RuleError> {
        for (k, v) in overrides {
            let Some(cur) = self.params.get(k) else {
                return Err(RuleError::UnknownParam {
                    rule: self.doc.id.clone(),
                    param: k.clone(),
                });
            };
            if !cur.same_kind(v) {
                return Err(self.invalid(
                    1,
                    format!("parameter {k}: configured value {v:?} is not of the same kind as the default {cur:?}"),
                ));
            }
            self.params.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    /// The rule's SQL with every `{{name}}` replaced.
    pub fn render(&self, store: &StoreValues) -> String {
        render_template(&self.doc.sql, |name| {
            Some(match name {
                "window" => self.doc.window.sql(),
                "lookback" => self.lookback().sql(),
                "history" => self.history().sql(),
                "data_start" => store.data_start.clone(),
                "watermark" => store.watermark.clone(),
                other => self.params.get(other)?.sql(),
            })
        })
    }
}

/// Names referenced as `{{name}}` in `text`.
pub fn template_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else { break };
        out.push(after[..j].trim().to_owned());
        rest = &after[j + 2..];
    }
    out
}

/// Replaces `{{name}}` with `value(name)`; unknown names are left as they are (and rejected
/// at load time by [`Rule::parse`]).
pub fn render_template(text: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let name = after[..j].trim();
        match value(name) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[i..i + 2 + j + 2]),
        }
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    out
}

/// A deployment's settings for one rule (`[rules.<id>]` of the config file).
#[derive(Debug, Clone, Default)]
pub struct RuleOverride {
    /// Turns the rule on or off.
    pub enabled: Option<bool>,
    /// How often continuous detection evaluates it (a duration: `30s`, `5m`).
    pub interval: Option<String>,
    /// Parameter values, each of the kind of the rule's default.
    pub params: BTreeMap<String, toml::Value>,
}

/// Applies a deployment's settings to the pack: every named rule must exist, every parameter
/// must be the rule's and of its default's kind. With `only_enabled`, disabled rules are
/// dropped.
pub fn apply_overrides(
    rules: &mut Vec<Rule>,
    overrides: &BTreeMap<String, RuleOverride>,
    only_enabled: bool,
) -> Result<(), RuleError> {
    for id in overrides.keys() {
        if !rules.iter().any(|r| r.id() == id) {
            return Err(RuleError::UnknownConfigured(id.clone()));
        }
    }
    for r in rules.iter_mut() {
        let Some(o) = overrides.get(r.id()) else {
            continue;
        };
        let mut params = BTreeMap::new();
        for (k, v) in &o.params {
            let p = Param::from_toml(v).ok_or_else(|| RuleError::BadConfigValue {
                rule: r.id().to_owned(),
                param: k.clone(),
            })?;
            params.insert(k.clone(), p);
        }
        r.set_params(&params)?;
        if let Some(i) = &o.interval {
            r.doc.interval = Dur::parse(i).ok_or_else(|| RuleError::BadConfigValue {
                rule: r.id().to_owned(),
                param: "interval".into(),
            })?;
        }
        if let Some(e) = o.enabled {
            r.doc.enabled = e;
        }
    }
    if only_enabled {
        rules.retain(|r| r.doc.enabled);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Dur::parse("10m"), Some(Dur(600)));
        assert_eq!(Dur::parse("14d"), Some(Dur(14 * 86_400)));
        assert_eq!(Dur::parse("1x"), None);
        assert_eq!(Dur::parse(""), None);
        assert_eq!(String::from(Dur(3600)), "1h");
    }

    #[test]
    fn params_render_as_sql() {
        assert_eq!(Param::Str("o'brien".into()).sql(), "'o''brien'");
        assert_eq!(Param::Str("10m".into()).sql(), "INTERVAL '600 seconds'");
        assert_eq!(Param::List(vec!["a".into(), "b".into()]).sql(), "'a', 'b'");
        assert_eq!(Param::List(vec![]).sql(), EMPTY_LIST_SENTINEL);
        assert_eq!(Param::Int(5).sql(), "5");
    }

    #[test]
    fn templates() {
        assert_eq!(template_names("a {{ x }} b {{y}}"), vec!["x", "y"]);
        let r = render_template("a {{x}} {{z}}", |n| (n == "x").then(|| "1".into()));
        assert_eq!(r, "a 1 {{z}}");
    }

    const MINIMAL: &str = "id: t-1\ntitle: T\ndescription: d\nseverity: low\nwindow: 1h\ndedup: [vault]\nsuppression: 1h\nsummary: s\nsql: SELECT {{nope}}\n";

    #[test]
    fn undefined_parameter_names_file_and_line() {
        let e = Rule::parse("r.yaml", MINIMAL, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.yaml:9:"), "{e}");
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn unknown_key_is_rejected_with_line() {
        let text = MINIMAL.replace("SELECT {{nope}}", "SELECT 1") + "colour: red\n";
        let e = Rule::parse("r.yaml", &text, None).unwrap_err().to_string();
        assert!(e.contains("r.yaml:10"), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn overrides_must_keep_the_kind() {
        let text = MINIMAL.replace("SELECT {{nope}}", "SELECT {{n}}") + "params:\n  n: 5\n";
        let mut r = Rule::parse("r.yaml", &text, None).unwrap();
        let mut o = BTreeMap::new();
        o.insert("n".to_owned(), Param::Int(9));
        r.set_params(&o).unwrap();
        let store = StoreValues {
            data_start: "x".into(),
            watermark: "y".into(),
        };
        assert!(r.render(&store).contains("SELECT 9"));
        o.insert("n".to_owned(), Param::Str("x".into()));
        assert!(r.set_params(&o).is_err());
        let mut bad = BTreeMap::new();
        bad.insert("m".to_owned(), Param::Int(1));
        assert!(r.set_params(&bad).is_err());
    }
}
