//! Console sessions: a random 256-bit ID in an HttpOnly, SameSite=Strict cookie, kept here
//! only as its hash, with the hash of the API key it was opened with (so revoking the key
//! ends the session at its next request), a per-session CSRF token, and idle and absolute
//! expiry. Sessions live in the server's memory (a restart signs everyone out), or, when the
//! nodes of a deployment share a PostgreSQL alert store, in that database: a session opened
//! through one node works on every node behind the load balancer.

use crate::auth::{KeyStore, Role, hash};
use kvwatch_detect::store::db::{Db, Row, Val};
use rand::RngCore;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The cookie's name.
pub const COOKIE: &str = "kvw_session";

/// A signed-in analyst, as a request sees it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The API key's name: what the audit trail records.
    pub name: String,
    pub role: Role,
    /// Sent back in every state-changing form.
    pub csrf: String,
}

struct Entry {
    key_hash: String,
    csrf: String,
    created: i64,
    last_seen: i64,
}

/// The live sessions.
pub struct Sessions {
    by_hash: Mutex<HashMap<String, Entry>>,
    /// The shared database, when sessions live there (then `by_hash` is unused).
    shared: Option<Mutex<Db>>,
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub absolute: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(Duration::from_secs(3600), Duration::from_secs(12 * 3600))
    }
}

fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal strings, compared in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Sessions {
    pub fn new(idle: Duration, absolute: Duration) -> Self {
        Self {
            by_hash: Mutex::new(HashMap::new()),
            shared: None,
            idle,
            absolute,
        }
    }

    /// Sessions kept in the shared database `db` (the PostgreSQL alert store).
    pub fn shared(db: Db, idle: Duration, absolute: Duration) -> Self {
        Self {
            shared: Some(Mutex::new(db)),
            ..Self::new(idle, absolute)
        }
    }

    fn db(&self) -> Option<std::sync::MutexGuard<'_, Db>> {
        self.shared
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The oldest `last_seen` and `created` a live session may have at `now`.
    fn horizon(&self, now: i64) -> (Val, Val) {
        (
            Val::Int(now.saturating_sub(self.idle.as_nanos() as i64)),
            Val::Int(now.saturating_sub(self.absolute.as_nanos() as i64)),
        )
    }

    /// Runs `f` on the shared database; a failure is logged and reads as "no session".
    fn on_db<T>(
        &self,
        db: &Db,
        what: &str,
        f: impl FnOnce(
            &mut dyn kvwatch_detect::store::db::Sql,
        ) -> Result<T, kvwatch_detect::AlertStoreError>,
    ) -> Option<T> {
        match db.with(f) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, what, "console.session_store_failed");
                None
            }
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.by_hash.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for an API key secret the key store accepts: the cookie value and the
    /// session, or `None` for an unknown or revoked key.
    pub fn open(
        &self,
        keys: &KeyStore,
        secret: &str,
        now: i64,
    ) -> Result<Option<(String, Session)>, crate::auth::AuthError> {
        let Some((name, role)) = keys.verify(secret.trim())? else {
            return Ok(None);
        };
        let id = random_hex(32);
        let csrf = random_hex(32);
        if let Some(db) = self.db() {
            let (seen, made) = self.horizon(now);
            let stored = db.with(|s| {
                s.exec(
                    "DELETE FROM console_sessions WHERE last_seen < ?1 OR created < ?2",
                    &[seen, made],
                )?;
                s.exec(
                    "INSERT INTO console_sessions (id_hash, key_hash, csrf, created, last_seen) \
                     VALUES (?1, ?2, ?3, ?4, ?4)",
                    &[
                        Val::from(hash(&id)),
                        Val::from(hash(secret.trim())),
                        Val::from(&csrf),
                        Val::Int(now),
                    ],
                )
            });
            stored.map_err(crate::auth::AuthError::Shared)?;
            return Ok(Some((id, Session { name, role, csrf })));
        }
        let mut map = self.map();
        self.expire(&mut map, now);
        map.insert(
            hash(&id),
            Entry {
                key_hash: hash(secret.trim()),
                csrf: csrf.clone(),
                created: now,
                last_seen: now,
            },
        );
        Ok(Some((id, Session { name, role, csrf })))
    }

    /// The session of a cookie value, refreshed; `None` when unknown, expired, or its key
    /// was revoked.
    pub fn get(&self, keys: &KeyStore, id: &str, now: i64) -> Option<Session> {
        let h = hash(id);
        let (key_hash, csrf) = if let Some(db) = self.db() {
            let row: Row = self
                .on_db(&db, "read", |s| {
                    s.one(
                        "SELECT key_hash, csrf, created, last_seen FROM console_sessions WHERE id_hash = ?1",
                        &[Val::from(&h)],
                    )
                })
                .flatten()?;
            let e = Entry {
                key_hash: row.get(0).ok()?,
                csrf: row.get(1).ok()?,
                created: row.get(2).ok()?,
                last_seen: row.get(3).ok()?,
            };
            if self.expired(&e, now) {
                self.on_db(&db, "expire", |s| {
                    s.exec(
                        "DELETE FROM console_sessions WHERE id_hash = ?1",
                        &[Val::from(&h)],
                    )
                });
                return None;
            }
            // `last_seen` is written at most every few seconds: a page's requests are reads.
            if now.saturating_sub(e.last_seen) > 5_000_000_000 {
                self.on_db(&db, "refresh", |s| {
                    s.exec(
                        "UPDATE console_sessions SET last_seen = ?2 WHERE id_hash = ?1",
                        &[Val::from(&h), Val::Int(now)],
                    )
                });
            }
            (e.key_hash, e.csrf)
        } else {
            let mut map = self.map();
            let e = map.get_mut(&h)?;
            if self.expired(e, now) {
                map.remove(&h);
                return None;
            }
            e.last_seen = now;
            (e.key_hash.clone(), e.csrf.clone())
        };
        match keys.active(&key_hash) {
            Ok(Some((name, role))) => Some(Session { name, role, csrf }),
            Ok(None) => {
                self.close_hash(&h);
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "console.key_store_unreadable");
                None
            }
        }
    }

    /// Ends a session (sign-out).
    pub fn close(&self, id: &str) {
        self.close_hash(&hash(id));
    }

    fn close_hash(&self, h: &str) {
        match self.db() {
            Some(db) => {
                self.on_db(&db, "close", |s| {
                    s.exec(
                        "DELETE FROM console_sessions WHERE id_hash = ?1",
                        &[Val::from(h)],
                    )
                });
            }
            None => {
                self.map().remove(h);
            }
        }
    }

    /// Sessions alive now.
    pub fn count(&self, now: i64) -> usize {
        if let Some(db) = self.db() {
            let (seen, made) = self.horizon(now);
            let n = self.on_db(&db, "count", |s| {
                s.one(
                    "SELECT count(*) FROM console_sessions WHERE last_seen >= ?1 AND created >= ?2",
                    &[seen, made],
                )?
                .map_or(Ok(0), |r| r.get::<i64>(0))
            });
            return n.unwrap_or(0) as usize;
        }
        let mut map = self.map();
        self.expire(&mut map, now);
        map.len()
    }

    fn expired(&self, e: &Entry, now: i64) -> bool {
        now.saturating_sub(e.last_seen) > self.idle.as_nanos() as i64
            || now.saturating_sub(e.created) > self.absolute.as_nanos() as i64
    }

    fn expire(&self, map: &mut HashMap<String, Entry>, now: i64) {
        map.retain(|_, e| !self.expired(e, now));
    }
}

