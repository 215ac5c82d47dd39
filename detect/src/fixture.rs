//! Rule tests. Each fixture's records are written to a JSON Lines file and ingested into a fresh
//! store with the real ingest path, then the rule runs over the whole store and its occurrences
//! are compared with the expectation. A fixture record the parser quarantines fails the test:
//! a fixture that does not look like Azure's output proves nothing.

use crate::alert::Occurrence;
use crate::engine::Engine;
use crate::rule::{Dur, Fixture, Rule};
use kvwatch_ingest::DataDir;
use kvwatch_ingest::time::{format_ns, parse_timestamp_ns};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::Path;

/// The outcome of one fixture.
#[derive(Debug, Clone, Serialize)]
pub struct FixtureResult {
    pub rule_id: String,
    pub name: String,
    pub passed: bool,
    /// Why it failed.
    pub message: Option<String>,
    pub occurrences: usize,
}

fn substitute(v: &mut Value, i: u64) {
    match v {
        Value::String(s) if s.contains("{i}") => *s = s.replace("{i}", &i.to_string()),
        Value::Array(a) => a.iter_mut().for_each(|x| substitute(x, i)),
        Value::Object(o) => o.values_mut().for_each(|x| substitute(x, i)),
        _ => {}
    }
}

/// Expands `repeat`/`every`/`{i}` and merges `defaults` into JSON Lines text.
pub fn expand_events(f: &Fixture) -> Result<String, String> {
    let mut out = String::new();
    for (n, e) in f.events.iter().enumerate() {
        let mut base: Map<String, Value> = f.defaults.clone();
        for (k, v) in e {
            base.insert(k.clone(), v.clone());
        }
        let repeat = match base.remove("repeat") {
            None => 1,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| format!("event {}: repeat must be a count", n + 1))?,
        };
        let every = match base.remove("every") {
            None => Dur(1),
            Some(Value::String(s)) => {
                Dur::parse(&s).ok_or_else(|| format!("event {}: bad every {s:?}", n + 1))?
            }
            Some(other) => return Err(format!("event {}: bad every {other}", n + 1)),
        };
        let t0 = base
            .get("time")
            .and_then(Value::as_str)
            .and_then(parse_timestamp_ns);
        for i in 0..repeat {
            let mut rec = Value::Object(base.clone());
            substitute(&mut rec, i);
            if let (Some(t0), Value::Object(o)) = (t0, &mut rec) {
                o.insert(
                    "time".into(),
                    Value::String(format_ns(t0 + i as i64 * every.nanos())),
                );
            }
            out.push_str(&rec.to_string());
            out.push('\n');
        }
    }
    Ok(out)
}

fn value_matches(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Array(items), e) if !e.is_array() => items.iter().any(|x| value_matches(x, e)),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::String(a), Value::String(b)) => a == b,
        (Value::String(a), Value::Number(b)) => a.parse::<f64>().ok() == b.as_f64(),
        (a, b) => a == b,
    }
}

fn occurrence_matches(o: &Occurrence, want: &std::collections::BTreeMap<String, Value>) -> bool {
    want.iter().all(|(k, v)| match k.as_str() {
        "severity" => v.as_str() == Some(o.severity.as_str()),
        "summary_contains" => v.as_str().is_some_and(|s| o.summary.contains(s)),
        "principal" => o.principals.iter().any(|p| {
            [&p.oid, &p.upn, &p.appid]
                .into_iter()
                .flatten()
                .any(|x| Some(x.as_str()) == v.as_str())
        }),
        "vault" => o.vaults.iter().any(|x| Some(x.as_str()) == v.as_str()),
        "ip" => o.ips.iter().any(|x| Some(x.as_str()) == v.as_str()),
        "object" => o.objects.iter().any(|x| Some(x.as_str()) == v.as_str()),
        col => o.fields.get(col).is_some_and(|a| value_matches(a, v)),
    })
}

