//! The server's shared state: the data directory, keys, the SQL pool, the disk's health, the
//! counters `/metrics` reports, and the pool of read-only alert-store connections that
//! handlers use off the async workers.

use crate::auth::KeyStore;
use crate::error::ApiError;
use crate::forward::SinkStatus;
use crate::health::DiskHealth;
use crate::sql::{PoolOptions, SqlLimits, SqlPool};
use kvwatch_detect::store::{AlertStore, AlertStoreError};
use kvwatch_ingest::DataDir;
use kvwatch_ingest::kafka::Metrics as KafkaMetrics;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Shared state of the server.
pub struct ApiState {
    pub data: DataDir,
    pub keys: KeyStore,
    /// The Kafka consumer's counters, when this process runs one.
    pub kafka: Option<Arc<KafkaMetrics>>,
    /// The rules this service evaluates, as `Rule::detail` documents.
    pub rules: Vec<serde_json::Value>,
    /// The detection loop's counters, when this process runs one.
    pub detect: Option<Arc<kvwatch_detect::run::PassMetrics>>,
    /// The push forwarders this process runs.
    pub sinks: Vec<Arc<SinkStatus>>,
    /// Bounds of analyst SQL.
    pub sql_limits: SqlLimits,
    /// The worker processes analyst SQL runs in.
    pub sql: Arc<SqlPool>,
    /// Whether the data directory takes writes.
    pub disk: Arc<DiskHealth>,
    /// Signed-in console sessions.
    pub sessions: crate::session::Sessions,
    /// This node's part in leadership, when nodes share a PostgreSQL alert store.
    pub leader: Option<Arc<crate::leader::LeaderStatus>>,
    pub(crate) requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub(crate) denied: AtomicU64,
    /// Idle read-only alert-store connections, reused across requests.
    readers: Mutex<Vec<(u64, AlertStore)>>,
    /// Generation of the pooled readers: connections of an older generation are closed when
    /// they come back. Bumped when the disk takes writes again, because SQLite shares one
    /// shared-memory index per file among a process's connections, and one opened while the
    /// disk was read-only would keep every new connection read-only.
    reader_generation: AtomicU64,
    /// Alert-store reads running at once. Reads are CPU-bound: with one blocking thread per
    /// request, 50 clients time-sliced 50 reads over two cores (and opened a connection for
    /// every read beyond the pool), so every page took as long as the slowest; queued in
    /// order, each waits only for those ahead of it.
    read_slots: Arc<tokio::sync::Semaphore>,
}

/// Concurrent alert-store reads: twice the cores (a read also waits on the page cache).
fn read_slot_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .clamp(2, READER_POOL)
}

/// Idle connections kept for reuse; at least as many as reads may run at once.
const READER_POOL: usize = 16;

impl ApiState {
    /// State for `data` with the default SQL pool (workers started from this executable)
    /// and a disk prober that wants `min_free` bytes free.
    pub fn new(
        data: DataDir,
        keys: KeyStore,
        kafka: Option<Arc<KafkaMetrics>>,
        pool: PoolOptions,
        min_free: u64,
    ) -> Self {
        Self {
            sql: SqlPool::new(pool),
            disk: Arc::new(DiskHealth::new(data.root().to_owned(), min_free)),
            data,
            keys,
            sessions: crate::session::Sessions::default(),
            leader: None,
            kafka,
            rules: Vec::new(),
            detect: None,
            sinks: Vec::new(),
            sql_limits: SqlLimits::default(),
            requests: Mutex::new(BTreeMap::new()),
            denied: AtomicU64::new(0),
            readers: Mutex::new(Vec::new()),
            reader_generation: AtomicU64::new(0),
            read_slots: Arc::new(tokio::sync::Semaphore::new(read_slot_count())),
        }
    }

    /// Runs `f` on a pooled read-only alert-store connection, off the async workers.
    /// `Ok(None)`: there is no alert store yet.
    pub(crate) async fn read_alerts<T, F>(self: &Arc<Self>, f: F) -> Result<Option<T>, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&AlertStore) -> Result<T, AlertStoreError> + Send + 'static,
    {
        let s = self.clone();
        let slot = self.read_slots.clone().acquire_owned().await;
        let r = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let generation = s.reader_generation.load(Ordering::Acquire);
            let pooled = s.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let store = match pooled {
                Some((g, st)) if g == generation => st,
                _ => match AlertStore::open_read_only(&s.data)? {
                    Some(st) => st,
                    None => return Ok(None),
                },
            };
            let out = f(&store);
            let mut pool = s.readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < READER_POOL && s.reader_generation.load(Ordering::Acquire) == generation
            {
                pool.push((generation, store));
            }
            out.map(Some)
        })
        .await?;
        Ok(r?)
    }

    /// Runs `f` on a read-write alert-store connection, off the async workers. A write the
    /// disk refuses marks the disk (`/readyz`) and answers 503.
    pub(crate) async fn write_alerts<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: Fn(&AlertStore) -> Result<T, AlertStoreError> + Send + 'static,
    {
        let s = self.clone();
        let r = tokio::task::spawn_blocking(move || {
            let first = f_once(&s.data, &f);
            match first {
                // The disk may take writes again while connections opened when it did not are
                // still pooled: close them and try once more.
                Err(AlertStoreError::Sql(ref e))
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) =>
                {
                    s.reader_generation.fetch_add(1, Ordering::AcqRel);
                    s.readers.lock().unwrap_or_else(|p| p.into_inner()).clear();
                    f_once(&s.data, &f)
                }
                other => other,
            }
        })
        .await?;
        if let Err(AlertStoreError::Sql(e)) = &r
            && crate::error::is_disk_refusal(e)
        {
            self.disk.write_failed("the alert store", e);
        }
        Ok(r?)
    }
}

/// Opens the alert store for writing and runs `f` on it.
fn f_once<T>(
    data: &DataDir,
    f: &impl Fn(&AlertStore) -> Result<T, AlertStoreError>,
) -> Result<T, AlertStoreError> {
    f(&AlertStore::open(data)?)
}

pub type Shared = Arc<ApiState>;

/// The caller, put into request extensions by the auth layer.
#[derive(Clone)]
pub struct Caller {
    pub name: String,
}
