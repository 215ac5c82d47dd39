//! The front door to everything kvwatch keeps: one handle for a data location that every
//! component takes, instead of a bare path each one re-opens.
//!
//! It hands out what the event store offers (manifest snapshots, a writer, query sessions,
//! the span of stored time) and names where the other stores live (the alert store, API keys,
//! reports, the models' state). Today all of it is a local directory; this is the seam where
//! another location (object storage) goes behind the same calls.

use crate::location::{Location, LocationError, StorageOptions};
use crate::query;
use crate::schema::Table;
use crate::store::{
    MANIFEST, Manifest, Result, StoreError, StoreWriter, WriteOptions, read_manifest,
    read_remote_manifest,
};
use datafusion::prelude::SessionContext;
use std::path::{Path, PathBuf};

/// A data location: where the event store is (a directory or an object-store prefix) and the
/// local directory of this node's own state (alert store, API keys, reports, models' state,
/// staging of uploads), which is the store's directory when the store is local.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
    events: Location,
    options: StorageOptions,
    cache_bytes: u64,
    /// The alert store's database when it is a server shared by many nodes
    /// (`postgres://…`, secret references unresolved); `None`: SQLite in `root`.
    alerts: Option<DbUrl>,
    /// The leadership lease (holder, epoch) this handle's alert-store writes are made under.
    lease: Option<(String, i64)>,
}

/// A database URL whose `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
struct DbUrl(String);

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::secret::redact_url(&self.0))
    }
}

