//! The front door to everything kvwatch keeps: one handle for a data location that every
//! component takes, instead of a bare path each one re-opens.
//!
//! It hands out what the event store offers (manifest snapshots, a writer, query sessions,
//! the span of stored time) and names where the other stores live (the alert store, API keys,
//! reports, the models' state). Today all of it is a local directory; this is the seam where
//! another location (object storage) goes behind the same calls.

use crate::query;
use crate::schema::Table;
use crate::store::{MANIFEST, Manifest, Result, StoreWriter, WriteOptions, read_manifest};
use datafusion::prelude::SessionContext;
use std::path::{Path, PathBuf};

/// A data location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself (for messages, and for a worker process started on it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether an event store exists here (something has been ingested).
    pub fn has_events(&self) -> bool {
        self.root.join(MANIFEST).exists()
    }

    /// Changes whenever the store commits (the manifest is replaced by a rename, so its
    /// inode, size or modification time differ); `None` before the first commit. Cheap
    /// enough to poll many times a second, and it sees commits of other processes too.
    pub fn commit_stamp(&self) -> Option<(u64, u64, std::time::SystemTime)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(self.root.join(MANIFEST)).ok()?;
        Some((m.ino(), m.len(), m.modified().ok()?))
    }

    /// The event store's current manifest; an empty one when there is no store yet.
    pub fn snapshot(&self) -> Result<Manifest> {
        if self.has_events() {
            read_manifest(&self.root)
        } else {
            Ok(Manifest::default())
        }
    }

    /// The span of stored event time (audit events and activity), `[first, last]` in
    /// nanoseconds, from the manifest alone; `None` for an empty store.
    pub fn time_range(&self) -> Result<Option<(i64, i64)>> {
        Ok(self.snapshot()?.time_range())
    }

    /// The event store's writer (takes the store's lock).
    pub fn writer(&self, opts: WriteOptions) -> Result<StoreWriter> {
        StoreWriter::open(&self.root, opts)
    }

    /// A read-only query session over the current snapshot, with the compatibility views.
    pub async fn session(&self) -> Result<SessionContext> {
        let ctx = query::empty_context();
        self.register(&ctx).await?;
        Ok(ctx)
    }

    /// Registers the store's tables and views on an existing session.
    pub async fn register(&self, ctx: &SessionContext) -> Result<()> {
        query::register_manifest(ctx, &self.root, &self.snapshot()?).await
    }

    /// The alert store (SQLite).
    pub fn alerts_db(&self) -> PathBuf {
        self.root.join("alerts.db")
    }

    /// The API keys (SQLite).
    pub fn auth_db(&self) -> PathBuf {
        self.root.join("auth.db")
    }

    /// Stored reports and the scheduler's state.
    pub fn reports_dir(&self) -> PathBuf {
        self.root.join("reports")
    }

    /// The behavioural models' learned state.
    pub fn baselines(&self) -> PathBuf {
        self.root.join("baselines.json")
    }

    /// Creates the directory if needed (for stores created inside it).
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.root)
    }
}

impl Manifest {
    /// The store's watermark under `policy` at wall-clock `now` (see [`crate::watermark`]).
    pub fn watermark(
        &self,
        policy: &crate::watermark::WatermarkPolicy,
        now: i64,
    ) -> Option<crate::watermark::Watermark> {
        crate::watermark::watermark(&self.marks, self.time_range(), policy, now)
    }

    /// The span of event time of the audit events and activity this manifest lists.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        self.files(Table::Events)
            .iter()
            .chain(self.files(Table::Activity))
            .fold(None, |r, f| {
                Some(match r {
                    None => (f.min_time, f.max_time),
                    Some((a, b)) => (a.min(f.min_time), b.max(f.max_time)),
                })
            })
    }
}
