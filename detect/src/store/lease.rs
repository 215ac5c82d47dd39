//! Leadership of a deployment whose nodes share one PostgreSQL alert store: a lease row with
//! a holder, an epoch and an expiry in the database's clock. One node holds it at a time and
//! runs the work that must run once (detection passes, models, scheduled reports, sink
//! forwarding); it renews well before expiry, and a standby takes it over once it has
//! expired, with the next epoch.
//!
//! Fencing: a store opened under a lease ([`AlertStore::open`] with
//! [`DataDir::with_lease`](kvwatch_ingest::DataDir::with_lease)) checks in every write
//! transaction, with a share lock on the lease row, that the lease is still its own and
//! unexpired. A leader paused past its expiry and resumed therefore writes nothing: its
//! transactions fail with [`AlertStoreError::Fenced`]. And a standby's take-over waits for a
//! write transaction of the old leader that began in time to end, so it reads that write.

use super::Result;
use super::db::vals;
pub use super::db::{Claim, LEADER};

/// A connection for taking and renewing the lease.
pub struct Lease {
    db: super::db::Db,
    holder: String,
    ttl_ms: i64,
}

impl Lease {
    /// A lease client on the store at `url` for the node named `holder`; a lease lasts `ttl`
    /// from each renewal. Opens (and migrates) the store's schema.
    pub fn new(url: &str, holder: &str, ttl: std::time::Duration) -> Result<Lease> {
        Ok(Lease {
            db: super::pg::open(url)?,
            holder: holder.to_owned(),
            ttl_ms: ttl.as_millis().min(i64::MAX as u128) as i64,
        })
    }

    /// Takes the lease if nobody holds an unexpired one; the claim, with the new epoch.
    pub fn try_acquire(&self) -> Result<Option<Claim>> {
        let row = self.db.with(|db| {
            db.one(
                "INSERT INTO kvwatch_lease (name, holder, epoch, expires_ms)
                 VALUES (?1, ?2, 1, kvwatch_now_ms() + ?3)
                 ON CONFLICT (name) DO UPDATE SET holder = ?2, epoch = kvwatch_lease.epoch + 1,
                     expires_ms = kvwatch_now_ms() + ?3
                 WHERE kvwatch_lease.expires_ms < kvwatch_now_ms()
                 RETURNING epoch",
                vals![LEADER, &self.holder, self.ttl_ms],
            )
        })?;
        row.map(|r| {
            Ok(Claim {
                holder: self.holder.clone(),
                epoch: r.get(0)?,
            })
        })
        .transpose()
    }

    /// Extends `claim`'s lease by the lease time; false when it is no longer this node's
    /// (expired, or taken over).
    pub fn renew(&self, claim: &Claim) -> Result<bool> {
        let n = self.db.with(|db| {
            db.exec(
                "UPDATE kvwatch_lease SET expires_ms = kvwatch_now_ms() + ?3
                 WHERE name = ?4 AND holder = ?1 AND epoch = ?2 AND expires_ms >= kvwatch_now_ms()",
                vals![&claim.holder, claim.epoch, self.ttl_ms, LEADER],
            )
        })?;
        Ok(n == 1)
    }

    /// Gives the lease up at once (a node stopping), so a standby need not wait for expiry.
    pub fn release(&self, claim: &Claim) -> Result<()> {
        self.db.with(|db| {
            db.exec(
                "UPDATE kvwatch_lease SET expires_ms = 0 WHERE name = ?3 AND holder = ?1 AND epoch = ?2",
                vals![&claim.holder, claim.epoch, LEADER],
            )
        })?;
        Ok(())
    }

    /// The current holder and epoch, and whether the lease is unexpired.
    pub fn current(&self) -> Result<Option<(Claim, bool)>> {
        let row = self.db.with(|db| {
            db.one(
                "SELECT holder, epoch, expires_ms > kvwatch_now_ms() FROM kvwatch_lease WHERE name = ?1",
                vals![LEADER],
            )
        })?;
        row.map(|r| {
            Ok((
                Claim {
                    holder: r.get(0)?,
                    epoch: r.get(1)?,
                },
                r.get(2)?,
            ))
        })
        .transpose()
    }
}