impl DataDir {
    /// A local data directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            events: Location::Local(root.clone()),
            root,
            options: StorageOptions::default(),
            cache_bytes: 0,
            alerts: None,
            lease: None,
        }
    }

    /// `spec` is a directory or an object-store URL (see [`Location::parse`]); `state` is the
    /// local directory for this node's own state, required with a URL (a directory's state
    /// lives in it).
    ///
    /// Reads of an object store go through a cache of its Parquet files under
    /// `state/cache`, at most `cache_bytes` (0: none).
    pub fn open(
        spec: &str,
        state: Option<PathBuf>,
        options: StorageOptions,
        cache_bytes: u64,
    ) -> Result<Self, LocationError> {
        if state.is_none() && crate::location::is_url(spec) && !spec.starts_with("file:") {
            return Err(LocationError::Url {
                url: spec.to_owned(),
                msg: "an object-store event store needs a local state directory (--state)".into(),
            });
        }
        let events = Location::parse(spec, &options)?;
        let root = match (&events, state) {
            (_, Some(s)) => s,
            (Location::Local(p), None) => p.clone(),
            (Location::Remote(r), None) => unreachable!("{} has a state directory", r.url),
        };
        if let Location::Remote(r) = &events {
            r.enable_cache(root.join("cache"), cache_bytes);
        }
        Ok(Self {
            root,
            events,
            options,
            cache_bytes,
            alerts: None,
            lease: None,
        })
    }

    /// The local directory of this node's state (the event store's own directory when it is
    /// local). For messages, and for a worker process started on it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the event store is.
    pub fn location(&self) -> &Location {
        &self.events
    }

    /// The storage options the location was opened with (handed to worker processes).
    pub fn options(&self) -> &StorageOptions {
        &self.options
    }

    /// The bound of this node's cache of the store's files (0: none).
    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes
    }

    /// The event store as the user named it (a path or a URL), for messages.
    pub fn display(&self) -> String {
        self.events.display()
    }

    /// Whether an event store exists here (something has been ingested).
    pub fn has_events(&self) -> bool {
        match &self.events {
            Location::Local(p) => p.join(MANIFEST).exists(),
            Location::Remote(r) => r.tag(MANIFEST).ok().flatten().is_some(),
        }
    }

    /// Changes whenever the store commits; `None` before the first commit. A directory's
    /// manifest is replaced by a rename, so its inode, size or modification time differ; an
    /// object's ETag changes with every put. Cheap enough to poll often, and it sees commits
    /// of other processes and nodes too.
    pub fn commit_stamp(&self) -> Option<String> {
        match &self.events {
            Location::Local(p) => {
                use std::os::unix::fs::MetadataExt;
                let m = std::fs::metadata(p.join(MANIFEST)).ok()?;
                Some(format!("{}-{}-{:?}", m.ino(), m.len(), m.modified().ok()?))
            }
            Location::Remote(r) => r.tag(MANIFEST).ok().flatten(),
        }
    }

    /// The event store's current manifest; an empty one when there is no store yet.
    pub fn snapshot(&self) -> Result<Manifest> {
        match &self.events {
            Location::Local(p) if p.join(MANIFEST).exists() => read_manifest(p),
            Location::Local(_) => Ok(Manifest::default()),
            Location::Remote(r) => Ok(read_remote_manifest(r)?.0),
        }
    }

    /// The span of stored event time (audit events and activity), `[first, last]` in
    /// nanoseconds, from the manifest alone; `None` for an empty store.
    pub fn time_range(&self) -> Result<Option<(i64, i64)>> {
        Ok(self.snapshot()?.time_range())
    }

    /// The event store's writer: a directory's only one (it takes the lock), or one of an
    /// object store's many (staging its uploads under the state directory).
    pub fn writer(&self, opts: WriteOptions) -> Result<StoreWriter> {
        match &self.events {
            Location::Local(p) => StoreWriter::open(p, opts),
            Location::Remote(r) => {
                let staging = self
                    .root
                    .join("staging")
                    .join(format!("{}", std::process::id()));
                StoreWriter::open_remote(r.clone(), &staging, opts)
            }
        }
    }

    /// A read-only query session over the current snapshot, with the compatibility views.
    pub async fn session(&self) -> Result<SessionContext> {
        let ctx = query::empty_context();
        self.register(&ctx).await?;
        Ok(ctx)
    }

    /// Registers the store's tables and views on an existing session.
    ///
    /// The tables of the last snapshot this process registered are kept and handed to the next
    /// session while the store has not committed since (its [`commit_stamp`](Self::commit_stamp)
    /// is unchanged): planning the compatibility view and building the file lists is then done
    /// once per commit instead of once per query. The stamp is read before the manifest, so a
    /// commit between the two only makes the kept tables newer than their stamp, never older.
    pub async fn register(&self, ctx: &SessionContext) -> Result<()> {
        let key = self
            .commit_stamp()
            .map(|stamp| format!("{}\n{stamp}", self.events.display()));
        if let Some(key) = &key
            && query::reuse_tables(ctx, &self.events, key)?
        {
            return Ok(());
        }
        query::register_manifest(ctx, &self.events, &self.snapshot()?).await?;
        if let Some(key) = key {
            query::keep_tables(ctx, key).await?;
        }
        Ok(())
    }

    /// The same location with its alert store in the database `url` (`postgres://…`) instead
    /// of SQLite in the state directory; `None` keeps SQLite.
    pub fn with_alerts(mut self, url: Option<String>) -> Self {
        self.alerts = url.filter(|u| !u.trim().is_empty()).map(DbUrl);
        self
    }

    /// The alert store's server database, when there is one (as configured: secret references
    /// unresolved, so it may be shown and passed on).
    pub fn alerts_url(&self) -> Option<&str> {
        self.alerts.as_ref().map(|u| u.0.as_str())
    }

    /// The same location, with alert-store writes made under leadership lease `epoch` of
    /// `holder`: each write transaction checks the lease is still held, and fails if not.
    pub fn with_lease(mut self, holder: &str, epoch: i64) -> Self {
        self.lease = Some((holder.to_owned(), epoch));
        self
    }

    /// The lease of [`with_lease`](Self::with_lease).
    pub fn lease(&self) -> Option<(&str, i64)> {
        self.lease.as_ref().map(|(h, e)| (h.as_str(), *e))
    }

    /// The alert store (SQLite) when [`alerts_url`](Self::alerts_url) names no server.
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

    /// Creates the state directory if needed (for stores created inside it).
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.root)
    }
}

impl From<LocationError> for StoreError {
    fn from(e: LocationError) -> Self {
        StoreError::Location(e.to_string())
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
