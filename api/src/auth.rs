//! API keys: random 160-bit secrets shown once at creation, stored only as a blake3 hash in
//! `DATA/auth.db`. The secrets are high-entropy, so a fast hash is as good as a slow one here
//! (nothing to brute-force), and verification costs microseconds per request.

use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::path::Path;
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
pub struct KeyStore {
    conn: Mutex<Connection>,
    /// When `last_used_at` was last written per key: it is refreshed at most once a minute,
    /// so authenticating a request is a read, not a disk write.
    last_written: Mutex<std::collections::HashMap<String, i64>>,
}

/// How stale `last_used_at` may be.
const LAST_USED_RESOLUTION_NS: i64 = 60_000_000_000;

const PREFIX: &str = "kvw_";

fn hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

fn now() -> i64 {
    kvwatch_ingest::store::now_nanos()
}

impl KeyStore {
    pub fn open(data: &Path) -> Result<KeyStore, AuthError> {
        std::fs::create_dir_all(data)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let conn = Connection::open(data.join("auth.db"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA busy_timeout=5000;
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
        Ok(KeyStore {
            conn: Mutex::new(conn),
            last_written: Mutex::new(Default::default()),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
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
        let r = self.conn().execute(
            "INSERT INTO api_keys (name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, role.as_str(), hash(&secret), now()],
        );
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
        let n = self.conn().execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
            params![name, now()],
        )?;
        if n == 0 {
            return Err(AuthError::NoSuchKey(name.to_owned()));
        }
        Ok(())
    }

    pub fn list(&self) -> Result<Vec<KeyInfo>, AuthError> {
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

    /// The active key a presented secret belongs to.
    pub fn verify(&self, secret: &str) -> Result<Option<(String, Role)>, AuthError> {
        if !secret.starts_with(PREFIX) {
            return Ok(None);
        }
        let conn = self.conn();
        let found: Option<(String, String)> = conn
            .query_row(
                "SELECT name, role FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL",
                params![hash(secret)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((name, role)) = found else {
            return Ok(None);
        };
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
        if due {
            conn.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE name = ?1",
                params![name, t],
            )?;
        }
        Ok(Some((name, Role::parse(&role)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_verify_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::open(dir.path()).unwrap();
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
}
