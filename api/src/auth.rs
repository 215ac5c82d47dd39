//! API keys: random 160-bit secrets shown once at creation, stored only as a blake3 hash in
//! `DATA/auth.db`, or in the shared PostgreSQL alert store when nodes share one (a key made
//! on any node works on every node). The secrets are high-entropy, so a fast hash is as good as a slow one here
//! (nothing to brute-force), and verification costs microseconds per request.

use kvwatch_detect::store::db::{Db, Val};
use kvwatch_ingest::DataDir;
use rand::RngCore;
use rusqlite::{Connection, params};
use serde::Serialize;
use std::sync::Mutex;

/// What a key may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Alerts, reports, metrics.
    Reader,
    /// + alert updates and SQL.
    Analyst,
    /// + keys, rules and configuration.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Role, AuthError> {
        match s {
            "reader" => Ok(Role::Reader),
            "analyst" => Ok(Role::Analyst),
            "admin" => Ok(Role::Admin),
            other => Err(AuthError::BadRole(other.to_owned())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("key store: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("key store: {0}")]
    Shared(#[from] kvwatch_detect::AlertStoreError),
    #[error("unknown role {0:?} (reader, analyst or admin)")]
    BadRole(String),
    #[error("a key named {0:?} already exists")]
    Exists(String),
    #[error("no active key named {0:?}")]
    NoSuchKey(String),
    #[error("key names are 1-64 characters of letters, digits, '-', '_' and '.'")]
    BadName,
}

/// A key as listed: never its secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub name: String,
    pub role: Role,
    /// Nanoseconds since the Unix epoch.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// Refreshed at most once a minute.
    pub last_used_at: Option<i64>,
}

/// The key store (`DATA/auth.db`).
///
/// Active keys are also held in memory, so that authenticating a request needs no disk at
/// all: a full or read-only disk does not lock anyone out. The copy is refreshed whenever
/// the database changed (`PRAGMA data_version` tells of other processes' commits, e.g.
/// `kvwatch apikey revoke`; this process's own changes reset it), so revocation still takes
/// effect at the next request.
pub struct KeyStore {
    data: DataDir,
    conn: Mutex<Connection>,
    /// The shared database, when the alert store is PostgreSQL (then `conn` is unused).
    shared: Option<Mutex<Db>>,
    cache: Mutex<KeyCache>,
    /// When `last_used_at` was last written per key: it is refreshed at most once a minute,
    /// so authenticating a request is a read, not a disk write.
    last_written: Mutex<std::collections::HashMap<String, i64>>,
}

/// Active keys by hash, as of a database version.
#[derive(Default)]
struct KeyCache {
    /// `PRAGMA data_version` when loaded (on PostgreSQL: the count of keys and the latest
    /// creation or revocation); `None` forces a reload.
    version: Option<(i64, i64)>,
    by_hash: std::collections::HashMap<String, (String, Role)>,
}

/// How stale `last_used_at` may be.
const LAST_USED_RESOLUTION_NS: i64 = 60_000_000_000;

const PREFIX: &str = "kvw_";

/// The stored form of a key secret (also of console session IDs).
pub fn hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

fn now() -> i64 {
    kvwatch_ingest::store::now_nanos()
}

impl KeyStore {
    pub fn open(data: &DataDir) -> Result<KeyStore, AuthError> {
        if let Some(url) = data.alerts_url() {
            return Ok(KeyStore {
                data: data.clone(),
                conn: Mutex::new(Connection::open_in_memory()?),
                shared: Some(Mutex::new(kvwatch_detect::store::pg::open(url)?)),
                cache: Mutex::new(KeyCache::default()),
                last_written: Mutex::new(Default::default()),
            });
        }
        let conn = Self::connect(data)?;
        Ok(KeyStore {
            data: data.clone(),
            conn: Mutex::new(conn),
            shared: None,
            cache: Mutex::new(KeyCache::default()),
            last_written: Mutex::new(Default::default()),
        })
    }

    /// A connection to `auth.db`, creating it if needed. On a disk that refuses writes SQLite
    /// opens the existing database read-only, and keys can still be checked.
    fn connect(data: &DataDir) -> Result<Connection, AuthError> {
        let path = data.auth_db();
        if !path.exists() {
            data.create()
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        }
        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        kvwatch_detect::store::persist_wal(&conn);
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            tracing::warn!("auth.key_store_read_only");
            return Ok(conn);
        }
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS api_keys (
                 name TEXT PRIMARY KEY,
                 role TEXT NOT NULL,
                 hash TEXT NOT NULL UNIQUE,
                 created_at INTEGER NOT NULL,
                 revoked_at INTEGER,
                 last_used_at INTEGER
             );",
        )?;
        Ok(conn)
    }

    /// The connection, for a write: one opened read-only (the disk refused writes when it was
    /// opened) is replaced by a new one if the disk takes writes again.
    fn writable(&self) -> Result<std::sync::MutexGuard<'_, Connection>, AuthError> {
        let mut conn = self.conn();
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            // SQLite shares a file's shared-memory index among the connections of a process;
            // the read-only one must be closed before a writable one can be had.
            *conn = Connection::open_in_memory()?;
            let fresh = Self::connect(&self.data)?;
            if fresh.is_readonly(rusqlite::MAIN_DB)? {
                *conn = fresh;
                self.invalidate();
                return Err(AuthError::Db(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                    Some("the key store is on a disk that refuses writes".into()),
                )));
            }
            *conn = fresh;
            self.invalidate();
        }
        Ok(conn)
    }

    /// The shared database, when keys live there.
    fn shared(&self) -> Option<std::sync::MutexGuard<'_, Db>> {
        self.shared
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the in-memory copy after a change made through this store.
    fn invalidate(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).version = None;
    }

    /// Creates a key and returns its secret, which is not stored and cannot be shown again.
    pub fn create(&self, name: &str, role: Role) -> Result<String, AuthError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(AuthError::BadName);
        }
        let mut raw = [0u8; 20];
        rand::rng().fill_bytes(&mut raw);
        let secret = format!(
            "{PREFIX}{}",
            raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        if let Some(db) = self.shared() {
            let n = db.with(|s| {
                s.exec(
                    "INSERT INTO api_keys (name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (name) DO NOTHING",
                    &[
                        Val::from(name),
                        Val::from(role.as_str()),
                        Val::from(hash(&secret)),
                        Val::Int(now()),
                    ],
                )
            })?;
            self.invalidate();
            return if n == 1 {
                Ok(secret)
            } else {
                Err(AuthError::Exists(name.to_owned()))
            };
        }
        let r = self.writable()?.execute(
            "INSERT INTO api_keys (name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, role.as_str(), hash(&secret), now()],
        );
        self.invalidate();
        match r {
            Ok(_) => Ok(secret),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(AuthError::Exists(name.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn revoke(&self, name: &str) -> Result<(), AuthError> {
        const REVOKE: &str =
            "UPDATE api_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL";
        let n = match self.shared() {
            Some(db) => db.with(|s| s.exec(REVOKE, &[Val::from(name), Val::Int(now())]))? as usize,
            None => self.writable()?.execute(REVOKE, params![name, now()])?,
        };
        self.invalidate();
        if n == 0 {
            return Err(AuthError::NoSuchKey(name.to_owned()));
        }
        Ok(())
    }

    pub fn list(&self) -> Result<Vec<KeyInfo>, AuthError> {
        if let Some(db) = self.shared() {
            let rows = db.with(|s| {
                s.query(
                    "SELECT name, role, created_at, revoked_at, last_used_at FROM api_keys ORDER BY name",
                    &[],
                )
            })?;
            return rows
                .iter()
                .map(|r| {
                    Ok(KeyInfo {
                        name: r.get(0)?,
                        role: Role::parse(&r.get::<String>(1)?)?,
                        created_at: r.get(2)?,
                        revoked_at: r.get(3)?,
                        last_used_at: r.get(4)?,
                    })
                })
                .collect();
        }
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT name, role, created_at, revoked_at, last_used_at FROM api_keys ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, role, created_at, revoked_at, last_used_at) = row?;
            out.push(KeyInfo {
                name,
                role: Role::parse(&role)?,
                created_at,
                revoked_at,
                last_used_at,
            });
        }
        Ok(out)
    }

    /// The active key with this hash (a console session holds the hash of the key it was
    /// opened with, so revoking the key ends its sessions at their next request).
    pub fn active(&self, key_hash: &str) -> Result<Option<(String, Role)>, AuthError> {
        let conn = self.conn();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let shared = self.shared();
        let version = match &shared {
            Some(db) => shared_version(db).ok(),
            None => conn
                .pragma_query_value(None, "data_version", |r| r.get::<_, i64>(0))
                .ok()
                .map(|v| (v, 0)),
        };
        if version.is_none() || cache.version != version {
            let loaded = match &shared {
                Some(db) => load_shared(db),
                None => load_active(&conn),
            };
            match loaded {
                Ok(by_hash) => {
                    cache.by_hash = by_hash;
                    cache.version = version;
                }
                // Keep answering from the last copy; with no copy at all, say so.
                Err(e) if cache.version.is_none() && cache.by_hash.is_empty() => {
                    return Err(e);
                }
                Err(e) => tracing::warn!(error = %e, "auth.key_reload_failed"),
            }
        }
        Ok(cache.by_hash.get(key_hash).cloned())
    }

    /// The active key a presented secret belongs to. Answers from memory when the database
    /// cannot be read; `last_used_at` is refreshed best-effort (a disk that refuses the write
    /// does not refuse the caller).
    pub fn verify(&self, secret: &str) -> Result<Option<(String, Role)>, AuthError> {
        if !secret.starts_with(PREFIX) {
            return Ok(None);
        }
        let Some((name, role)) = self.active(&hash(secret))? else {
            return Ok(None);
        };
        let conn = self.conn();
        let t = now();
        let due = {
            let mut seen = self.last_written.lock().unwrap_or_else(|p| p.into_inner());
            let last = seen.entry(name.clone()).or_insert(i64::MIN);
            let due = t.saturating_sub(*last) >= LAST_USED_RESOLUTION_NS;
            if due {
                *last = t;
            }
            due
        };
        if due && let Some(db) = self.shared() {
            let written = db.with(|s| {
                s.exec(
                    "UPDATE api_keys SET last_used_at = ?2 WHERE name = ?1",
                    &[Val::from(&name), Val::Int(t)],
                )
            });
            if let Err(e) = written {
                tracing::warn!(key = %name, error = %e, "auth.last_used_not_recorded");
            }
        } else if due && !conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            let written = conn.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE name = ?1",
                params![name, t],
            );
            if let Err(e) = written {
                tracing::warn!(key = %name, error = %e, "auth.last_used_not_recorded");
            }
        }
        Ok(Some((name, role)))
    }
}