async fn run_one(rule: &Rule, f: &Fixture, work: &Path) -> Result<usize, String> {
    let mut rule = rule.clone();
    rule.set_params(&f.params).map_err(|e| e.to_string())?;
    let input = match &f.input {
        Some(p) => {
            let dir = rule
                .dir
                .as_ref()
                .ok_or("an embedded rule cannot refer to fixture files")?;
            dir.join(p)
        }
        None => {
            let p = work.join("fixture.jsonl");
            std::fs::write(&p, expand_events(f)?).map_err(|e| e.to_string())?;
            p
        }
    };
    let store = work.join("store");
    let report = kvwatch_ingest::files::ingest_paths(
        &kvwatch_ingest::data::DataDir::new(&store),
        &[input.display().to_string()],
    )
    .map_err(|e| format!("ingesting the fixture: {e}"))?;
    if !report.failed.is_empty() {
        return Err(format!("fixture input unreadable: {:?}", report.failed));
    }
    if report.stored.quarantine > 0 {
        let ctx = kvwatch_ingest::data::DataDir::new(&store)
            .session()
            .await
            .map_err(|e| e.to_string())?;
        let mut reasons = String::new();
        if let Ok(df) = ctx.sql("SELECT DISTINCT reason FROM quarantine").await
            && let Ok(b) = df.collect().await
            && let Ok(t) = datafusion::arrow::util::pretty::pretty_format_batches(&b)
        {
            reasons = t.to_string();
        }
        return Err(format!(
            "{} fixture record(s) were quarantined:\n{reasons}",
            report.stored.quarantine
        ));
    }
    let engine = Engine::open(&DataDir::new(&store)).map_err(|e| e.to_string())?;
    engine.check(&rule).await.map_err(|e| e.to_string())?;
    let Some((a, b)) = engine.data_range() else {
        return Err("the fixture stored no events".into());
    };
    let ev = engine
        .evaluate(&rule, a, b + 1)
        .await
        .map_err(|e| e.to_string())?;
    let occs = ev.occurrences;
    let show = || {
        occs.iter()
            .map(|o| format!("  - [{}] {}", o.severity, o.summary))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if occs.len() != f.expect.alerts {
        return Err(format!(
            "expected {} alert(s), got {}:\n{}",
            f.expect.alerts,
            occs.len(),
            show()
        ));
    }
    for want in &f.expect.matches {
        if !occs.iter().any(|o| occurrence_matches(o, want)) {
            return Err(format!(
                "no alert matches {}; got:\n{}",
                serde_json::to_string(want).unwrap_or_default(),
                occs.iter()
                    .map(|o| serde_json::to_string(&o.fields).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    if let Some(s) = f.expect.severity
        && let Some(o) = occs.iter().find(|o| o.severity != s)
    {
        return Err(format!(
            "expected severity {s}, got {} for: {}",
            o.severity, o.summary
        ));
    }
    Ok(occs.len())
}

/// Runs every fixture of `rule`.
pub async fn run_fixtures(rule: &Rule) -> Vec<FixtureResult> {
    let mut out = Vec::new();
    for f in &rule.doc.tests {
        let result = match tempfile::tempdir() {
            Ok(dir) => run_one(rule, f, dir.path()).await,
            Err(e) => Err(format!("temporary directory: {e}")),
        };
        out.push(FixtureResult {
            rule_id: rule.id().to_owned(),
            name: f.name.clone(),
            passed: result.is_ok(),
            occurrences: *result.as_ref().unwrap_or(&0),
            message: result.err(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_every_and_index() {
        let f: Fixture = serde_yaml::from_str(
            r#"
name: t
defaults: {operationName: SecretGet, resourceId: /X}
events:
  - {time: "2026-03-02T10:00:00Z", repeat: 3, every: 10s, id: "https://v.vault.azure.net/secrets/s{i}"}
expect: {alerts: 0}
"#,
        )
        .unwrap();
        let text = expand_events(&f).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["time"], "2026-03-02T10:00:20.0000000Z");
        assert_eq!(lines[1]["id"], "https://v.vault.azure.net/secrets/s1");
        assert_eq!(lines[0]["operationName"], "SecretGet");
    }
}
