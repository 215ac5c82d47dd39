//! One leader among the nodes that share a PostgreSQL alert store.
//!
//! Every node serves the API and console and consumes its share of the Kafka partitions; the
//! work that must run once (detection passes and models, scheduled reports, sink forwarding)
//! runs on the node holding the lease ([`kvwatch_detect::store::lease`]). A standby tries to
//! take the lease every fifth of its lifetime; the leader renews it every third. A leader
//! that cannot renew before its lease would expire by its own clock stops its leader work,
//! and its stores, opened under the lease's epoch, refuse writes from then on whatever it
//! is still doing; so a paused leader, resumed, writes nothing.

use kvwatch_detect::store::lease::{Claim, Lease};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What `/metrics` shows of this node's part.
#[derive(Debug)]
pub struct LeaderStatus {
    /// This node's name in the lease.
    pub node: String,
    pub leading: AtomicBool,
    /// The epoch of this node's latest term (0: never led).
    pub epoch: AtomicI64,
    /// Terms this node began.
    pub terms: AtomicI64,
}

impl LeaderStatus {
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            leading: AtomicBool::new(false),
            epoch: AtomicI64::new(0),
            terms: AtomicI64::new(0),
        }
    }
}

/// This node's lease client and timing.
pub struct Leadership {
    lease: Arc<std::sync::Mutex<Lease>>,
    pub status: Arc<LeaderStatus>,
    ttl: Duration,
}

/// A default node name: host and process, unique among the nodes of one deployment.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".into());
    format!("{host}:{}", std::process::id())
}

impl Leadership {
    /// Connects the lease client of node `node` to the store at `url`.
    pub async fn new(
        url: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<Leadership, kvwatch_detect::AlertStoreError> {
        let (url, name) = (url.to_owned(), node.to_owned());
        let lease = tokio::task::spawn_blocking(move || Lease::new(&url, &name, ttl))
            .await
            .map_err(|e| kvwatch_detect::AlertStoreError::Copy(e.to_string()))??;
        Ok(Leadership {
            lease: Arc::new(std::sync::Mutex::new(lease)),
            status: Arc::new(LeaderStatus::new(node)),
            ttl,
        })
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Lease) -> Result<T, kvwatch_detect::AlertStoreError> + Send + 'static,
    ) -> Result<T, String> {
        let lease = self.lease.clone();
        let run = move || f(&lease.lock().unwrap_or_else(|p| p.into_inner()));
        match tokio::task::spawn_blocking(run).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits until this node holds the lease (or `stop`).
    pub async fn acquire(&self, stop: &CancellationToken) -> Option<Claim> {
        let every = self.ttl / 5;
        let mut logged = false;
        loop {
            match self.call(|l| l.try_acquire()).await {
                Ok(Some(claim)) => {
                    self.status.leading.store(true, Ordering::Release);
                    self.status.epoch.store(claim.epoch, Ordering::Release);
                    self.status.terms.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(node = %claim.holder, epoch = claim.epoch, "leader.acquired");
                    return Some(claim);
                }
                Ok(None) => {
                    if !logged {
                        if let Ok(Some((c, live))) = self.call(|l| l.current()).await {
                            tracing::info!(leader = %c.holder, epoch = c.epoch, live, "leader.standby");
                        }
                        logged = true;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "leader.acquire_failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// Renews `claim` until `term` is cancelled; cancels `term` itself when the lease is lost
    /// (taken over, or not renewed before it would expire by this node's clock).
    pub async fn keep(&self, claim: Claim, term: CancellationToken) {
        let every = self.ttl / 3;
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = term.cancelled() => return,
            }
            let c = claim.clone();
            let asked = Instant::now();
            match self.call(move |l| l.renew(&c)).await {
                Ok(true) => renewed = asked,
                Ok(false) => {
                    tracing::warn!(epoch = claim.epoch, "leader.lost");
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "leader.renew_failed"),
            }
            // Counted from the last renewal that was asked for before it succeeded, so this
            // node stops no later than the database's clock ends its lease.
            if renewed.elapsed() >= self.ttl {
                tracing::warn!(epoch = claim.epoch, "leader.expired");
                break;
            }
        }
        self.status.leading.store(false, Ordering::Release);
        term.cancel();
    }

    /// Marks this node a standby again, and gives the lease up when it is stopping.
    pub async fn end_term(&self, claim: Claim, stopping: bool) {
        self.status.leading.store(false, Ordering::Release);
        if stopping {
            let c = claim.clone();
            match self.call(move |l| l.release(&c)).await {
                Ok(()) => tracing::info!(epoch = claim.epoch, "leader.released"),
                Err(e) => tracing::warn!(error = %e, "leader.release_failed"),
            }
        }
    }
}
