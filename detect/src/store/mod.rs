//! The alert store: SQLite (WAL) in the data directory, `alerts.db`.
//!
//! Two tables carry the model. `occurrences` holds one row per (rule, dedup key, window) with
//! a deterministic ID, so re-evaluating a window updates its row. `alerts` is derived: each
//! occurrence belongs to one alert, and an alert's counts, times, entities and evidence are
//! recomputed from its occurrences whenever one changes. A new occurrence joins (folds into)
//! an open alert of the same rule and dedup key when it starts within the rule's suppression
//! period of that alert; otherwise it opens a new alert whose ID is its own. Folding is counted
//! in `alerts.occurrences` and logged, never silent.
//!
//! The store also remembers which event-store files detection has already covered
//! (`covered_files`), which is how incremental runs find late data.

use crate::alert::{Alert, AlertMeta, Occurrence, Principal, Status, union_into};
use crate::rule::Severity;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeSet;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum AlertStoreError {
    #[error("alert store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("alert store: bad JSON in column {column}: {source}")]
    Json {
        column: &'static str,
        source: serde_json::Error,
    },
    #[error("alert store schema version {found} is newer than this kvwatch understands ({known})")]
    TooNew { found: i64, known: i64 },
    #[error(
        "alert store schema version {found} is older than this kvwatch ({known}) and could not be upgraded ({reason}); run a command that writes the store (`kvwatch detect` or `kvwatch serve`) with write access to the data directory"
    )]
    Outdated {
        found: i64,
        known: i64,
        reason: String,
    },
    #[error("no alert with id {0}")]
    NoSuchAlert(String),
}

type Result<T> = std::result::Result<T, AlertStoreError>;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    rule_id TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    severity TEXT NOT NULL,
    severity_rank INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'new',
    dedup_key TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    event_count INTEGER NOT NULL,
    occurrences INTEGER NOT NULL,
    vaults TEXT NOT NULL,
    principals TEXT NOT NULL,
    ips TEXT NOT NULL,
    objects TEXT NOT NULL,
    tactics TEXT NOT NULL,
    techniques TEXT NOT NULL,
    summary TEXT NOT NULL,
    evidence TEXT NOT NULL,
    evidence_truncated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX alerts_by_key ON alerts (rule_id, dedup_key, last_seen);
CREATE INDEX alerts_by_time ON alerts (last_seen);
CREATE TABLE occurrences (
    id TEXT PRIMARY KEY,
    alert_id TEXT NOT NULL REFERENCES alerts (id),
    rule_id TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    event_count INTEGER NOT NULL,
    severity TEXT NOT NULL,
    summary TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX occurrences_by_alert ON occurrences (alert_id);
CREATE TABLE covered_files (
    path TEXT PRIMARY KEY,
    min_time INTEGER NOT NULL,
    max_time INTEGER NOT NULL
);
CREATE TABLE rule_runs (
    rule_id TEXT PRIMARY KEY,
    last_run_at INTEGER NOT NULL,
    window_from INTEGER NOT NULL,
    window_to INTEGER NOT NULL,
    occurrences INTEGER NOT NULL,
    elapsed_ms INTEGER NOT NULL
);
"#,
    // A change sequence for pull-based export: every insert or update of an alert takes the
    // next number inside its own write transaction. SQLite has one writer at a time, so the
    // numbers follow commit order and a reader that pages by "seq > cursor" never skips a
    // change, whichever process (detection, an analyst's update) made it. Timestamps could:
    // a transaction may commit after a later-stamped one.
    r#"
ALTER TABLE alerts ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
UPDATE alerts SET change_seq = rowid;
CREATE INDEX alerts_by_change ON alerts (change_seq);
CREATE TRIGGER alerts_change_on_insert AFTER INSERT ON alerts BEGIN
    UPDATE alerts SET change_seq = (SELECT coalesce(max(change_seq), 0) + 1 FROM alerts)
    WHERE id = NEW.id;
END;
CREATE TRIGGER alerts_change_on_update AFTER UPDATE OF status, severity, last_seen, event_count,
    occurrences, summary, evidence, updated_at ON alerts BEGIN
    UPDATE alerts SET change_seq = (SELECT coalesce(max(change_seq), 0) + 1 FROM alerts)
    WHERE id = NEW.id;
END;
"#,
    // Triage and delivery state. `assignee` and the `alert_history` audit trail record who
    // changed what; `sink_cursors` holds each forwarder's last delivered change number and
    // `sink_dead_letters` the alerts a sink refused for good (never counted as delivered).
    r#"
ALTER TABLE alerts ADD COLUMN assignee TEXT;
CREATE INDEX alerts_by_time_id ON alerts (last_seen, id);
DROP TRIGGER alerts_change_on_update;
CREATE TRIGGER alerts_change_on_update AFTER UPDATE OF status, assignee, severity, last_seen,
    event_count, occurrences, summary, evidence, updated_at ON alerts BEGIN
    UPDATE alerts SET change_seq = (SELECT coalesce(max(change_seq), 0) + 1 FROM alerts)
    WHERE id = NEW.id;
END;
CREATE TABLE alert_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    old TEXT,
    new TEXT
);
CREATE INDEX alert_history_by_alert ON alert_history (alert_id, seq);
CREATE TABLE sink_cursors (
    sink TEXT PRIMARY KEY,
    change_seq INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE sink_dead_letters (
    sink TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    change_seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    http_status INTEGER,
    error TEXT NOT NULL,
    retry INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sink, alert_id)
);
"#,
    // Listing at scale: every sort order has an (order column, id) index so keyset pages are
    // index range scans; the entities analysts pivot on (vault, IP, principal) are indexed
    // terms kept by triggers; free text goes through an FTS5 trigram index (substring match).
    r#"
