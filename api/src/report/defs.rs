//! Reports as data: what each section asks is written in `sections/*.yaml` (compiled into the
//! binary), not in code. A definition is SQL with `{{name}}` templates, labels, and rendering
//! hints (which table becomes which chart); [`super::run`] fills the templates for a period and
//! runs the statements, and every number keeps the statement that produced it.
//!
//! Templates resolve, innermost first: a table's `vars`, the section's `fragments`, the
//! report's `fragments` (`report.yaml`), then the run's parameters ([`Params`]).
//! `{{table:NAME}}` is the rendered statement of another table of the same section. A name
//! that resolves nowhere is an error, so a definition cannot ship half-filled (a unit test
//! renders every statement).

use super::{Kind, ReportError, ReportOptions};
use kvwatch_ingest::query::sql_literal;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// `report.yaml`: the headline, the overview, the shared pre-aggregations and fragments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportDef {
    pub title: String,
    #[serde(default)]
    pub fragments: BTreeMap<String, String>,
    pub shared: Vec<SharedDef>,
    pub metrics: Vec<MetricDef>,
    pub tables: Vec<TableDef>,
}

/// A pre-aggregation several sections read, computed once per report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedDef {
    pub name: String,
    pub sql: String,
}

/// One section of a report (`sections/<id>.yaml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectionDef {
    pub id: String,
    pub title: String,
    pub description: String,
    #[serde(default)]
    pub fragments: BTreeMap<String, String>,
    #[serde(default)]
    pub metrics: Vec<MetricDef>,
    #[serde(default)]
    pub tables: Vec<TableDef>,
}

/// A headline number: a statement returning one row with a `value` column.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDef {
    pub name: String,
    pub label: String,
    pub sql: String,
    /// Used instead of `sql` when no section of the report needs the pre-aggregations `sql`
    /// reads (building one for a single number costs more than counting directly).
    pub fallback_sql: Option<String>,
}

/// A result table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDef {
    pub name: String,
    pub title: String,
    pub sql: String,
    /// Template values for this table only (one fragment, several tables).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// How the HTML rendering draws the table, besides listing it.
    pub chart: Option<Chart>,
}

/// A chart drawn from a table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Chart {
    /// Bars per `category`, stacked by `series`, of `value`.
    StackedBars {
        title: String,
        category: String,
        series: String,
        value: String,
        /// Series beyond this many are summed into "other".
        max_series: usize,
        /// Series in this order (others after).
        #[serde(default)]
        order: Vec<String>,
        /// Colours of the series, in order [default: the report palette].
        #[serde(default)]
        colours: Vec<String>,
    },
    /// The top rows as horizontal bars of `value`, labelled by `label`.
    Ranking {
        title: String,
        label: String,
        value: String,
        top: usize,
    },
}

/// All definitions.
pub struct Defs {
    pub report: ReportDef,
    sections: Vec<SectionDef>,
}

const REPORT: &str = include_str!("sections/report.yaml");

/// The sections, in the order a compliance report shows them.
const SECTIONS: [(Kind, &str); 7] = [
    (Kind::Access, include_str!("sections/access.yaml")),
    (Kind::Permissions, include_str!("sections/permissions.yaml")),
    (
        Kind::SensitiveOps,
        include_str!("sections/sensitive-ops.yaml"),
    ),
    (
        Kind::FailedAccess,
        include_str!("sections/failed-access.yaml"),
    ),
    (
        Kind::BlastRadius,
        include_str!("sections/blast-radius.yaml"),
    ),
    (Kind::Hygiene, include_str!("sections/hygiene.yaml")),
    (Kind::Alerts, include_str!("sections/alerts.yaml")),
];

