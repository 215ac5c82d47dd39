//! The alert store: SQLite (WAL) in the data directory, `alerts.db`, or for a deployment of
//! several nodes a PostgreSQL database they share ([`pg`]). The logic below is written once
//! against [`db::Sql`]; each database runs it in its own dialect.
//!
//! Two tables carry the model. `occurrences` holds one row per (rule, dedup key, window) with
//! a deterministic ID, so re-evaluating a window updates its row. `alerts` is derived: each
//! occurrence belongs to one alert, and an alert's counts, times, entities and evidence are
//! recomputed from its occurrences whenever one changes ([`fold`]). Analysts read alerts
//! through [`list`] and change them through [`triage`], which keeps the audit trail; the SIEM
//! forwarders follow the change numbers and keep their cursors and dead letters in
//! [`outbox`]; [`coverage`] remembers which event-store files detection has covered, which is
//! how incremental runs find late data.
//!
//! This module owns opening the store, its schema and migrations, and the mapping of an
//! `alerts` row to an [`Alert`].

mod copy;
mod coverage;
pub mod db;
mod fold;
pub mod lease;
mod list;
mod outbox;
pub mod pg;
#[cfg(test)]
mod suite;
#[cfg(test)]
mod testpg;
mod triage;

pub use copy::CopyReport;
pub use fold::ApplyStats;
pub use list::{AlertCounts, AlertFilter, AlertSort};
pub use outbox::DeadLetter;
pub use triage::{AlertUpdate, HistoryEntry};

use crate::alert::{Alert, Severity, Status};
use db::{Db, Dialect, Row};
use kvwatch_ingest::DataDir;
use rusqlite::Connection;

#[derive(Debug, thiserror::Error)]
pub enum AlertStoreError {
    #[error("alert store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("alert store (PostgreSQL): {0}")]
    Postgres(#[from] postgres::Error),
    #[error("alert store {url}: {msg}")]
    Config { url: String, msg: String },
    #[error("alert store: column {index} is not {want}: {found}")]
    Column {
        index: usize,
        want: &'static str,
        found: String,
    },
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
    #[error(
        "this node's leadership (holder {holder}, epoch {epoch}) has ended; its writes are refused"
    )]
    Fenced { holder: String, epoch: i64 },
    #[error("copying the alert store: {0}")]
    Copy(String),
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
    // Continuous detection: event ranges a rule has still to evaluate (held back by its
    // interval), and how far a complete-data rule has judged.
    r#"
CREATE TABLE rule_state (
    rule_id TEXT PRIMARY KEY,
    pending TEXT NOT NULL DEFAULT '[]',
    judged_to INTEGER
);
"#,
    // The console's counts by severity and status over every alert, kept by triggers: a
    // GROUP BY over a million alerts takes a quarter of a second, a read of this table none.
    r#"