CREATE INDEX alerts_by_created_id ON alerts (created_at, id);
CREATE INDEX alerts_by_rank_id ON alerts (severity_rank, id);
CREATE INDEX alerts_by_events_id ON alerts (event_count, id);
CREATE INDEX alerts_by_rule_time ON alerts (rule_id, last_seen, id);
CREATE INDEX alerts_by_status_time ON alerts (status, last_seen, id);
CREATE TABLE alert_terms (
    term TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    PRIMARY KEY (term, alert_id)
) WITHOUT ROWID;
CREATE INDEX alert_terms_by_alert ON alert_terms (alert_id);
INSERT OR IGNORE INTO alert_terms SELECT 'vault:' || lower(j.value), a.id FROM alerts a, json_each(a.vaults) j;
INSERT OR IGNORE INTO alert_terms SELECT 'ip:' || j.value, a.id FROM alerts a, json_each(a.ips) j;
INSERT OR IGNORE INTO alert_terms SELECT 'principal:' || lower(v), id FROM
    (SELECT a.id, j.value ->> '$.upn' AS v FROM alerts a, json_each(a.principals) j
     UNION ALL SELECT a.id, j.value ->> '$.oid' FROM alerts a, json_each(a.principals) j
     UNION ALL SELECT a.id, j.value ->> '$.appid' FROM alerts a, json_each(a.principals) j)
    WHERE v IS NOT NULL;
CREATE TRIGGER alerts_terms_on_insert AFTER INSERT ON alerts BEGIN
    INSERT OR IGNORE INTO alert_terms SELECT 'vault:' || lower(value), NEW.id FROM json_each(NEW.vaults);
    INSERT OR IGNORE INTO alert_terms SELECT 'ip:' || value, NEW.id FROM json_each(NEW.ips);
    INSERT OR IGNORE INTO alert_terms SELECT 'principal:' || lower(v), NEW.id FROM
        (SELECT p.value ->> '$.upn' AS v FROM json_each(NEW.principals) AS p
         UNION ALL SELECT p.value ->> '$.oid' FROM json_each(NEW.principals) AS p
         UNION ALL SELECT p.value ->> '$.appid' FROM json_each(NEW.principals) AS p)
        WHERE v IS NOT NULL;
END;
CREATE TRIGGER alerts_terms_on_update AFTER UPDATE OF vaults, ips, principals ON alerts BEGIN
    DELETE FROM alert_terms WHERE alert_id = NEW.id;
    INSERT OR IGNORE INTO alert_terms SELECT 'vault:' || lower(value), NEW.id FROM json_each(NEW.vaults);
    INSERT OR IGNORE INTO alert_terms SELECT 'ip:' || value, NEW.id FROM json_each(NEW.ips);
    INSERT OR IGNORE INTO alert_terms SELECT 'principal:' || lower(v), NEW.id FROM
        (SELECT p.value ->> '$.upn' AS v FROM json_each(NEW.principals) AS p
         UNION ALL SELECT p.value ->> '$.oid' FROM json_each(NEW.principals) AS p
         UNION ALL SELECT p.value ->> '$.appid' FROM json_each(NEW.principals) AS p)
        WHERE v IS NOT NULL;
