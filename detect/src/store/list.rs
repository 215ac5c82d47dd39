//! Reading alerts: filtered, sorted, keyset-paged listings (entity filters driven from the
//! `alert_terms` index, text from the trigram full-text index), single alerts, the change feed
//! that export and the sinks follow, and counts for `/stats`.

use super::{
    ALERT_COLUMNS, AlertStore, AlertStoreError, RawAlert, Result, alert_columns, change_seq_of,
    rank, row_to_raw,
};
use crate::alert::{Alert, Severity, Status};
use rusqlite::{OptionalExtension, params};

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

impl AlertStore {
    /// Lists alerts in `f.sort` order (most recent `last_seen` first by default).
    pub fn list(&self, f: &AlertFilter) -> Result<Vec<Alert>> {
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
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
                let mut st = self.conn.prepare_cached(
                    "SELECT rowid FROM alerts_fts WHERE alerts_fts MATCH ?1 LIMIT ?2",
                )?;
                let rows = st
                    .query_map(params![p, FTS_DRIVE_MAX + 1], |r| r.get::<_, i64>(0))?
                    .collect::<rusqlite::Result<Vec<i64>>>()?;
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
        let mut bind = |v: rusqlite::types::Value| {
            args.push(v);
            format!("?{}", args.len())
        };
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
            sql += &format!(" AND rule_id = {}", bind(r.clone().into()));
        }
        if let Some(s) = f.status {
            // With a rule filter, the rule's index is the selective one; `+` keeps SQLite
            // from walking the status index (most alerts share a status).
            let col = if f.rule.is_some() {
                "+status"
            } else {
                "status"
            };
            sql += &format!(" AND {col} = {}", bind(s.as_str().to_owned().into()));
        }
        if let Some(a) = &f.assignee {
            sql += &format!(" AND assignee = {}", bind(a.clone().into()));
        }
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
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(args), row_to_raw)?;
        rows.map(|r| {
            r.map_err(AlertStoreError::from)
                .and_then(RawAlert::into_alert)
        })
        .collect()
    }

    /// Alerts created or changed after change number `after`, in change order, with their
    /// change numbers: the pull-export feed. An alert changed twice appears once, at its
    /// latest change.
    pub fn changes(&self, after: i64, limit: usize) -> Result<Vec<(i64, Alert)>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE change_seq > ?1 ORDER BY change_seq LIMIT ?2"
        ))?;
        let rows = st.query_map(params![after, limit as i64], |r| {
            Ok((change_seq_of(r)?, row_to_raw(r)?))
        })?;
        rows.map(|r| {
            let (seq, raw) = r.map_err(AlertStoreError::from)?;
            Ok((seq, raw.into_alert()?))
        })
        .collect()
    }

    /// One alert by ID.
    pub fn get(&self, id: &str) -> Result<Option<Alert>> {
        self.conn
            .query_row(
                &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"),
                params![id],
                row_to_raw,
            )
            .optional()?
            .map(RawAlert::into_alert)
            .transpose()
    }

    /// The newest change number (0 for an empty store).
    pub fn head_seq(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(change_seq), 0) FROM alerts", [], |r| {
                r.get(0)
            })?)
    }

    /// Counts of every alert by severity and status (kept by triggers, so this is a read of
    /// a few rows however many alerts there are); `by_rule` is left empty.
    pub fn totals(&self) -> Result<AlertCounts> {
        let mut c = AlertCounts::default();
        let mut st = self
            .conn
            .prepare_cached("SELECT severity, status, n FROM alert_totals WHERE n > 0")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for r in rows {
            let (sev, status, n) = r?;
            *c.by_severity.entry(sev).or_default() += n;
            *c.by_status.entry(status).or_default() += n;
            c.total += n;
        }
        Ok(c)
    }

    /// Alerts per rule over every alert (an index-only scan).
    pub fn rule_totals(&self) -> Result<std::collections::BTreeMap<String, i64>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT rule_id, count(*) FROM alerts GROUP BY rule_id")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Alert counts by severity, status and rule, for alerts last seen in `[from, to)`.
    pub fn counts(&self, from: i64, to: i64) -> Result<AlertCounts> {
        let mut c = AlertCounts::default();
        for (col, map) in [
            ("severity", &mut c.by_severity),
            ("status", &mut c.by_status),
            ("rule_id", &mut c.by_rule),
        ] {
            let mut st = self.conn.prepare(&format!(
                "SELECT {col}, count(*) FROM alerts WHERE last_seen >= ?1 AND last_seen < ?2 GROUP BY {col}"
            ))?;
            let rows = st.query_map(params![from, to], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            for r in rows {
                let (k, n) = r?;
                map.insert(k, n);
            }
        }
        c.total = c.by_status.values().sum();
        Ok(c)
    }
}