#[cfg(test)]
#[path = "../../detect/src/store/testpg.rs"]
mod testpg;

#[cfg(test)]
mod tests {
    use super::*;
    use kvwatch_ingest::DataDir;

    #[test]
    fn sessions_expire_end_with_their_key_and_store_no_id() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::open(&DataDir::new(dir.path())).unwrap();
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(600));
        sessions_behave(&keys, &s);
    }

    /// The same, with keys and sessions in a shared PostgreSQL database: a session opened
    /// through one node's store is seen by another's.
    #[test]
    fn shared_sessions_work_across_nodes() {
        let pg = super::testpg::PgServer::start();
        let url = pg.create_db("sessions");
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path()).with_alerts(Some(url.clone()));
        let keys = KeyStore::open(&data).unwrap();
        let (idle, max) = (Duration::from_secs(60), Duration::from_secs(600));
        let open = || Sessions::shared(kvwatch_detect::store::pg::open(&url).unwrap(), idle, max);
        let (a, b) = (open(), open());
        sessions_behave(&keys, &a);
        let k = keys.create("soc-x", Role::Reader).unwrap();
        let (id, _) = a.open(&keys, &k, 0).unwrap().unwrap();
        let other_node = KeyStore::open(&data).unwrap();
        assert_eq!(
            b.get(&other_node, &id, 1).map(|s| s.name),
            Some("soc-x".into())
        );
        assert_eq!(b.count(1), a.count(1));
        b.close(&id);
        assert!(a.get(&keys, &id, 2).is_none(), "signed out everywhere");
        assert!(
            !pg.psql(
                "sessions",
                "SELECT string_agg(id_hash, ',') FROM console_sessions"
            )
            .contains(&id),
            "the ID itself is not kept"
        );
    }

    fn sessions_behave(keys: &KeyStore, s: &Sessions) {
        let k = keys.create("soc", Role::Analyst).unwrap();
        let sec = 1_000_000_000i64;
        assert!(s.open(keys, "kvw_nope", 0).unwrap().is_none());
        let (id, sess) = s.open(keys, &k, 0).unwrap().unwrap();
        assert_eq!((sess.name.as_str(), sess.role), ("soc", Role::Analyst));
        assert_eq!(id.len(), 64);
        assert!(!s.map().contains_key(&id), "the ID itself is not kept");
        // Used every 50 s it stays; idle for 61 s it ends.
        for t in 1..=10 {
            assert!(s.get(keys, &id, t * 50 * sec).is_some());
        }
        assert!(s.get(keys, &id, 500 * sec + 61 * sec).is_none());
        // The absolute limit holds however busy the session is.
        let (id, _) = s.open(keys, &k, 0).unwrap().unwrap();
        let mut t = 0;
        while t < 600 * sec {
            t += 30 * sec;
            assert!(s.get(keys, &id, t).is_some());
        }
        assert!(s.get(keys, &id, t + 30 * sec).is_none());
        // Revoking the key ends its sessions; signing out ends one.
        let (a, _) = s.open(keys, &k, 0).unwrap().unwrap();
        let k2 = keys.create("soc2", Role::Reader).unwrap();
        let (b, _) = s.open(keys, &k2, 0).unwrap().unwrap();
        keys.revoke("soc").unwrap();
        assert!(s.get(keys, &a, sec).is_none());
        assert!(s.get(keys, &b, sec).is_some());
        s.close(&b);
        assert!(s.get(keys, &b, sec).is_none());
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