END;
CREATE VIRTUAL TABLE alerts_fts USING fts5(
    title, summary, description, dedup_key, content='alerts', content_rowid='rowid',
    tokenize='trigram'
);
INSERT INTO alerts_fts (alerts_fts) VALUES ('rebuild');
CREATE TRIGGER alerts_fts_on_insert AFTER INSERT ON alerts BEGIN
    INSERT INTO alerts_fts (rowid, title, summary, description, dedup_key)
    VALUES (NEW.rowid, NEW.title, NEW.summary, NEW.description, NEW.dedup_key);
END;
CREATE TRIGGER alerts_fts_on_update AFTER UPDATE OF title, summary, description, dedup_key ON alerts BEGIN
    INSERT INTO alerts_fts (alerts_fts, rowid, title, summary, description, dedup_key)
    VALUES ('delete', OLD.rowid, OLD.title, OLD.summary, OLD.description, OLD.dedup_key);
    INSERT INTO alerts_fts (rowid, title, summary, description, dedup_key)
    VALUES (NEW.rowid, NEW.title, NEW.summary, NEW.description, NEW.dedup_key);
END;
CREATE TRIGGER alerts_fts_on_delete AFTER DELETE ON alerts BEGIN
    INSERT INTO alerts_fts (alerts_fts, rowid, title, summary, description, dedup_key)
    VALUES ('delete', OLD.rowid, OLD.title, OLD.summary, OLD.description, OLD.dedup_key);
END;
"#,
];

/// One entry of an alert's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    #[serde(serialize_with = "crate::alert::ts")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    /// The API key name (or `cli:<user>`) that made the change.
    pub actor: String,
    /// `status`, `assignee` or `comment`.
    pub action: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// An analyst's change to an alert; `None` fields are left alone.
#[derive(Debug, Clone, Default)]
pub struct AlertUpdate {
    pub status: Option<Status>,
    /// `Some(None)` clears the assignee.
    pub assignee: Option<Option<String>>,
    pub comment: Option<String>,
}

/// An alert a sink refused permanently.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub sink: String,
    pub alert_id: String,
    pub change_seq: i64,
    #[serde(serialize_with = "crate::alert::ts")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    pub http_status: Option<i64>,
    pub error: String,
    /// An operator asked for it to be sent again.
    pub retry: bool,
}

/// Counts for `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AlertCounts {
    pub by_severity: std::collections::BTreeMap<String, i64>,
    pub by_status: std::collections::BTreeMap<String, i64>,
    pub by_rule: std::collections::BTreeMap<String, i64>,
    pub total: i64,
}

/// What applying one evaluation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyStats {
    /// Alerts opened.
    pub created: u64,
    /// Existing occurrences whose data changed (late events, longer bursts).
    pub updated: u64,
    /// New occurrences folded into an open alert inside the suppression period.
    pub folded: u64,
    /// Occurrences seen before with nothing new.
    pub unchanged: u64,
}

impl std::ops::AddAssign for ApplyStats {
    fn add_assign(&mut self, o: Self) {
        self.created += o.created;
        self.updated += o.updated;
        self.folded += o.folded;
        self.unchanged += o.unchanged;
    }
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

/// The SQLite alert store.
pub struct AlertStore {
    conn: Connection,
    /// Evidence event IDs kept per alert.
    pub max_evidence: usize,
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialisable")
}

fn unjson<T: serde::de::DeserializeOwned>(column: &'static str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|source| AlertStoreError::Json { column, source })
}

fn rank(s: Severity) -> i64 {
    s as i64
}

/// Keeps a WAL database's `-wal` and `-shm` files when its last connection closes. A
/// WAL-mode database can be opened read-only on a read-only filesystem only if those files
/// exist, so a service that starts on a disk that turned read-only still reads its alerts
/// and keys.
pub fn persist_wal(conn: &Connection) {
    let mut on: std::ffi::c_int = 1;
    // SAFETY: the handle is this open connection's; SQLITE_FCNTL_PERSIST_WAL reads and writes
    // one int through the pointer, which lives across the call.
    unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&raw mut on).cast(),
        );
    }
}

