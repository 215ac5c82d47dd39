//! A report as CSV: one block per table, the summary numbers first.

use super::Report;
use serde_json::Value;

/// The report as CSV: one block per table, each headed by a `# section.table` line, summary
/// numbers first. Machines get the same numbers as the HTML.
pub fn to_csv(r: &Report) -> String {
    let cell = |v: &Value| -> String {
        let s = match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    };
    let mut out = format!(
        "# {} from {} to {}\n# summary\nsection,metric,label,value\n",
        r.kind.as_str(),
        r.from,
        r.to
    );
    let metrics = r.summary.iter().map(|m| ("report", m)).chain(
        r.sections
            .iter()
            .flat_map(|s| s.summary.iter().map(move |m| (s.id.as_str(), m))),
    );
    for (sec, m) in metrics {
        out += &format!(
            "{},{},{},{}\n",
            sec,
            m.name,
            cell(&Value::String(m.label.clone())),
            cell(&m.value)
        );
    }
    let tables = r.overview.iter().map(|t| ("overview", t)).chain(
        r.sections
            .iter()
            .flat_map(|s| s.tables.iter().map(move |t| (s.id.as_str(), t))),
    );
    for (sec, t) in tables {
        out += &format!("\n# {sec}.{}\n{}\n", t.name, t.columns.join(","));
        for row in &t.rows {
            let cells: Vec<String> = t
                .columns
                .iter()
                .map(|c| cell(row.get(c).unwrap_or(&Value::Null)))
                .collect();
            out += &cells.join(",");
            out.push('\n');
        }
    }
    out
}