fn load() -> Result<Defs, String> {
    let report: ReportDef =
        serde_yaml::from_str(REPORT).map_err(|e| format!("sections/report.yaml: {e}"))?;
    let mut sections = Vec::new();
    for (kind, text) in SECTIONS {
        let s: SectionDef = serde_yaml::from_str(text)
            .map_err(|e| format!("sections/{}.yaml: {e}", kind.as_str()))?;
        if s.id != kind.as_str() {
            return Err(format!(
                "sections/{}.yaml: id {:?} does not match its file",
                kind.as_str(),
                s.id
            ));
        }
        sections.push(s);
    }
    Ok(Defs { report, sections })
}

/// The definitions compiled into this binary.
pub fn defs() -> Result<&'static Defs, ReportError> {
    static DEFS: OnceLock<Result<Defs, String>> = OnceLock::new();
    DEFS.get_or_init(load)
        .as_ref()
        .map_err(|e| ReportError::Invalid(format!("report definitions: {e}")))
}

impl Defs {
    pub fn section(&self, kind: Kind) -> Option<&SectionDef> {
        self.sections.iter().find(|s| s.id == kind.as_str())
    }

    /// The title of a report of `kind`.
    pub fn title(&self, kind: Kind) -> &str {
        match self.section(kind) {
            Some(s) if kind != Kind::Compliance => &s.title,
            _ => &self.report.title,
        }
    }
}

/// The run's template parameters, from its options.
pub struct Params<'a> {
    o: &'a ReportOptions,
}

impl<'a> Params<'a> {
    pub fn new(o: &'a ReportOptions) -> Self {
        Self { o }
    }

    fn vault_filter(&self, col: &str) -> String {
        if self.o.vaults.is_empty() {
            return String::new();
        }
        let list: Vec<String> = self.o.vaults.iter().map(|v| sql_literal(v)).collect();
        format!(" AND {col} IN ({})", list.join(", "))
    }

    fn get(&self, name: &str) -> Option<String> {
        let o = self.o;
        Some(match name {
            // `time` inside the period, and the vault filter.
            "within" => format!(
                "time >= to_timestamp_nanos({}) AND time < to_timestamp_nanos({}){}",
                o.from,
                o.to,
                self.vault_filter("vault")
            ),
            // Up to the period's end (for "last known" state and later removals).
            "until_end" => format!(
                "time < to_timestamp_nanos({}){}",
                o.to,
                self.vault_filter("vault")
            ),
            // The environment of a vault from the configured patterns.
            "env" => format!(
                "CASE WHEN regexp_like(vault, {}, 'i') THEN 'production' WHEN regexp_like(vault, {}, 'i') THEN 'non-production' ELSE 'unclassified' END",
                sql_literal(&o.prod_pattern),
                sql_literal(&o.nonprod_pattern)
            ),
            // Alerts last seen in the period, naming one of the vaults.
            "alerts_within" => {
                let mut s = format!(
                    "last_seen >= to_timestamp_nanos({}) AND last_seen < to_timestamp_nanos({})",
                    o.from, o.to
                );
                if !o.vaults.is_empty() {
                    let list: Vec<String> = o.vaults.iter().map(|v| sql_literal(v)).collect();
                    s += &format!(
                        " AND array_has_any(vaults, make_array({}))",
                        list.join(", ")
                    );
                }
                s
            }
            "from" => o.from.to_string(),
            "to" => o.to.to_string(),
            "top_n" => o.top_n.to_string(),
            "stale_cut" => (o.to - i64::from(o.stale_days) * 86_400_000_000_000).to_string(),
            "cache_threshold" => o.cache_threshold.to_string(),
            "busy_events_per_hour" => o.busy_events_per_hour.to_string(),
            "gap_hours" => o.gap_hours.to_string(),
            _ => return None,
        })
    }
}

/// Where a template name is looked up, innermost first.
#[derive(Clone, Copy)]
pub struct Scope<'s> {
    pub vars: Option<&'s BTreeMap<String, String>>,
    pub section: Option<&'s SectionDef>,
    pub report: &'s ReportDef,
    pub params: &'s Params<'s>,
}

/// Fragments may name fragments; deeper than this is a definition that names itself.
const MAX_NESTING: usize = 8;

