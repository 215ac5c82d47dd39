//! Reading alerts: filtered, sorted, keyset-paged listings (entity filters driven from the
//! `alert_terms` index, text from the trigram full-text index), single alerts, the change feed
//! that export and the sinks follow, and counts for `/stats`.

use super::db::{Dialect, Val, vals};
use super::{ALERT_COLUMNS, AlertStore, Result, alert_columns, alerts_of, changes_of, rank};
use crate::alert::{Alert, Severity, Status};

/// Counts for `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AlertCounts {
    pub by_severity: std::collections::BTreeMap<String, i64>,
    pub by_status: std::collections::BTreeMap<String, i64>,
    pub by_rule: std::collections::BTreeMap<String, i64>,
    pub total: i64,
}

/// Filters for listing alerts.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Alerts whose `last_seen` is at or after this time (ns).
    pub since: Option<i64>,
    pub min_severity: Option<Severity>,
    pub rule: Option<String>,
    pub status: Option<Status>,
    pub limit: Option<usize>,
    /// Keyset cursor: only alerts after this `(sort value, id)` in the listing order, so
    /// pages stay stable while new alerts arrive.
    pub after: Option<(i64, String)>,
    /// Alerts whose `last_seen` is before this time (ns).
    pub until: Option<i64>,
    /// Alerts naming this vault (case-insensitive).
    pub vault: Option<String>,
    /// Alerts naming this principal by UPN, object ID or app ID (case-insensitive).
    pub principal: Option<String>,
    /// Alerts naming this caller IP.
    pub ip: Option<String>,
    /// Substring of title, summary, description or dedup key (case-insensitive).
    pub text: Option<String>,
    pub assignee: Option<String>,
    /// Listing order; the default is newest `last_seen` first.
    pub sort: AlertSort,
}

/// The orders alerts can be listed in. Every order ends with the alert ID so that keyset
/// pagination is total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AlertSort {
    #[default]
    LastSeenDesc,
    LastSeenAsc,
    CreatedDesc,
    CreatedAsc,
    SeverityDesc,
    SeverityAsc,
    EventsDesc,
    EventsAsc,
}