CREATE TABLE alert_totals (
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (severity, status)
) WITHOUT ROWID;
INSERT INTO alert_totals SELECT severity, status, count(*) FROM alerts GROUP BY 1, 2;
CREATE TRIGGER alert_totals_on_insert AFTER INSERT ON alerts BEGIN
    INSERT INTO alert_totals VALUES (NEW.severity, NEW.status, 1)
        ON CONFLICT (severity, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER alert_totals_on_update AFTER UPDATE OF severity, status ON alerts
WHEN OLD.severity <> NEW.severity OR OLD.status <> NEW.status BEGIN
    UPDATE alert_totals SET n = n - 1 WHERE severity = OLD.severity AND status = OLD.status;
    INSERT INTO alert_totals VALUES (NEW.severity, NEW.status, 1)
        ON CONFLICT (severity, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER alert_totals_on_delete AFTER DELETE ON alerts BEGIN
    UPDATE alert_totals SET n = n - 1 WHERE severity = OLD.severity AND status = OLD.status;
END;
"#,
    // Scheduled reports' progress, kept here when nodes share the store (a single node keeps
    // it in its reports directory).
    r#"
CREATE TABLE report_slots (
    schedule TEXT PRIMARY KEY,
    last_slot_ns INTEGER NOT NULL
);
"#,
];

/// The alert store, on either database.
pub struct AlertStore {
    db: Db,
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
    /// Opens (creating and migrating) the store: the database of `data.alerts_url()`, or
    /// `alerts.db` in the state directory.
    pub fn open(data: &DataDir) -> Result<AlertStore> {
        if let Some(url) = data.alerts_url() {
            let db = pg::open(url)?;
            if let Some((holder, epoch)) = data.lease() {
                db.fence(lease::Claim {
                    holder: holder.to_owned(),
                    epoch,
                });
            }
            return Ok(AlertStore {
                db,
                max_evidence: 1000,
            });
        }
        data.create().map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("creating {}: {e}", data.root().display())),
            )
        })?;
        let conn = Connection::open(data.alerts_db())?;
        Self::init(conn)
    }

    /// Opens an existing store read-only (for `kvwatch query` and `kvwatch alerts`); `None`
    /// when there is none yet.
    pub fn open_read_only(data: &DataDir) -> Result<Option<AlertStore>> {
        if data.alerts_url().is_some() {
            // One schema for every node, migrated by whichever opens it first.
            return Self::open(data).map(Some);
        }
        let path = data.alerts_db();
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
            if let Err(e) = Self::open(data) {
                return Err(AlertStoreError::Outdated {
                    found: v,
                    known,
                    reason: e.to_string(),
                });
            }
            return Self::open_read_only(data);
        }
        Ok(Some(AlertStore {
            db: Db::Sqlite(conn),
            max_evidence: 1000,
        }))
    }

    /// Whether this connection can only read (SQLite opened it read-only because the disk
    /// refused writes). Such a connection keeps every later one of this process read-only
    /// too, so a writer holding one should drop it and open anew.
    pub fn is_read_only(&self) -> bool {
        match &self.db {
            Db::Sqlite(c) => c.is_readonly(rusqlite::MAIN_DB).unwrap_or(true),
            Db::Postgres(_) => false,
        }
    }

    /// Fails with [`AlertStoreError::Fenced`] when this store was opened under a lease that
    /// has since ended (a leader checks before it sends anything out); Ok otherwise.
    pub fn check_lease(&self) -> Result<()> {
        self.db.tx(|_| Ok(()))
    }

    /// Which database this store is on.
    pub fn dialect(&self) -> Dialect {
        self.db.dialect()
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
        conn.set_prepared_statement_cache_capacity(64);
        Ok(AlertStore {
            db: Db::Sqlite(conn),
            max_evidence: 1000,
        })
    }
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
fn change_seq_of(r: &Row) -> Result<i64> {
    r.get(23)
}

fn row_to_raw(r: &mut Row) -> Result<RawAlert> {
    Ok(RawAlert {
        id: r.take_text(0)?,
        rule_id: r.take_text(1)?,
        title: r.take_text(2)?,
        description: r.take_text(3)?,
        severity: r.take_text(4)?,
        status: r.take_text(5)?,
        dedup_key: r.take_text(6)?,
        first_seen: r.get(7)?,
        last_seen: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        event_count: r.get(11)?,
        occurrences: r.get(12)?,
        vaults: r.take_text(13)?,
        principals: r.take_text(14)?,
        ips: r.take_text(15)?,
        objects: r.take_text(16)?,
        tactics: r.take_text(17)?,
        techniques: r.take_text(18)?,
        summary: r.take_text(19)?,
        evidence: r.take_text(20)?,
        evidence_truncated: r.get(21)?,
        assignee: r.get(22)?,
    })
}

/// Alerts of rows selected with [`ALERT_COLUMNS`].
fn alerts_of(rows: Vec<Row>) -> Result<Vec<Alert>> {
    rows.into_iter()
        .map(|mut r| row_to_raw(&mut r)?.into_alert())
        .collect()
}

/// (change number, alert) of rows selected with [`ALERT_COLUMNS`].
fn changes_of(rows: Vec<Row>) -> Result<Vec<(i64, Alert)>> {
    rows.into_iter()
        .map(|mut r| Ok((change_seq_of(&r)?, row_to_raw(&mut r)?.into_alert()?)))
        .collect()
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
            detected_at: self.created_at,
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
        let store = AlertStore::open_read_only(&DataDir::new(dir.path()))
            .unwrap()
            .unwrap();
        let Db::Sqlite(conn) = &store.db else {
            unreachable!("a SQLite store")
        };
        let v: i64 = conn
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
            let path = DataDir::new(dir.path());
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