/// A stored key: name, role, hash, created, revoked, last used.
type KeyRow = (String, String, String, i64, Option<i64>, Option<i64>);

impl KeyStore {
    /// Copies every key of this (SQLite) store, revoked ones included, into `dest` (the
    /// shared database), for `kvwatch alerts migrate`; keys `dest` already has by name are
    /// left as they are. Returns how many were copied.
    pub fn copy_into(&self, dest: &KeyStore) -> Result<usize, AuthError> {
        let Some(db) = dest.shared() else {
            return Err(AuthError::Shared(kvwatch_detect::AlertStoreError::Copy(
                "keys are copied into a shared database".into(),
            )));
        };
        let rows: Vec<KeyRow> = {
            let conn = self.conn();
            let mut st = conn.prepare(
                "SELECT name, role, hash, created_at, revoked_at, last_used_at FROM api_keys ORDER BY name",
            )?;
            st.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        let mut copied = 0;
        db.tx(|s| {
            for (name, role, h, created, revoked, used) in &rows {
                copied += s.exec(
                    "INSERT INTO api_keys (name, role, hash, created_at, revoked_at, last_used_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                    &[
                        Val::from(name),
                        Val::from(role),
                        Val::from(h),
                        Val::Int(*created),
                        Val::from(*revoked),
                        Val::from(*used),
                    ],
                )? as usize;
            }
            Ok(())
        })?;
        dest.invalidate();
        Ok(copied)
    }
}