impl AlertSort {
    pub const ALL: [(&'static str, AlertSort); 8] = [
        ("-last_seen", AlertSort::LastSeenDesc),
        ("last_seen", AlertSort::LastSeenAsc),
        ("-created_at", AlertSort::CreatedDesc),
        ("created_at", AlertSort::CreatedAsc),
        ("-severity", AlertSort::SeverityDesc),
        ("severity", AlertSort::SeverityAsc),
        ("-event_count", AlertSort::EventsDesc),
        ("event_count", AlertSort::EventsAsc),
    ];
    pub fn parse(s: &str) -> Option<AlertSort> {
        Self::ALL.iter().find(|(n, _)| *n == s.trim()).map(|x| x.1)
    }
    /// Column and direction.
    fn column(self) -> (&'static str, bool) {
        match self {
            AlertSort::LastSeenDesc => ("last_seen", true),
            AlertSort::LastSeenAsc => ("last_seen", false),
            AlertSort::CreatedDesc => ("created_at", true),
            AlertSort::CreatedAsc => ("created_at", false),
            AlertSort::SeverityDesc => ("severity_rank", true),
            AlertSort::SeverityAsc => ("severity_rank", false),
            AlertSort::EventsDesc => ("event_count", true),
            AlertSort::EventsAsc => ("event_count", false),
        }
    }
    /// The value of the sort column for `a` (the keyset cursor's first half).
    pub fn key(self, a: &Alert) -> i64 {
        match self {
            AlertSort::LastSeenDesc | AlertSort::LastSeenAsc => a.last_seen,
            AlertSort::CreatedDesc | AlertSort::CreatedAsc => a.created_at,
            AlertSort::SeverityDesc | AlertSort::SeverityAsc => rank(a.severity),
            AlertSort::EventsDesc | AlertSort::EventsAsc => a.event_count,
        }
    }
}

/// Text searches with at most this many matches are driven from the full-text index.
const FTS_DRIVE_MAX: i64 = 5000;

/// The text PostgreSQL's trigram index covers (the columns SQLite's FTS5 table holds).
const PG_TEXT: &str = "(title || ' ' || summary || ' ' || description || ' ' || dedup_key)";

/// A case-insensitive substring pattern for `ILIKE`, its wildcards taken literally.
fn ilike_pattern(text: &str) -> String {
    let mut p = String::from("%");
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// The conditions both dialects state alike (time, severity, rule, status, assignee), each
/// ` AND …`, binding values through `bind`; `status` is the status column as written.
fn plain_filters(f: &AlertFilter, status: &str, bind: &mut dyn FnMut(Val) -> String) -> String {
    let mut sql = String::new();
    if let Some(s) = f.since {
        sql += &format!(" AND last_seen >= {}", bind(s.into()));
    }
    if let Some(s) = f.until {
        sql += &format!(" AND last_seen < {}", bind(s.into()));
    }
    if let Some(s) = f.min_severity {
        sql += &format!(" AND severity_rank >= {}", bind(rank(s).into()));
    }
    if let Some(r) = &f.rule {
        sql += &format!(" AND rule_id = {}", bind(r.into()));
    }
    if let Some(s) = f.status {
        sql += &format!(" AND {status} = {}", bind(s.as_str().into()));
    }
    if let Some(a) = &f.assignee {
        sql += &format!(" AND assignee = {}", bind(a.into()));
    }
    sql
}

impl AlertStore {
    /// Lists alerts in `f.sort` order (most recent `last_seen` first by default).
    pub fn list(&self, f: &AlertFilter) -> Result<Vec<Alert>> {
        if self.dialect() == Dialect::Postgres {
            return self.list_pg(f);
        }
        let mut args: Vec<Val> = Vec::new();
        // An entity filter drives the query from its indexed terms (a few thousand rows to
        // sort at most) instead of walking every alert in time order to find matches.
        let terms: Vec<String> = [
            ("vault:", f.vault.as_deref().map(str::to_lowercase)),
            ("ip:", f.ip.clone()),
            ("principal:", f.principal.as_deref().map(str::to_lowercase)),
        ]
        .into_iter()
        .filter_map(|(prefix, v)| v.map(|v| format!("{prefix}{v}")))
        .collect();
        // Narrowed by a term or a rare text, only row IDs and sort keys go through the sort;
        // the page's rows are fetched afterwards. Sorting whole rows of a few thousand matches
        // cost 5x more.
        // Trigram FTS: substring match, case-insensitive; the text is one quoted phrase.
        let phrase = f
            .text
            .as_ref()
            .map(|t| format!("\"{}\"", t.replace('"', "\"\"")));
        // A rare text drives the query from its FTS matches; a common one (over
        // FTS_DRIVE_MAX matches) is checked while walking the sort index instead, which
        // finds a page of them sooner than sorting them all.
        // The matches are read once (a trigram query over common trigrams is the expensive
        // part) and the row IDs, integers from the store, are written into the statement.
        let text_rows: Option<Vec<i64>> = match (&phrase, terms.is_empty()) {
            (Some(p), true) => {
                let rows = self
                    .db
                    .with(|db| {
                        db.query(
                            "SELECT rowid FROM alerts_fts WHERE alerts_fts MATCH ?1 LIMIT ?2",
                            vals![p, FTS_DRIVE_MAX + 1],
                        )
                    })?
                    .iter()
                    .map(|r| r.get::<i64>(0))
                    .collect::<Result<Vec<i64>>>()?;
                (rows.len() as i64 <= FTS_DRIVE_MAX).then_some(rows)
            }
            _ => None,
        };
        let by_text = text_rows.is_some();
        let narrowed = !terms.is_empty() || by_text;
        let mut sql = if let Some(rows) = &text_rows {
            let list: Vec<String> = rows.iter().map(i64::to_string).collect();
            format!(
                "SELECT alerts.rowid FROM alerts WHERE alerts.rowid IN ({})",
                list.join(",")
            )
        } else if narrowed {
            args.push(terms[0].clone().into());
            String::from(
                "SELECT alerts.rowid FROM alert_terms AS t CROSS JOIN alerts ON alerts.id = t.alert_id WHERE t.term = ?1",
            )
        } else {
            format!("SELECT {} FROM alerts WHERE 1=1", alert_columns("alerts"))
        };
        // Binds a value and returns its numbered placeholder, so a value can be used twice.
        let mut bind = |v: Val| {
            args.push(v);
            format!("?{}", args.len())
        };
        // With a rule filter, the rule's index is the selective one; `+` keeps SQLite from
        // walking the status index (most alerts share a status).
        let status = if f.rule.is_some() {
            "+status"
        } else {
            "status"
        };
        sql += &plain_filters(f, status, &mut bind);
        for term in terms.iter().skip(1) {
            let p = bind(term.clone().into());
            sql += &format!(" AND id IN (SELECT alert_id FROM alert_terms WHERE term = {p})");
        }
        if let (Some(t), false) = (phrase, by_text) {
            let p = bind(t.into());
            sql += &format!(
                " AND alerts.rowid IN (SELECT rowid FROM alerts_fts WHERE alerts_fts MATCH {p})"
            );
        }
        let (column, desc) = f.sort.column();
        if let Some((v, id)) = &f.after {
            let (pv, pid) = (bind((*v).into()), bind(id.clone().into()));
            let cmp = if desc { "<" } else { ">" };
            sql += &format!(" AND ({column}, id) {cmp} ({pv}, {pid})");
        }
        let dir = if desc { "DESC" } else { "ASC" };
        let order = format!(" ORDER BY {column} {dir}, id {dir}");
        sql += &order;
        if let Some(l) = f.limit {
            sql += &format!(" LIMIT {l}");
        }
        if narrowed {
            sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE rowid IN ({sql}){order}");
        }
        alerts_of(self.db.with(|db| db.query(&sql, &args))?)
    }

    /// [`list`](Self::list) on PostgreSQL: every filter is a condition of one query, and the
    /// planner chooses between walking the sort index and collecting an entity's or a
    /// text's matches (term index, trigram index) first.
    fn list_pg(&self, f: &AlertFilter) -> Result<Vec<Alert>> {
        let mut args: Vec<Val> = Vec::new();
        let mut bind = |v: Val| {
            args.push(v);
            format!("?{}", args.len())
        };
        let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE true");
        sql += &plain_filters(f, "status", &mut bind);
        for (prefix, v) in [
            ("vault:", f.vault.as_deref().map(str::to_lowercase)),
            ("ip:", f.ip.clone()),
            ("principal:", f.principal.as_deref().map(str::to_lowercase)),
        ] {
            if let Some(v) = v {
                let p = bind(format!("{prefix}{v}").into());
                sql += &format!(" AND id IN (SELECT alert_id FROM alert_terms WHERE term = {p})");
            }
        }
        if let Some(t) = &f.text {
            sql += &format!(" AND {PG_TEXT} ILIKE {}", bind(ilike_pattern(t).into()));
        }
        let (column, desc) = f.sort.column();
        if let Some((v, id)) = &f.after {
            let (pv, pid) = (bind((*v).into()), bind(id.into()));
            let cmp = if desc { "<" } else { ">" };
            sql += &format!(" AND ({column}, id) {cmp} ({pv}, {pid})");
        }
        let dir = if desc { "DESC" } else { "ASC" };
        sql += &format!(" ORDER BY {column} {dir}, id {dir}");
        if let Some(l) = f.limit {
            sql += &format!(" LIMIT {l}");
        }
        alerts_of(self.db.with(|db| db.query(&sql, &args))?)
    }

    /// Alerts created or changed after change number `after`, in change order, with their
    /// change numbers: the pull-export feed. An alert changed twice appears once, at its
    /// latest change.
    pub fn changes(&self, after: i64, limit: usize) -> Result<Vec<(i64, Alert)>> {
        changes_of(self.db.with(|db| {
            db.query(
                &format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts WHERE change_seq > ?1 ORDER BY change_seq LIMIT ?2"
                ),
                vals![after, limit],
            )
        })?)
    }

    /// One alert by ID.
    pub fn get(&self, id: &str) -> Result<Option<Alert>> {
        let rows = self.db.with(|db| {
            db.query(
                &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"),
                vals![id],
            )
        })?;
        Ok(alerts_of(rows)?.into_iter().next())
    }

    /// The newest change number (0 for an empty store).
    pub fn head_seq(&self) -> Result<i64> {
        self.db.with(
            |db| match db.one("SELECT coalesce(max(change_seq), 0) FROM alerts", &[])? {
                Some(r) => r.get(0),
                None => Ok(0),
            },
        )
    }

    /// Counts of every alert by severity and status (kept by triggers, so this is a read of
    /// a few rows however many alerts there are); `by_rule` is left empty.
    pub fn totals(&self) -> Result<AlertCounts> {
        let mut c = AlertCounts::default();
        let rows = self.db.with(|db| {
            db.query(
                "SELECT severity, status, n FROM alert_totals WHERE n > 0",
                &[],
            )
        })?;
        for r in rows {
            let (sev, status, n): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            *c.by_severity.entry(sev).or_default() += n;
            *c.by_status.entry(status).or_default() += n;
            c.total += n;
        }
        Ok(c)
    }

    /// Alerts per rule over every alert (an index-only scan).
    pub fn rule_totals(&self) -> Result<std::collections::BTreeMap<String, i64>> {
        self.db
            .with(|db| db.query("SELECT rule_id, count(*) FROM alerts GROUP BY rule_id", &[]))?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
    }

    /// Alert counts by severity, status and rule, for alerts last seen in `[from, to)`.
    pub fn counts(&self, from: i64, to: i64) -> Result<AlertCounts> {
        let mut c = AlertCounts::default();
        for (col, map) in [
            ("severity", &mut c.by_severity),
            ("status", &mut c.by_status),
            ("rule_id", &mut c.by_rule),
        ] {
            let rows = self.db.with(|db| {
                db.query(
                    &format!(
                        "SELECT {col}, count(*) FROM alerts WHERE last_seen >= ?1 AND last_seen < ?2 GROUP BY {col}"
                    ),
                    vals![from, to],
                )
            })?;
            for r in rows {
                map.insert(r.get(0)?, r.get(1)?);
            }
        }
        c.total = c.by_status.values().sum();
        Ok(c)
    }
}