impl AlertStore {
    /// Opens (creating and migrating) `alerts.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<AlertStore> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("creating {}: {e}", data_dir.display())),
            )
        })?;
        let conn = Connection::open(data_dir.join("alerts.db"))?;
        Self::init(conn)
    }

    /// Opens an existing store read-only (for `kvwatch query` and `kvwatch alerts`); `None`
    /// when there is none yet.
    pub fn open_read_only(data_dir: &Path) -> Result<Option<AlertStore>> {
        let path = data_dir.join("alerts.db");
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Readers map the file instead of copying pages through their own small caches: an
        // entity filter visits a few thousand scattered rows, and the API keeps many readers.
        conn.pragma_update(None, "mmap_size", 4_i64 << 30)?;
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if v > known {
            return Err(AlertStoreError::TooNew { found: v, known });
        }
        if v == 0 {
            // Not created yet, or being created by a writer right now (creation is one
            // transaction, so a reader sees either nothing or the whole schema): no store.
            return Ok(None);
        }
        if v < known {
            // A store written by an older kvwatch: upgrade it once (under the write lock, see
            // `init`), then read as asked. Readers would otherwise fail on columns the
            // queries expect.
            drop(conn);
            tracing::info!(from = v, to = known, "upgrading the alert store schema");
            if let Err(e) = Self::open(data_dir) {
                return Err(AlertStoreError::Outdated {
                    found: v,
                    known,
                    reason: e.to_string(),
                });
            }
            return Self::open_read_only(data_dir);
        }
        Ok(Some(AlertStore {
            conn,
            max_evidence: 1000,
        }))
    }

    /// Whether this connection can only read (SQLite opened it read-only because the disk
    /// refused writes). Such a connection keeps every later one of this process read-only
    /// too, so a writer holding one should drop it and open anew.
    pub fn is_read_only(&self) -> bool {
        self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true)
    }

    fn init(conn: Connection) -> Result<AlertStore> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        persist_wal(&conn);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let known = MIGRATIONS.len() as i64;
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if v > known {
            return Err(AlertStoreError::TooNew { found: v, known });
        }
        if v < known {
            // Creation and upgrades take the write lock first and read the version again
            // under it: of two processes opening a new store at once, one creates it and the
            // other finds it created. All pending migrations commit together or not at all.
            let tx = rusqlite::Transaction::new_unchecked(
                &conn,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            let v: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if v > known {
                return Err(AlertStoreError::TooNew { found: v, known });
            }
            for m in MIGRATIONS.iter().skip(v as usize) {
                tx.execute_batch(m)?;
            }
            tx.pragma_update(None, "user_version", known)?;
            tx.commit()?;
        }
        Ok(AlertStore {
            conn,
            max_evidence: 1000,
        })
    }

    /// Stores one analytic's occurrences (upsert + fold), in one transaction.
    pub fn apply(
        &mut self,
        meta: &AlertMeta<'_>,
        occs: &[Occurrence],
        now: i64,
    ) -> Result<ApplyStats> {
        let tx = self.conn.transaction()?;
        let mut stats = ApplyStats::default();
        let supp = meta.suppression_ns;
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for o in occs {
            let body = json(o);
            let existing: Option<(String, i64, i64, i64, String)> = tx
                .query_row(
                    "SELECT alert_id, first_seen, last_seen, event_count, body FROM occurrences WHERE id = ?1",
                    params![o.id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            if let Some((alert_id, f, l, c, old_body)) = existing {
                if f == o.first_seen && l == o.last_seen && c == o.event_count && old_body == body {
                    stats.unchanged += 1;
                    continue;
                }
                tx.execute(
                    "UPDATE occurrences SET first_seen=?2, last_seen=?3, event_count=?4, severity=?5, summary=?6, body=?7, updated_at=?8 WHERE id=?1",
                    params![o.id, o.first_seen, o.last_seen, o.event_count, o.severity.as_str(), o.summary, body, now],
                )?;
                stats.updated += 1;
                touched.insert(alert_id);
                continue;
            }
            // A new window: fold into an open alert of the same key within the suppression period.
            let target: Option<String> = tx
                .query_row(
                    "SELECT id FROM alerts WHERE rule_id = ?1 AND dedup_key = ?2 AND status != 'resolved'
                       AND last_seen >= ?3 AND first_seen <= ?4
                     ORDER BY first_seen LIMIT 1",
                    params![
                        o.rule_id,
                        o.dedup_key,
                        o.first_seen.saturating_sub(supp),
                        o.last_seen.saturating_add(supp)
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            let alert_id = match target {
                Some(a) => {
                    stats.folded += 1;
                    tracing::info!(rule = %o.rule_id, alert = %a, occurrence = %o.id, key = %o.dedup_key, "alert.folded");
                    a
                }
                None => {
                    tx.execute(
                        "INSERT INTO alerts (id, rule_id, title, description, severity, severity_rank, status, dedup_key,
                            first_seen, last_seen, created_at, updated_at, event_count, occurrences, vaults, principals,
                            ips, objects, tactics, techniques, summary, evidence)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'new', ?7, ?8, ?9, ?10, ?10, 0, 0, '[]', '[]', '[]', '[]', ?11, ?12, '', '[]')",
                        params![
                            o.id,
                            o.rule_id,
                            meta.title,
                            meta.description,
                            o.severity.as_str(),
                            rank(o.severity),
                            o.dedup_key,
                            o.first_seen,
                            o.last_seen,
                            now,
                            json(&meta.tactics),
                            json(&meta.techniques)
                        ],
                    )?;
                    stats.created += 1;
                    tracing::info!(rule = %o.rule_id, alert = %o.id, severity = %o.severity, key = %o.dedup_key, "alert.created");
                    o.id.clone()
                }
            };
            tx.execute(
                "INSERT INTO occurrences (id, alert_id, rule_id, window_start, first_seen, last_seen, event_count, severity, summary, body, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![o.id, alert_id, o.rule_id, o.window_start, o.first_seen, o.last_seen, o.event_count, o.severity.as_str(), o.summary, body, now],
            )?;
            touched.insert(alert_id);
        }
        for a in &touched {
            recompute(&tx, a, now, self.max_evidence)?;
        }
        tx.commit()?;
        Ok(stats)
    }

    /// Records a rule run (for `kvwatch rules list` and monitoring).
    pub fn record_run(
        &self,
        rule_id: &str,
        now: i64,
        windows: (i64, i64),
        occurrences: usize,
        elapsed_ms: u64,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO rule_runs (rule_id, last_run_at, window_from, window_to, occurrences, elapsed_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (rule_id) DO UPDATE SET last_run_at=?2, window_from=?3, window_to=?4, occurrences=?5, elapsed_ms=?6",
            params![rule_id, now, windows.0, windows.1, occurrences as i64, elapsed_ms as i64],
        )?;
        Ok(())
    }

    /// Event-store files detection has covered.
    pub fn covered_files(&self) -> Result<BTreeSet<String>> {
        let mut st = self.conn.prepare("SELECT path FROM covered_files")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Records `files` (path, min time, max time) as the covered set: the manifest snapshot
    /// whose alerts were just stored. Paths compaction removed drop out.
    pub fn replace_covered(&mut self, files: &[(String, i64, i64)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM covered_files", [])?;
        for (p, a, b) in files {
            tx.execute(
                "INSERT OR REPLACE INTO covered_files (path, min_time, max_time) VALUES (?1, ?2, ?3)",
                params![p, a, b],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

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

    /// Changes an alert's workflow status (recorded in its history as `actor`).
    pub fn set_status(&self, id: &str, status: Status, actor: &str, now: i64) -> Result<()> {
        let update = AlertUpdate {
            status: Some(status),
            ..Default::default()
        };
        self.update(id, &update, actor, now)
    }

    /// Applies an analyst's update in one transaction, with one history entry per field
    /// that changed (and one per comment).
    pub fn update(&self, id: &str, u: &AlertUpdate, actor: &str, now: i64) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        let current: Option<(String, Option<String>)> = tx
            .query_row(
                "SELECT status, assignee FROM alerts WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((old_status, old_assignee)) = current else {
            return Err(AlertStoreError::NoSuchAlert(id.to_owned()));
        };
        let history = |action: &str, old: Option<&str>, new: Option<&str>| {
            tx.execute(
                "INSERT INTO alert_history (alert_id, at, actor, action, old, new) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, now, actor, action, old, new],
            )
        };
        let mut changed = false;
        if let Some(s) = u.status.filter(|s| s.as_str() != old_status) {
            history("status", Some(&old_status), Some(s.as_str()))?;
            changed = true;
        }
        if let Some(a) = u.assignee.as_ref().filter(|a| **a != old_assignee) {
            history("assignee", old_assignee.as_deref(), a.as_deref())?;
            changed = true;
        }
        if let Some(c) = &u.comment {
            history("comment", None, Some(c))?;
            changed = true;
        }
        if changed {
            tx.execute(
                "UPDATE alerts SET status = ?2, assignee = ?3, updated_at = ?4 WHERE id = ?1",
                params![
                    id,
                    u.status.map(Status::as_str).unwrap_or(&old_status),
                    u.assignee.clone().unwrap_or(old_assignee),
                    now
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The audit trail of one alert, oldest first.
    pub fn history(&self, id: &str) -> Result<Vec<HistoryEntry>> {
        let mut st = self.conn.prepare(
            "SELECT at, actor, action, old, new FROM alert_history WHERE alert_id = ?1 ORDER BY seq",
        )?;
        let rows = st.query_map(params![id], |r| {
            Ok(HistoryEntry {
                at: r.get(0)?,
                actor: r.get(1)?,
                action: r.get(2)?,
                old: r.get(3)?,
                new: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every audit-trail entry with its alert ID, in order.
    pub fn all_history(&self) -> Result<Vec<(String, HistoryEntry)>> {
        let mut st = self.conn.prepare(
            "SELECT alert_id, at, actor, action, old, new FROM alert_history ORDER BY seq",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get(0)?,
                HistoryEntry {
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    old: r.get(4)?,
                    new: r.get(5)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest change number (0 for an empty store).
    pub fn head_seq(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(change_seq), 0) FROM alerts", [], |r| {
                r.get(0)
            })?)
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

    /// The last change number delivered to `sink` (0 when it has delivered nothing).
    pub fn sink_cursor(&self, sink: &str) -> Result<i64> {
        Ok(self
            .conn
            .query_row(
                "SELECT change_seq FROM sink_cursors WHERE sink = ?1",
                params![sink],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Records that `sink` has everything up to change `seq`. Never moves a cursor back.
    pub fn set_sink_cursor(&self, sink: &str, seq: i64, now: i64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO sink_cursors (sink, change_seq, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (sink) DO UPDATE SET change_seq = max(change_seq, ?2), updated_at = ?3",
            params![sink, seq, now],
        )?;
        Ok(())
    }

    /// Records alerts a sink refused for good. A later refusal of the same alert replaces
    /// the earlier entry.
    pub fn add_dead_letters(
        &self,
        sink: &str,
        alerts: &[(i64, &str)],
        http_status: Option<u16>,
        error: &str,
        now: i64,
    ) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut st = tx.prepare(
                "INSERT OR REPLACE INTO sink_dead_letters \
                 (sink, alert_id, change_seq, at, http_status, error, retry) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
            )?;
            for (seq, id) in alerts {
                st.execute(params![sink, id, seq, now, http_status, error])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Dead letters, newest first; all sinks when `sink` is `None`.
    pub fn dead_letters(&self, sink: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        let mut st = self.conn.prepare(
            "SELECT sink, alert_id, change_seq, at, http_status, error, retry FROM sink_dead_letters \
             WHERE ?1 IS NULL OR sink = ?1 ORDER BY at DESC, alert_id LIMIT ?2",
        )?;
        let rows = st.query_map(params![sink, limit as i64], |r| {
            Ok(DeadLetter {
                sink: r.get(0)?,
                alert_id: r.get(1)?,
                change_seq: r.get(2)?,
                at: r.get(3)?,
                http_status: r.get(4)?,
                error: r.get(5)?,
                retry: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Dead-letter counts per sink.
    pub fn dead_letter_counts(&self) -> Result<Vec<(String, i64)>> {
        let mut st = self
            .conn
            .prepare("SELECT sink, count(*) FROM sink_dead_letters GROUP BY sink ORDER BY sink")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks a sink's dead letters for another delivery attempt; returns how many.
    pub fn retry_dead_letters(&self, sink: &str) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE sink_dead_letters SET retry = 1 WHERE sink = ?1 AND retry = 0",
            params![sink],
        )?)
    }

    /// The alerts of `sink`'s dead letters that are marked for retry, with their current
    /// change numbers.
    pub fn retry_queue(&self, sink: &str, limit: usize) -> Result<Vec<(i64, Alert)>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {} FROM sink_dead_letters d JOIN alerts a ON a.id = d.alert_id \
             WHERE d.sink = ?1 AND d.retry = 1 ORDER BY a.change_seq LIMIT ?2",
            alert_columns("a")
        ))?;
        let rows = st.query_map(params![sink, limit as i64], |r| {
            Ok((change_seq_of(r)?, row_to_raw(r)?))
        })?;
        rows.map(|r| {
            let (seq, raw) = r.map_err(AlertStoreError::from)?;
            Ok((seq, raw.into_alert()?))
        })
        .collect()
    }

    /// Removes dead letters that have now been delivered.
    pub fn remove_dead_letters(&self, sink: &str, alert_ids: &[&str]) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        for id in alert_ids {
            tx.execute(
                "DELETE FROM sink_dead_letters WHERE sink = ?1 AND alert_id = ?2",
                params![sink, id],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Occurrences of one alert, oldest first.
    pub fn occurrences(&self, alert_id: &str) -> Result<Vec<Occurrence>> {
        let mut st = self.conn.prepare(
            "SELECT body FROM occurrences WHERE alert_id = ?1 ORDER BY window_start, id",
        )?;
        let rows = st.query_map(params![alert_id], |r| r.get::<_, String>(0))?;
        rows.map(|r| unjson("occurrences.body", &r?)).collect()
    }
}

/// Re-derives an alert from its occurrences.
fn recompute(
    tx: &rusqlite::Transaction<'_>,
    alert_id: &str,
    now: i64,
    max_evidence: usize,
) -> Result<()> {
    let mut st =
        tx.prepare("SELECT body FROM occurrences WHERE alert_id = ?1 ORDER BY window_start, id")?;
    let bodies: Vec<String> = st
        .query_map(params![alert_id], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let occs: Vec<Occurrence> = bodies
        .iter()
        .map(|b| unjson("occurrences.body", b))
        .collect::<Result<_>>()?;
    let Some(last) = occs.last() else {
        return Ok(());
    };
    let mut vaults = Vec::new();
    let mut principals: Vec<Principal> = Vec::new();
    let mut ips = Vec::new();
    let mut objects = Vec::new();
    let mut evidence: Vec<String> = Vec::new();
    let mut truncated = false;
    let mut severity = Severity::Informational;
    for o in &occs {
        union_into(&mut vaults, &o.vaults);
        union_into(&mut principals, &o.principals);
        union_into(&mut ips, &o.ips);
        union_into(&mut objects, &o.objects);
        severity = severity.max(o.severity);
        for e in &o.evidence {
            if evidence.len() >= max_evidence {
                truncated = true;
                break;
            }
            evidence.push(e.clone());
        }
    }
    let first = occs.iter().map(|o| o.first_seen).min().unwrap_or(0);
    let lastt = occs.iter().map(|o| o.last_seen).max().unwrap_or(0);
    let count: i64 = occs.iter().map(|o| o.event_count).sum();
    let summary = if occs.len() > 1 {
        format!(
            "{} ({} occurrences folded into this alert, {count} events in all)",
            last.summary,
            occs.len()
        )
    } else {
        last.summary.clone()
    };
    tx.execute(
        "UPDATE alerts SET severity=?2, severity_rank=?3, first_seen=?4, last_seen=?5, updated_at=?6, event_count=?7,
            occurrences=?8, vaults=?9, principals=?10, ips=?11, objects=?12, summary=?13, evidence=?14, evidence_truncated=?15
         WHERE id=?1",
        params![
            alert_id,
            severity.as_str(),
            rank(severity),
            first,
            lastt,
            now,
            count,
            occs.len() as i64,
            json(&vaults),
            json(&principals),
            json(&ips),
            json(&objects),
            summary,
            json(&evidence),
            truncated
        ],
    )?;
    Ok(())
}

struct RawAlert {
    id: String,
    rule_id: String,
    title: String,
    description: String,
    severity: String,
    status: String,
    dedup_key: String,
    first_seen: i64,
    last_seen: i64,
    created_at: i64,
    updated_at: i64,
    event_count: i64,
    occurrences: i64,
    vaults: String,
    principals: String,
    ips: String,
    objects: String,
    tactics: String,
    techniques: String,
    summary: String,
    evidence: String,
    evidence_truncated: bool,
    assignee: Option<String>,
}

/// Text searches with at most this many matches are driven from the full-text index.
const FTS_DRIVE_MAX: i64 = 5000;

/// The columns [`row_to_raw`] reads, by position, in this order; `change_seq` last.
///
/// Fetching by position: looking each column up by name scanned the statement's column
/// names with `strlen` for every field of every row, a sixth of the CPU of an alert listing.
const ALERT_COLUMNS: &str = "id, rule_id, title, description, severity, status, dedup_key, first_seen, last_seen, created_at, updated_at, event_count, occurrences, vaults, principals, ips, objects, tactics, techniques, summary, evidence, evidence_truncated, assignee, change_seq";

/// [`ALERT_COLUMNS`] qualified with a table alias.
fn alert_columns(alias: &str) -> String {
    ALERT_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The change number of a row selected with [`ALERT_COLUMNS`].
fn change_seq_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<i64> {
    r.get(23)
}

fn row_to_raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawAlert> {
    Ok(RawAlert {
        id: r.get(0)?,
        rule_id: r.get(1)?,
        title: r.get(2)?,
        description: r.get(3)?,
        severity: r.get(4)?,
        status: r.get(5)?,
        dedup_key: r.get(6)?,
        first_seen: r.get(7)?,
        last_seen: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        event_count: r.get(11)?,
        occurrences: r.get(12)?,
        vaults: r.get(13)?,
        principals: r.get(14)?,
        ips: r.get(15)?,
        objects: r.get(16)?,
        tactics: r.get(17)?,
        techniques: r.get(18)?,
        summary: r.get(19)?,
        evidence: r.get(20)?,
        evidence_truncated: r.get(21)?,
        assignee: r.get(22)?,
    })
}

impl RawAlert {
    fn into_alert(self) -> Result<Alert> {
        Ok(Alert {
            severity: Severity::parse(&self.severity).unwrap_or(Severity::Informational),
            status: Status::parse(&self.status).unwrap_or(Status::New),
            vaults: unjson("vaults", &self.vaults)?,
            principals: unjson("principals", &self.principals)?,
            ips: unjson("ips", &self.ips)?,
            objects: unjson("objects", &self.objects)?,
            tactics: unjson("tactics", &self.tactics)?,
            techniques: unjson("techniques", &self.techniques)?,
            evidence: unjson("evidence", &self.evidence)?,
            id: self.id,
            rule_id: self.rule_id,
            title: self.title,
            description: self.description,
            dedup_key: self.dedup_key,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            created_at: self.created_at,
            updated_at: self.updated_at,
            event_count: self.event_count,
            occurrences: self.occurrences,
            summary: self.summary,
            evidence_truncated: self.evidence_truncated,
            assignee: self.assignee,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_an_older_store_upgrades_it_first() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A store as an older kvwatch left it: only the first two migrations ran.
            let conn = Connection::open(dir.path().join("alerts.db")).unwrap();
            for (i, m) in MIGRATIONS.iter().take(2).enumerate() {
                conn.execute_batch(m).unwrap();
                conn.pragma_update(None, "user_version", (i + 1) as i64)
                    .unwrap();
            }
        }
        let store = AlertStore::open_read_only(dir.path()).unwrap().unwrap();
        let v: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        // The listing reads columns the later migrations added.
        assert!(store.list(&AlertFilter::default()).unwrap().is_empty());
    }

    #[test]
    fn readers_racing_a_creating_writer_never_fail_or_migrate_it() {
        for round in 0..150 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().to_owned();
            let start = std::sync::Arc::new(std::sync::Barrier::new(4));
            let readers: Vec<_> = (0..3)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        let mut seen_store = false;
                        for _ in 0..40 {
                            match AlertStore::open_read_only(&path) {
                                Ok(Some(st)) => {
                                    st.list(&AlertFilter::default()).unwrap();
                                    seen_store = true;
                                }
                                Ok(None) => {}
                                Err(e) => panic!("round {round}: a reader failed: {e}"),
                            }
                        }
                        seen_store
                    })
                })
                .collect();
            start.wait();
            AlertStore::open(&path).unwrap();
            for r in readers {
                r.join().unwrap();
            }
            // After the race the store is complete and readable.
            assert!(AlertStore::open_read_only(&path).unwrap().is_some());
        }
    }
}