/// What changes when a key is created or revoked anywhere.
fn shared_version(db: &Db) -> Result<(i64, i64), AuthError> {
    let row = db.with(|s| {
        s.one(
            "SELECT count(*), coalesce(max(greatest(created_at, coalesce(revoked_at, 0))), 0) FROM api_keys",
            &[],
        )
    })?;
    match row {
        Some(r) => Ok((r.get(0)?, r.get(1)?)),
        None => Ok((0, 0)),
    }
}

/// The active keys by hash, from the shared database.
fn load_shared(db: &Db) -> Result<std::collections::HashMap<String, (String, Role)>, AuthError> {
    let rows = db.with(|s| {
        s.query(
            "SELECT hash, name, role FROM api_keys WHERE revoked_at IS NULL",
            &[],
        )
    })?;
    rows.iter()
        .map(|r| Ok((r.get(0)?, (r.get(1)?, Role::parse(&r.get::<String>(2)?)?))))
        .collect()
}

/// The active keys by hash.
fn load_active(
    conn: &Connection,
) -> Result<std::collections::HashMap<String, (String, Role)>, AuthError> {
    let mut st =
        conn.prepare_cached("SELECT hash, name, role FROM api_keys WHERE revoked_at IS NULL")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = std::collections::HashMap::new();
    for row in rows {
        let (h, name, role) = row?;
        out.insert(h, (name, Role::parse(&role)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_verify_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::open(&DataDir::new(dir.path())).unwrap();
        let k = ks.create("soc-1", Role::Analyst).unwrap();
        assert!(k.starts_with("kvw_") && k.len() == 44);
        assert_eq!(
            ks.verify(&k).unwrap(),
            Some(("soc-1".into(), Role::Analyst))
        );
        assert_eq!(ks.verify("kvw_0000").unwrap(), None);
        assert!(matches!(
            ks.create("soc-1", Role::Reader),
            Err(AuthError::Exists(_))
        ));
        assert!(matches!(
            ks.create("bad name", Role::Reader),
            Err(AuthError::BadName)
        ));
        ks.revoke("soc-1").unwrap();
        assert_eq!(ks.verify(&k).unwrap(), None);
        assert!(ks.revoke("soc-1").is_err());
        let listed = ks.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].revoked_at.is_some());
        // The secret itself is nowhere in the database.
        let raw = std::fs::read(dir.path().join("auth.db")).unwrap();
        assert!(!raw.windows(k.len()).any(|w| w == k.as_bytes()));
        assert!(Role::Reader < Role::Analyst && Role::Analyst < Role::Admin);
    }

    #[test]
    fn another_process_revoking_a_key_is_seen_at_the_next_request() {
        let dir = tempfile::tempdir().unwrap();
        let server = KeyStore::open(&DataDir::new(dir.path())).unwrap();
        let k = server.create("soc-2", Role::Reader).unwrap();
        assert!(server.verify(&k).unwrap().is_some());
        // `kvwatch apikey revoke` in another process: another connection commits.
        KeyStore::open(&DataDir::new(dir.path()))
            .unwrap()
            .revoke("soc-2")
            .unwrap();
        assert_eq!(server.verify(&k).unwrap(), None);
        let k2 = KeyStore::open(&DataDir::new(dir.path()))
            .unwrap()
            .create("soc-3", Role::Admin)
            .unwrap();
        assert_eq!(
            server.verify(&k2).unwrap(),
            Some(("soc-3".into(), Role::Admin))
        );
    }
}