impl Scope<'_> {
    /// `text` with every template filled.
    pub fn render(&self, text: &str) -> Result<String, ReportError> {
        self.render_at(text, 0)
    }

    fn render_at(&self, text: &str, depth: usize) -> Result<String, ReportError> {
        if depth > MAX_NESTING {
            return Err(ReportError::Invalid(format!(
                "report definitions: templates nested deeper than {MAX_NESTING} (a fragment names itself?)"
            )));
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find("{{") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let j = after.find("}}").ok_or_else(|| {
                ReportError::Invalid(format!(
                    "report definitions: unclosed template in {text:.60}"
                ))
            })?;
            let name = after[..j].trim();
            out.push_str(&self.value(name, depth)?);
            rest = &after[j + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn value(&self, name: &str, depth: usize) -> Result<String, ReportError> {
        if let Some(table) = name.strip_prefix("table:") {
            let t = self
                .section
                .and_then(|s| s.tables.iter().find(|t| t.name == table))
                .ok_or_else(|| {
                    ReportError::Invalid(format!("report definitions: no table {table:?}"))
                })?;
            let inner = Scope {
                vars: Some(&t.vars),
                ..*self
            };
            return inner.render_at(&t.sql, depth + 1);
        }
        let fragment = self
            .vars
            .and_then(|v| v.get(name))
            .or_else(|| self.section.and_then(|s| s.fragments.get(name)))
            .or_else(|| self.report.fragments.get(name));
        match fragment {
            Some(f) => self.render_at(f, depth + 1),
            None => self.params.get(name).ok_or_else(|| {
                ReportError::Invalid(format!(
                    "report definitions: unknown template {{{{{name}}}}}"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_definition_loads_and_every_statement_renders() {
        let d = defs().unwrap();
        let mut o = ReportOptions::new(Kind::Compliance, 1, 2);
        o.vaults = vec!["kv-o'brien".into()];
        let params = Params::new(&o);
        let top = Scope {
            vars: None,
            section: None,
            report: &d.report,
            params: &params,
        };
        let mut statements = Vec::new();
        for s in &d.report.shared {
            statements.push(top.render(&s.sql).unwrap());
        }
        for m in &d.report.metrics {
            statements.push(top.render(&m.sql).unwrap());
        }
        for kind in Kind::ALL.into_iter().skip(1) {
            let s = d.section(kind).unwrap_or_else(|| panic!("{kind:?}"));
            for m in &s.metrics {
                let sc = Scope {
                    section: Some(s),
                    ..top
                };
                statements.push(sc.render(&m.sql).unwrap());
            }
            for t in &s.tables {
                let sc = Scope {
                    vars: Some(&t.vars),
                    section: Some(s),
                    ..top
                };
                statements.push(sc.render(&t.sql).unwrap());
            }
        }
        for st in &statements {
            assert!(!st.contains("{{"), "{st}");
            // The vault filter quotes the name.
            if st.contains("kv-o") {
                assert!(st.contains("'kv-o''brien'"), "{st}");
            }
        }
        assert!(statements.len() > 40, "{}", statements.len());
        assert_eq!(d.title(Kind::Access), "Secret access register");
        assert_eq!(d.title(Kind::Compliance), "Key Vault compliance report");
    }

    #[test]
    fn unknown_and_self_naming_templates_are_errors() {
        let d = defs().unwrap();
        let o = ReportOptions::new(Kind::Access, 1, 2);
        let params = Params::new(&o);
        let mut vars = BTreeMap::new();
        vars.insert("loop".to_owned(), "x {{loop}}".to_owned());
        let sc = Scope {
            vars: Some(&vars),
            section: None,
            report: &d.report,
            params: &params,
        };
        assert!(sc.render("{{nope}}").is_err());
        assert!(sc.render("{{loop}}").is_err());
        assert!(sc.render("{{unclosed").is_err());
        assert_eq!(sc.render("{{top_n}}").unwrap(), "10");
    }
}
