//! The Parquet event store.
//!
//! Layout under the data directory:
//!
//! ```text
//! manifest.json                         the list of live files + source checkpoints (the truth)
//! LOCK                                  held by the single writer
//! events/date=YYYY-MM-DD/*.parquet      audit events, zstd, each file sorted by `time`
//! activity/date=YYYY-MM-DD/*.parquet    Activity Log records
//! quarantine/date=YYYY-MM-DD/*.parquet  inputs that could not be stored, with reasons
//! ```
//!
//! The same layout under an object-store prefix (`--data az://…`), without `LOCK`: many
//! writers share it, each naming its files with its own writer ID, and replace the manifest
//! only if it is still the version they read (see [`StoreWriter::open_remote`]).
//!
//! Invariants:
//! * A file is visible to queries only once `manifest.json` lists it. Files are written to a
//!   temporary name, fsynced and renamed (uploaded, in an object store); the manifest is
//!   replaced atomically the same way (a conditional put). A crash at any point leaves the
//!   previous manifest intact; files it does not list are orphans, deleted when the next
//!   writer opens a directory, or by housekeeping in an object store.
//! * Source checkpoints (Kafka offsets, …) are stored in the same manifest commit as the files
//!   holding the rows they cover, so data and position can never disagree.
//! * No two live rows of a table share an ID (`event_id`, `quarantine_id`): appends are checked
//!   against the IDs already stored in the partition (the whole table for quarantine).

use crate::schema::Table;
use crate::time::date_of_ns;
use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, PrimitiveArray, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::{filter_record_batch, interleave_record_batch, take_record_batch};
use datafusion::arrow::datatypes::TimestampNanosecondType;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::metadata::SortingColumn;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::location::{Location, Remote};
use object_store::UpdateVersion;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: corrupt manifest: {msg}")]
    Manifest { path: PathBuf, msg: String },
    #[error("another kvwatch process is writing to {0} (lock held)")]
    Locked(PathBuf),
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("invalid batch for table {table}: {msg}")]
    Batch { table: &'static str, msg: String },
    #[error("object store {url}: {source}")]
    Remote {
        url: String,
        #[source]
        source: object_store::Error,
    },
    /// Another writer stored rows of a source this commit also covers (a Kafka partition that
    /// moved to another node while this one still held a batch of it): nothing was published.
    #[error(
        "{source_key}: another writer already stored up to {stored}, past this batch's start {first}; nothing of the batch was published"
    )]
    Fenced {
        source_key: String,
        stored: String,
        first: i64,
    },
    #[error("{0}")]
    Location(String),
    /// A compaction lost a race: another writer changed the files it merged.
    #[error("the files being compacted changed under this writer; nothing was published")]
    Superseded,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Maps an object-store error of `remote` to the store's.
fn remote_err(remote: &Remote) -> impl Fn(object_store::Error) -> StoreError + Copy + '_ {
    move |source| StoreError::Remote {
        url: remote.url.clone(),
        source,
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One live Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the data directory, `/`-separated.
    pub path: String,
    pub partition: String,
    pub rows: u64,
    pub bytes: u64,
    pub min_time: i64,
    pub max_time: i64,
}

/// The store's single source of truth.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// Incremented by every commit.
    pub version: u64,
    pub tables: BTreeMap<String, Vec<FileEntry>>,
    /// Source positions, committed together with the rows they cover (e.g. Kafka offsets).
    #[serde(default)]
    pub checkpoints: BTreeMap<String, serde_json::Value>,
    /// Files replaced by compaction, kept on disk until a grace period has passed so that a
    /// query or detection pass that planned against an older manifest can still read them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<RetiredFile>,
    /// Event-time progress per streaming source (see [`crate::watermark`]), committed with
    /// the rows that advanced it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub marks: BTreeMap<String, crate::watermark::SourceMark>,
}

/// A compacted-away file and when it left the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredFile {
    pub path: String,
    pub retired_at: i64,
}

impl Manifest {
    pub fn files(&self, t: Table) -> &[FileEntry] {
        self.tables.get(t.name()).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn rows(&self, t: Table) -> u64 {
        self.files(t).iter().map(|f| f.rows).sum()
    }
}

pub const MANIFEST: &str = "manifest.json";

/// The housekeeping lease of a shared store (an object beside the manifest).
const LEASE: &str = "_lease/housekeeping.json";

#[derive(Serialize, Deserialize)]
struct Lease {
    holder: String,
    expires_at: i64,
}

/// Reads the manifest of a data directory; a directory without one is an empty store.
pub fn read_manifest(root: &Path) -> Result<Manifest> {
    let path = root.join(MANIFEST);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Manifest {
            path,
            msg: e.to_string(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Manifest {
            format: 1,
            ..Default::default()
        }),
        Err(e) => Err(StoreError::Io { path, source: e }),
    }
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}tmp",
        path.extension()
            .map(|e| format!("{}.", e.to_string_lossy()))
            .unwrap_or_default()
    ));
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

fn sync_dir(dir: &Path) {
    // Best effort: directory fsync is what makes a rename durable on Linux.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Tunables of the writer.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Rows per Parquet file before a partition buffer is flushed.
    pub file_rows: usize,
    /// Bytes of Arrow data buffered across partitions before the largest is flushed.
    pub buffer_bytes: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    pub zstd_level: i32,
    /// A partition with at least this many files is compacted.
    pub compact_min_files: usize,
    /// How long files replaced by compaction stay on disk for readers that planned against
    /// an older manifest.
    pub retire_grace: std::time::Duration,
    /// Date partitions older than this many days (by event time, against today in UTC) are
    /// dropped by housekeeping; `None` keeps everything.
    pub retain_days: Option<u32>,
    /// In a shared object store, how old a file no manifest lists must be before housekeeping
    /// deletes it (another writer may be about to commit it): longer than any writer holds
    /// uploaded files before its commit.
    pub orphan_grace: std::time::Duration,
    /// How long the housekeeping lease of a shared store lasts unless renewed: a holder that
    /// dies gives way after this.
    pub lease_ttl: std::time::Duration,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            file_rows: 1_000_000,
            buffer_bytes: 128 << 20,
            row_group_rows: 128 * 1024,
            zstd_level: 1,
            compact_min_files: 8,
            retire_grace: std::time::Duration::from_secs(600),
            retain_days: None,
            orphan_grace: std::time::Duration::from_secs(24 * 3600),
            lease_ttl: std::time::Duration::from_secs(300),
        }
    }
}

/// What one round of housekeeping ([`StoreWriter::compact`]) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompactReport {
    /// Files merged, and the files they became.
    pub files_before: usize,
    pub files_after: usize,
    /// Date partitions dropped by retention (per table), and their files.
    pub partitions_dropped: usize,
    pub files_dropped: usize,
    /// Files of a shared store that no manifest listed, older than the orphan grace, deleted.
    pub orphans_removed: usize,
    /// Another node holds the shared store's housekeeping lease (its ID): nothing was done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_held_by: Option<String>,
}

/// What a writer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriteStats {
    pub events: u64,
    pub activity: u64,
    pub quarantine: u64,
    pub duplicates: u64,
    pub files_written: u64,
}

type Key = (Table, String);

/// Row IDs are already uniform hashes (blake3), so hashing them again only costs time: the set
/// keys on their low 64 bits as they are.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used; fold anything else so the hasher stays correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64 ^ (v >> 64) as u64;
    }
}

type IdSet = HashSet<u128, BuildHasherDefault<IdHasher>>;

/// Where a writer keeps its files.
enum Backend {
    /// A directory, written by one process at a time (the lock file).
    Local { root: PathBuf, _lock: File },
    /// An object-store prefix shared by many writers: files are written to `staging` and
    /// uploaded under names no other writer uses; the manifest is replaced only if it is
    /// still the version this writer read (`version`), else the change is re-applied to the
    /// newer one.
    Remote {
        remote: Arc<Remote>,
        version: Option<UpdateVersion>,
        staging: PathBuf,
        writer_id: String,
    },
}

/// The writer of a data location: the only one of a directory, one of many of an object store.
pub struct StoreWriter {
    backend: Backend,
    manifest: Manifest,
    opts: WriteOptions,
    ids: HashMap<Key, IdSet>,
    pending: HashMap<Key, (Vec<RecordBatch>, usize, usize)>,
    pending_bytes: usize,
    staged: Vec<(Table, FileEntry)>,
    stats: WriteStats,
    seq: u64,
    /// Newest event time per streaming source since the last commit (`i64::MIN`: assigned,
    /// nothing delivered), and whether it had records waiting.
    marks: BTreeMap<String, (i64, bool)>,
    /// Per source (checkpoint key), the first position of the rows this commit covers: the
    /// commit is refused if the store already holds a later position for it.
    fences: BTreeMap<String, i64>,
    /// When the oldest of `staged` was written (a shared store checks that files held this
    /// long were not swept as orphans before it names them).
    staged_since: Option<i64>,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn parse_id(s: &str) -> u128 {
    // Fast path for the 32-hex-digit IDs kvwatch writes (same value `from_str_radix` gives;
    // that one checks overflow on a 128-bit multiply per digit, and this runs once per row).
    fn half(h: &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for &b in h {
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return None,
            };
            v = (v << 4) | u64::from(d);
        }
        Some(v)
    }
    if s.len() == 32 {
        let (hi, lo) = s.as_bytes().split_at(16);
        if let (Some(hi), Some(lo)) = (half(hi), half(lo)) {
            return (u128::from(hi) << 64) | u128::from(lo);
        }
    }
    u128::from_str_radix(s, 16).unwrap_or_else(|_| {
        // IDs are our own 32-hex hashes; anything else still dedups, by its own hash.
        let h = blake3::hash(s.as_bytes());
        u128::from_le_bytes(h.as_bytes()[..16].try_into().unwrap_or([0; 16]))
    })
}

impl StoreWriter {
    /// Opens (creating if needed) a data directory for writing, takes its lock and removes
    /// orphan files left by an interrupted writer.
    pub fn open(root: &Path, opts: WriteOptions) -> Result<Self> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        let lock_path = root.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(root.to_owned())),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let manifest = read_manifest(root)?;
        let mut w = Self::with_backend(
            Backend::Local {
                root: root.to_owned(),
                _lock: lock,
            },
            manifest,
            opts,
        );
        w.remove_orphans()?;
        Ok(w)
    }

    /// Opens a writer of the store at `remote`, one of any number. `staging` is a local
    /// directory for files on their way up (this writer's own: it is emptied).
    pub fn open_remote(remote: Arc<Remote>, staging: &Path, opts: WriteOptions) -> Result<Self> {
        if staging.exists() {
            fs::remove_dir_all(staging).map_err(io_err(staging))?;
        }
        fs::create_dir_all(staging).map_err(io_err(staging))?;
        let (manifest, version) = read_remote_manifest(&remote)?;
        // Unique among writers: file names carry it, so two writers never name a file alike.
        let writer_id = format!(
            "{:016x}",
            u64::from_le_bytes(
                blake3::hash(
                    format!(
                        "{}-{}-{:?}",
                        std::process::id(),
                        now_ns(),
                        std::thread::current().id()
                    )
                    .as_bytes()
                )
                .as_bytes()[..8]
                    .try_into()
                    .unwrap_or([0; 8])
            )
        );
        Ok(Self::with_backend(
            Backend::Remote {
                remote,
                version,
                staging: staging.to_owned(),
                writer_id,
            },
            manifest,
            opts,
        ))
    }

    fn with_backend(backend: Backend, manifest: Manifest, opts: WriteOptions) -> Self {
        Self {
            backend,
            manifest,
            opts,
            ids: HashMap::new(),
            pending: HashMap::new(),
            pending_bytes: 0,
            staged: Vec::new(),
            stats: WriteStats::default(),
            seq: 0,
            marks: BTreeMap::new(),
            fences: BTreeMap::new(),
            staged_since: None,
        }
    }

    /// Where this writer writes.
    pub fn location(&self) -> Location {
        match &self.backend {
            Backend::Local { root, .. } => Location::Local(root.clone()),
            Backend::Remote { remote, .. } => Location::Remote(remote.clone()),
        }
    }

    /// Starts over from the store as it is now, keeping the lock: forgets buffered rows,
    /// staged files and ID sets, re-reads the manifest and removes what a failed write left
    /// behind. For a writer whose last write or commit failed (a full or read-only disk, a
    /// batch another writer fenced off), before it tries again.
    pub fn recover(&mut self) -> Result<()> {
        self.ids.clear();
        self.pending.clear();
        self.pending_bytes = 0;
        self.fences.clear();
        self.staged_since = None;
        let staged = std::mem::take(&mut self.staged);
        match &mut self.backend {
            Backend::Local { root, .. } => {
                self.manifest = read_manifest(root)?;
                self.remove_orphans()
            }
            Backend::Remote {
                remote, version, ..
            } => {
                let (m, v) = read_remote_manifest(remote)?;
                self.manifest = m;
                *version = v;
                // Uploaded files of the failed commit: no manifest lists them.
                let paths: Vec<String> = staged.into_iter().map(|(_, e)| e.path).collect();
                self.delete_files(&paths);
                Ok(())
            }
        }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn stats(&self) -> WriteStats {
        self.stats
    }

    /// Deletes Parquet and temp files that the manifest does not list (a directory's single
    /// writer may; in a shared object store, another writer's files wait for their commit).
    fn remove_orphans(&mut self) -> Result<()> {
        let Backend::Local { root, .. } = &self.backend else {
            return Ok(());
        };
        let root = root.clone();
        let live: HashSet<&str> = self
            .manifest
            .tables
            .values()
            .flatten()
            .map(|f| f.path.as_str())
            .chain(self.manifest.retired.iter().map(|r| r.path.as_str()))
            .collect();
        for t in Table::ALL {
            let dir = root.join(t.name());
            if !dir.exists() {
                continue;
            }
            for entry in walkdir::WalkDir::new(&dir)
                .into_iter()
                .filter_map(|e| e.ok())
            {
                if !entry.file_type().is_file() {
                    continue;
                }
                let rel = rel_path(&root, entry.path());
                if !live.contains(rel.as_str()) {
                    tracing::warn!(file = %rel, "removing orphan file left by an interrupted write");
                    fs::remove_file(entry.path()).map_err(io_err(entry.path()))?;
                }
            }
        }
        Ok(())
    }

    fn ids_for(&mut self, key: &Key) -> Result<&mut IdSet> {
        if !self.ids.contains_key(key) {
            let (table, part) = key;
            let files: Vec<FileEntry> = self
                .manifest
                .files(*table)
                .iter()
                .filter(|f| *table == Table::Quarantine || &f.partition == part)
                .cloned()
                .collect();
            let mut set = IdSet::default();
            for f in files {
                self.load_ids(&f.path, table.id_column(), &mut set)?;
            }
            self.ids.insert(key.clone(), set);
        }
        Ok(self.ids.get_mut(key).expect("inserted above"))
    }

    fn id_key(table: Table, partition: &str) -> Key {
        match table {
            Table::Quarantine => (table, String::new()),
            _ => (table, partition.to_owned()),
        }
    }

    /// Buffers a batch of `table`'s schema: rows are split by date, rows whose ID is already
    /// stored (or repeated in the batch) are dropped and counted as duplicates.
    pub fn append(&mut self, table: Table, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let bad = |msg: String| StoreError::Batch {
            table: table.name(),
            msg,
        };
        let times = times_of(batch, table)?.clone();
        let ids = batch
            .column_by_name(table.id_column())
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| bad("missing id column".into()))?
            .clone();
        // Group row indices by partition (usually a batch covers one or two days).
        let mut groups: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut last: Option<(i64, String)> = None;
        for i in 0..batch.num_rows() {
            let day = times.value(i).div_euclid(86_400_000_000_000);
            let part = match &last {
                Some((d, p)) if *d == day => p.clone(),
                _ => {
                    let p = date_of_ns(times.value(i));
                    last = Some((day, p.clone()));
                    p
                }
            };
            groups.entry(part).or_default().push(i as u32);
        }
        for (part, idx) in groups {
            let key = Self::id_key(table, &part);
            let set = self.ids_for(&key)?;
            let mut keep = Vec::with_capacity(idx.len());
            for &i in &idx {
                keep.push(set.insert(parse_id(ids.value(i as usize))));
            }
            let kept = keep.iter().filter(|k| **k).count();
            self.stats.duplicates += (idx.len() - kept) as u64;
            if kept == 0 {
                continue;
            }
            // A batch within one day is kept as it is. One that crosses midnight is gathered
            // per day rather than sliced: a slice would pin the whole parent batch in memory
            // until every day's share of it is flushed.
            let sub = if idx.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(batch, &UInt32Array::from(idx))?
            };
            let sub = if kept == sub.num_rows() {
                sub
            } else {
                filter_record_batch(&sub, &BooleanArray::from(keep))?
            };
            match table {
                Table::Events => self.stats.events += kept as u64,
                Table::Activity => self.stats.activity += kept as u64,
                Table::Quarantine => self.stats.quarantine += kept as u64,
            }
            let size = sub.get_array_memory_size();
            let pkey = (table, part);
            let entry = self.pending.entry(pkey.clone()).or_default();
            entry.0.push(sub);
            entry.1 += kept;
            entry.2 += size;
            self.pending_bytes += size;
            if entry.1 >= self.opts.file_rows {
                self.flush_partition(&pkey)?;
            }
        }
        while self.pending_bytes > self.opts.buffer_bytes {
            let Some(largest) = self
                .pending
                .iter()
                .max_by_key(|(_, v)| v.2)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.flush_partition(&largest)?;
        }
        Ok(())
    }

    fn writer_props(&self, table: Table) -> Result<WriterProperties> {
        let time_idx = table
            .schema()
            .index_of(table.time_column())
            .map_err(StoreError::Arrow)?;
        let mut props = WriterProperties::builder();
        // Near-unique columns gain nothing from a dictionary; building one first and then
        // falling back to plain encoding is wasted work on every row group.
        for col in [
            table.id_column(),
            table.time_column(),
            "correlation_id",
            "source",
            "raw",
        ] {
            if table.schema().index_of(col).is_ok() {
                props = props.set_column_dictionary_enabled(ColumnPath::from(col), false);
            }
        }
        Ok(props
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(self.opts.zstd_level)?))
            .set_max_row_group_row_count(Some(self.opts.row_group_rows))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_sorting_columns(Some(vec![SortingColumn {
                column_idx: time_idx as i32,
                descending: false,
                nulls_first: false,
            }]))
            .build())
    }

    /// A new file's path below the location, and where it is written first.
    fn next_file(&mut self, table: Table, partition: &str) -> (String, PathBuf) {
        self.seq += 1;
        match &self.backend {
            Backend::Local { root, .. } => {
                let rel = format!(
                    "{}/date={}/part-{}-{:05}.parquet",
                    table.name(),
                    partition,
                    now_ns(),
                    self.seq
                );
                let tmp = root.join(&rel).with_extension("parquet.tmp");
                (rel, tmp)
            }
            Backend::Remote {
                staging, writer_id, ..
            } => {
                let name = format!("part-{}-{writer_id}-{:05}.parquet", now_ns(), self.seq);
                let rel = format!("{}/date={}/{name}", table.name(), partition);
                (rel, staging.join(format!("{name}.tmp")))
            }
        }
    }

    /// Writes a partition's buffered rows as one time-sorted file (staged until commit).
    /// Input that arrives in time order (archives, most streams) is written batch by batch as
    /// it is; otherwise rows are merged into order chunk by chunk, never copied whole.
    fn flush_partition(&mut self, key: &Key) -> Result<()> {
        let Some((batches, _, size)) = self.pending.remove(key) else {
            return Ok(());
        };
        self.pending_bytes -= size;
        let (table, partition) = (key.0, key.1.clone());
        let order = time_order(&batches, table)?;
        let chunk = self.opts.row_group_rows.max(1);
        let entry = match order {
            None => self.write_file(table, &partition, batches.into_iter().map(Ok))?,
            Some(order) => {
                let refs: Vec<&RecordBatch> = batches.iter().collect();
                let chunks = order
                    .chunks(chunk)
                    .map(|c| interleave_record_batch(&refs, c).map_err(StoreError::Arrow));
                self.write_file(table, &partition, chunks)?
            }
        };
        if let Some(e) = entry {
            self.staged_since.get_or_insert_with(now_ns);
            self.staged.push((table, e));
        }
        Ok(())
    }

    /// Writes batches (already sorted by time) to a new file; returns its entry.
    fn write_file(
        &mut self,
        table: Table,
        partition: &str,
        batches: impl Iterator<Item = Result<RecordBatch>>,
    ) -> Result<Option<FileEntry>> {
        let (rel, tmp) = self.next_file(table, partition);
        let dir = tmp.parent().expect("file path has a parent");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let props = self.writer_props(table)?;
        let mut w = ArrowWriter::try_new(file, table.schema(), Some(props))?;
        let (mut rows, mut min, mut max) = (0u64, i64::MAX, i64::MIN);
        for b in batches {
            let b = b?;
            if b.num_rows() == 0 {
                continue;
            }
            let t = times_of(&b, table)?;
            if let (Some(a), Some(z)) = (
                datafusion::arrow::compute::min(t),
                datafusion::arrow::compute::max(t),
            ) {
                min = min.min(a);
                max = max.max(z);
            }
            rows += b.num_rows() as u64;
            w.write(&b)?;
        }
        let file = w.into_inner()?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        if rows == 0 {
            fs::remove_file(&tmp).map_err(io_err(&tmp))?;
            return Ok(None);
        }
        let bytes = fs::metadata(&tmp).map_err(io_err(&tmp))?.len();
        match &self.backend {
            Backend::Local { root, .. } => {
                let abs = root.join(&rel);
                fs::rename(&tmp, &abs).map_err(io_err(&abs))?;
                sync_dir(dir);
            }
            Backend::Remote { remote, .. } => {
                let up = remote.upload(&tmp, &rel);
                let _ = fs::remove_file(&tmp);
                up.map_err(remote_err(remote))?;
            }
        }
        self.stats.files_written += 1;
        Ok(Some(FileEntry {
            path: rel,
            partition: partition.to_owned(),
            rows,
            bytes,
            min_time: min,
            max_time: max,
        }))
    }

    /// Notes that streaming `source` delivered an event as new as `max_time`; published (as a
    /// [`SourceMark`](crate::watermark::SourceMark)) by the next commit.
    ///
    /// `max_time` is `i64::MIN` for a source that is assigned but delivered nothing since the
    /// last commit: it gets a mark (holding the watermark back) if it has none, and its
    /// `behind` flag is refreshed.
    pub fn mark(&mut self, source: &str, max_time: i64, behind: bool) {
        let m = self
            .marks
            .entry(source.to_owned())
            .or_insert((max_time, behind));
        m.0 = m.0.max(max_time);
        m.1 = behind;
    }

    /// Flushes every buffer and publishes the new files, together with an optional source
    /// checkpoint, in one atomic manifest replacement.
    pub fn commit(&mut self, checkpoint: Option<(String, serde_json::Value)>) -> Result<()> {
        self.commit_checkpoints(checkpoint)
    }

    /// Refuses the next commit if the store already holds a position of `source` past
    /// `first`, the first position of the rows being committed (a Kafka partition another
    /// node has stored since this one read it).
    pub fn fence(&mut self, source: &str, first: i64) {
        let f = self.fences.entry(source.to_owned()).or_insert(first);
        *f = (*f).min(first);
    }

    /// [`commit`](Self::commit) with any number of checkpoints (one per Kafka partition, say),
    /// all published in the same manifest replacement as the files.
    pub fn commit_checkpoints(
        &mut self,
        checkpoints: impl IntoIterator<Item = (String, serde_json::Value)>,
    ) -> Result<()> {
        let keys: Vec<Key> = self.pending.keys().cloned().collect();
        for k in keys {
            self.flush_partition(&k)?;
        }
        let checkpoints: Vec<_> = checkpoints.into_iter().collect();
        let now = now_ns();
        if self.staged.is_empty()
            && checkpoints.is_empty()
            && self.expired_retired(&self.manifest, now).is_empty()
            && self.marks.is_empty()
        {
            return Ok(());
        }
        crate::fault::crash_point("store-before-manifest");
        crate::fault::pause_point("store-before-manifest");
        self.check_staged_exist(now)?;
        let staged = std::mem::take(&mut self.staged);
        let marks = std::mem::take(&mut self.marks);
        let fences = std::mem::take(&mut self.fences);
        let mut expired = Vec::new();
        let grace = self.opts.retire_grace;
        let published = self.publish_change(|base| {
            for (source, first) in &fences {
                if let Some(stored) = base.checkpoints.get(source)
                    && stored.as_i64().is_some_and(|s| s > *first)
                {
                    return Err(StoreError::Fenced {
                        source_key: source.clone(),
                        stored: stored.to_string(),
                        first: *first,
                    });
                }
            }
            let mut next = base.clone();
            next.format = 1;
            next.version += 1;
            for (t, e) in &staged {
                next.tables
                    .entry(t.name().to_owned())
                    .or_default()
                    .push(e.clone());
            }
            next.checkpoints.extend(checkpoints.iter().cloned());
            for (source, (t, behind)) in &marks {
                let m = next
                    .marks
                    .entry(source.clone())
                    .or_insert(crate::watermark::SourceMark {
                        max_time: *t,
                        updated_at: now,
                        behind: *behind,
                    });
                if *t != i64::MIN {
                    m.max_time = m.max_time.max(*t);
                    m.updated_at = now;
                }
                m.behind = *behind;
            }
            expired = expired_of(base, grace, now);
            next.retired.retain(|r| !expired.contains(&r.path));
            Ok(next)
        });
        match published {
            Ok(()) => {
                self.staged_since = None;
                self.delete_files(&expired);
                Ok(())
            }
            Err(e) => {
                // Not published: the uploaded files are orphans (a directory's are removed
                // by `recover`, an object store's here).
                self.staged = staged;
                Err(e)
            }
        }
    }

    /// In a shared store, files uploaded more than half the orphan grace ago might be swept by
    /// another node's housekeeping before this commit names them: they are checked first, and
    /// the commit refused (nothing published, the caller starts over) if one is gone.
    fn check_staged_exist(&self, now: i64) -> Result<()> {
        let Backend::Remote { remote, .. } = &self.backend else {
            return Ok(());
        };
        let half = self.opts.orphan_grace.as_nanos() as i64 / 2;
        if self.staged_since.is_none_or(|t| now - t < half) {
            return Ok(());
        }
        for (_, f) in &self.staged {
            let found = remote.tag(&f.path).map_err(remote_err(remote))?;
            if found.is_none() {
                return Err(StoreError::Manifest {
                    path: PathBuf::from(&remote.url).join(&f.path),
                    msg: "uploaded by this writer but removed as an orphan before its commit (held longer than --orphan-grace-secs)".into(),
                });
            }
        }
        Ok(())
    }

    /// Retired files of `m` whose grace period is over at `now`.
    fn expired_retired(&self, m: &Manifest, now: i64) -> Vec<String> {
        expired_of(m, self.opts.retire_grace, now)
    }

    /// Deletes files that no manifest lists any more (after the manifest saying so is durable).
    fn delete_files(&self, paths: &[String]) {
        let root = match &self.backend {
            Backend::Local { root, .. } => root,
            Backend::Remote { remote, .. } => {
                for rel in paths {
                    if let Err(e) = remote.delete(rel) {
                        tracing::warn!(file = %rel, error = %e, "could not remove a file no manifest lists");
                    }
                }
                return;
            }
        };
        for rel in paths {
            let p = root.join(rel);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "could not remove retired file")
                }
            }
        }
    }

    /// Forgets the de-duplication IDs of all but the `keep` most recent date partitions. A
    /// long-running consumer would otherwise hold every ID it ever wrote; a late row for a
    /// forgotten partition reloads that partition's IDs from its files.
    pub fn trim_ids(&mut self, keep: usize) {
        let mut dated: Vec<Key> = self
            .ids
            .keys()
            .filter(|(t, _)| *t != Table::Quarantine)
            .cloned()
            .collect();
        if dated.len() <= keep {
            return;
        }
        dated.sort_by(|a, b| b.1.cmp(&a.1));
        for k in dated.into_iter().skip(keep) {
            if !self.pending.contains_key(&k) {
                self.ids.remove(&k);
            }
        }
    }

    /// Publishes `change` applied to the current manifest. A directory's writer is the only
    /// one, so that is the manifest it holds; in an object store another writer may have
    /// committed since this one read it: the conditional put fails, and the change is applied
    /// again to the newer manifest (which it may refuse: a fence, a lost compaction race).
    fn publish_change(
        &mut self,
        mut change: impl FnMut(&Manifest) -> Result<Manifest>,
    ) -> Result<()> {
        match &mut self.backend {
            Backend::Local { root, .. } => {
                let next = change(&self.manifest)?;
                let path = root.join(MANIFEST);
                let bytes = serde_json::to_vec_pretty(&next).map_err(|e| StoreError::Manifest {
                    path: path.clone(),
                    msg: e.to_string(),
                })?;
                write_atomic(&path, &bytes)?;
                self.manifest = next;
                Ok(())
            }
            Backend::Remote { .. } => loop {
                let next = change(&self.manifest)?;
                let Backend::Remote {
                    remote, version, ..
                } = &mut self.backend
                else {
                    unreachable!("matched above")
                };
                let remote_err = remote_err(remote);
                let bytes = serde_json::to_vec_pretty(&next).map_err(|e| StoreError::Manifest {
                    path: PathBuf::from(&remote.url).join(MANIFEST),
                    msg: e.to_string(),
                })?;
                if let Some(v) = remote
                    .put_if(MANIFEST, bytes, version.clone())
                    .map_err(remote_err)?
                {
                    *version = Some(v);
                    self.manifest = next;
                    return Ok(());
                }
                tracing::info!(store = %remote.url, "manifest changed by another writer; applying this commit to the new one");
                let (m, v) = read_remote_manifest(remote)?;
                *version = v;
                self.absorb_ids(&m)?;
                self.manifest = m;
            },
        }
    }

    /// Adds the IDs of files another writer published (in `next`, not in the manifest this
    /// writer holds) to the ID sets it keeps, so later appends are checked against them.
    fn absorb_ids(&mut self, next: &Manifest) -> Result<()> {
        let known: HashSet<&str> = self
            .manifest
            .tables
            .values()
            .flatten()
            .map(|f| f.path.as_str())
            .collect();
        let mut new: Vec<(Key, String)> = Vec::new();
        for t in Table::ALL {
            for f in next.files(t) {
                let key = Self::id_key(t, &f.partition);
                if !known.contains(f.path.as_str()) && self.ids.contains_key(&key) {
                    new.push((key, f.path.clone()));
                }
            }
        }
        for (key, path) in new {
            let mut set = self.ids.remove(&key).unwrap_or_default();
            let r = self.load_ids(&path, key.0.id_column(), &mut set);
            self.ids.insert(key, set);
            r?;
        }
        Ok(())
    }

    /// Housekeeping: drops date partitions past retention, merges partitions holding many
    /// small files into few large time-sorted ones, and in a shared store removes files no
    /// manifest lists. In a shared store one writer at a time does this (the lease); the
    /// others skip it. Files leave the manifest first and are deleted only after the retire
    /// grace, so a reader that planned against an older manifest can still read them; a kill
    /// at any point leaves at worst files no manifest lists, which a later round removes.
    pub async fn compact(&mut self) -> Result<CompactReport> {
        self.commit(None)?;
        let mut report = CompactReport::default();
        if let Some(holder) = self.take_lease()? {
            report.lease_held_by = Some(holder);
            return Ok(report);
        }
        crate::fault::pause_point("housekeeping");
        self.apply_retention(&mut report)?;
        let (before, after) = self.merge_small_files().await?;
        report.files_before = before;
        report.files_after = after;
        report.orphans_removed = self.sweep_orphans()?;
        // Files whose grace has passed (all of them with a zero grace) go now.
        self.commit_checkpoints([])?;
        self.release_lease();
        Ok(report)
    }

    /// Merges the small files of each partition that has enough of them. Returns (files
    /// before, files after) over the partitions it touched.
    async fn merge_small_files(&mut self) -> Result<(usize, usize)> {
        let mut before = 0;
        let mut after = 0;
        for table in Table::ALL {
            let mut by_part: BTreeMap<String, Vec<FileEntry>> = BTreeMap::new();
            for f in self.manifest.files(table) {
                if (f.rows as usize) < self.opts.file_rows {
                    by_part
                        .entry(f.partition.clone())
                        .or_default()
                        .push(f.clone());
                }
            }
            for (part, files) in by_part {
                if files.len() < self.opts.compact_min_files.max(2) {
                    continue;
                }
                let merged = self.merge_files(table, &part, &files).await?;
                before += files.len();
                after += merged.len();
                let gone: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
                let now = now_ns();
                let published = self.publish_change(|base| {
                    let mut next = base.clone();
                    next.version += 1;
                    let list = next.tables.entry(table.name().to_owned()).or_default();
                    let before = list.len();
                    list.retain(|f| !gone.contains(f.path.as_str()));
                    if before - list.len() != gone.len() {
                        // Another writer compacted some of them first.
                        return Err(StoreError::Superseded);
                    }
                    list.extend(merged.iter().cloned());
                    // Readers that planned against the previous manifest may still be
                    // scanning these files: they are deleted by a later commit once the
                    // grace period ends.
                    next.retired.extend(files.iter().map(|f| RetiredFile {
                        path: f.path.clone(),
                        retired_at: now,
                    }));
                    Ok(next)
                });
                match published {
                    Ok(()) => {}
                    Err(StoreError::Superseded) => {
                        tracing::info!(table = table.name(), partition = %part, "another writer compacted this partition first");
                        let paths: Vec<String> = merged.iter().map(|f| f.path.clone()).collect();
                        self.delete_files(&paths);
                        after -= merged.len();
                        before -= files.len();
                    }
                    Err(e) => return Err(e),
                }
                // A long merge must not outlive the lease: renewed between partitions, and
                // given up (the other holder carries on) if someone else has it now.
                if self.take_lease()?.is_some() {
                    return Ok((before, after));
                }
            }
        }
        Ok((before, after))
    }

    /// Moves the files of date partitions older than `retain_days` out of the manifest (into
    /// the retired list, deleted after the grace).
    fn apply_retention(&mut self, report: &mut CompactReport) -> Result<()> {
        let Some(days) = self.opts.retain_days else {
            return Ok(());
        };
        let now = now_ns();
        let cutoff = date_of_ns(now - i64::from(days) * 86_400_000_000_000);
        let old = |f: &FileEntry| f.partition.as_str() < cutoff.as_str();
        if !self.manifest.tables.values().flatten().any(old) {
            return Ok(());
        }
        let mut dropped = (0, 0);
        self.publish_change(|base| {
            let mut next = base.clone();
            next.version += 1;
            let mut parts = HashSet::new();
            let mut files = 0;
            for (t, list) in next.tables.iter_mut() {
                for f in list.iter().filter(|f| old(f)) {
                    parts.insert((t.clone(), f.partition.clone()));
                    files += 1;
                    next.retired.push(RetiredFile {
                        path: f.path.clone(),
                        retired_at: now,
                    });
                }
                list.retain(|f| !old(f));
            }
            dropped = (parts.len(), files);
            Ok(next)
        })?;
        tracing::info!(partitions = dropped.0, files = dropped.1, before = %cutoff, "retention dropped old date partitions");
        report.partitions_dropped = dropped.0;
        report.files_dropped = dropped.1;
        Ok(())
    }

    /// The housekeeping lease of a shared store: `None` when this writer holds it (taken or
    /// renewed for `lease_ttl`), else the holder. A directory's lock already makes its writer
    /// the only one.
    fn take_lease(&mut self) -> Result<Option<String>> {
        let Backend::Remote {
            remote, writer_id, ..
        } = &self.backend
        else {
            return Ok(None);
        };
        let remote_err = remote_err(remote);
        loop {
            let now = now_ns();
            let mine = serde_json::to_vec(&Lease {
                holder: writer_id.clone(),
                expires_at: now + self.opts.lease_ttl.as_nanos() as i64,
            })
            .expect("a lease serialises");
            let current = remote.get(LEASE).map_err(remote_err)?;
            let expected = match current {
                None => None,
                Some((bytes, v)) => {
                    // An unreadable lease is treated as expired.
                    if let Ok(l) = serde_json::from_slice::<Lease>(&bytes)
                        && l.holder != *writer_id
                        && l.expires_at > now
                    {
                        return Ok(Some(l.holder));
                    }
                    Some(v)
                }
            };
            if remote
                .put_if(LEASE, mine, expected)
                .map_err(remote_err)?
                .is_some()
            {
                return Ok(None);
            }
            // Someone took or renewed it between the read and the write: look again.
        }
    }

    /// Gives the lease up (best effort: it expires anyway).
    fn release_lease(&self) {
        let Backend::Remote {
            remote, writer_id, ..
        } = &self.backend
        else {
            return;
        };
        if let Ok(Some((bytes, v))) = remote.get(LEASE)
            && serde_json::from_slice::<Lease>(&bytes).is_ok_and(|l| l.holder == *writer_id)
        {
            let done = serde_json::to_vec(&Lease {
                holder: writer_id.clone(),
                expires_at: 0,
            })
            .expect("a lease serialises");
            let _ = remote.put_if(LEASE, done, Some(v));
        }
    }

    /// Deletes the shared store's data files that no manifest lists (live or retired) and
    /// that are older than the orphan grace: what writers killed between upload and commit,
    /// or compactions that lost a race, left behind.
    fn sweep_orphans(&self) -> Result<usize> {
        let Backend::Remote { remote, .. } = &self.backend else {
            return Ok(0);
        };
        let remote_err = remote_err(remote);
        // Listed after reading the manifest would race a commit; the grace covers that too:
        // a file younger than it is never touched.
        let (manifest, _) = read_remote_manifest(remote)?;
        let live: HashSet<&str> = manifest
            .tables
            .values()
            .flatten()
            .map(|f| f.path.as_str())
            .chain(manifest.retired.iter().map(|r| r.path.as_str()))
            .collect();
        let oldest = now_ns() - self.opts.orphan_grace.as_nanos() as i64;
        let mut removed = Vec::new();
        for t in Table::ALL {
            for (rel, _, modified) in remote.list(t.name()).map_err(remote_err)? {
                if modified < oldest && !live.contains(rel.as_str()) {
                    removed.push(rel);
                }
            }
        }
        for rel in &removed {
            tracing::warn!(file = %rel, "removing a file no manifest lists (left by an interrupted writer)");
        }
        self.delete_files(&removed);
        Ok(removed.len())
    }

    async fn merge_files(
        &mut self,
        table: Table,
        partition: &str,
        files: &[FileEntry],
    ) -> Result<Vec<FileEntry>> {
        use datafusion::prelude::{SessionConfig, SessionContext};
        use futures::StreamExt;
        let cfg = SessionConfig::new()
            .with_target_partitions(files.len().max(1))
            .with_repartition_file_scans(false)
            .with_batch_size(8192);
        let ctx = SessionContext::new_with_config(cfg);
        let location = self.location();
        location.register(&ctx);
        let paths: Vec<String> = files.iter().map(|f| location.file(&f.path)).collect();
        crate::tables::register_sorted_files(&ctx, "merge_input", table, &paths)?;
        let df = ctx
            .sql(&format!(
                "SELECT * FROM merge_input ORDER BY {} ASC",
                table.time_column()
            ))
            .await?;
        let mut stream = df.execute_stream().await?;
        let mut out = Vec::new();
        let mut chunk: Vec<RecordBatch> = Vec::new();
        let mut chunk_rows = 0usize;
        while let Some(b) = stream.next().await {
            let b = b?;
            let b = RecordBatch::try_new(table.schema(), b.columns().to_vec())
                .or_else(|_| crate::tables::cast_to_schema(&b, &table.schema()))?;
            chunk_rows += b.num_rows();
            chunk.push(b);
            if chunk_rows >= self.opts.file_rows {
                let batches = std::mem::take(&mut chunk);
                chunk_rows = 0;
                if let Some(e) = self.write_file(table, partition, batches.into_iter().map(Ok))? {
                    out.push(e);
                }
            }
        }
        if !chunk.is_empty()
            && let Some(e) = self.write_file(table, partition, chunk.into_iter().map(Ok))?
        {
            out.push(e);
        }
        Ok(out)
    }
}

/// The table's time column of a batch.
fn times_of(b: &RecordBatch, table: Table) -> Result<&PrimitiveArray<TimestampNanosecondType>> {
    b.column_by_name(table.time_column())
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        .ok_or_else(|| StoreError::Batch {
            table: table.name(),
            msg: "missing time column".into(),
        })
}

/// `None` when `batches` are already in time order as they stand, else the `(batch, row)`
/// positions that put them in order (ties keep arrival order, so output is deterministic).
fn time_order(batches: &[RecordBatch], table: Table) -> Result<Option<Vec<(usize, usize)>>> {
    let mut times = Vec::with_capacity(batches.len());
    for b in batches {
        times.push(times_of(b, table)?.values());
    }
    let sorted = times
        .iter()
        .flat_map(|t| t.iter())
        .try_fold(i64::MIN, |prev, &t| (t >= prev).then_some(t))
        .is_some();
    if sorted {
        return Ok(None);
    }
    let mut keyed: Vec<(i64, usize, usize)> = times
        .iter()
        .enumerate()
        .flat_map(|(b, t)| t.iter().enumerate().map(move |(r, &v)| (v, b, r)))
        .collect();
    keyed.sort_unstable();
    Ok(Some(keyed.into_iter().map(|(_, b, r)| (b, r)).collect()))
}

impl StoreWriter {
    /// Adds the IDs in `rel`'s `column` to `set`.
    fn load_ids(&self, rel: &str, column: &str, set: &mut IdSet) -> Result<()> {
        match &self.backend {
            Backend::Local { root, .. } => {
                let path = root.join(rel);
                let file = File::open(&path).map_err(io_err(&path))?;
                ids_from(ParquetRecordBatchReaderBuilder::try_new(file)?, column, set)
            }
            Backend::Remote { remote, .. } => {
                let remote_err = remote_err(remote);
                let (bytes, _) =
                    remote
                        .get(rel)
                        .map_err(remote_err)?
                        .ok_or_else(|| StoreError::Manifest {
                            path: PathBuf::from(&remote.url).join(rel),
                            msg: "listed in the manifest but not in the store".into(),
                        })?;
                ids_from(
                    ParquetRecordBatchReaderBuilder::try_new(bytes)?,
                    column,
                    set,
                )
            }
        }
    }
}

fn ids_from<R: datafusion::parquet::file::reader::ChunkReader + 'static>(
    builder: ParquetRecordBatchReaderBuilder<R>,
    column: &str,
    set: &mut IdSet,
) -> Result<()> {
    let idx = builder
        .schema()
        .index_of(column)
        .map_err(StoreError::Arrow)?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65536)
        .build()?;
    for b in reader {
        let b = b?;
        let col = b.column(0);
        if let Some(s) = col.as_string_opt::<i32>() {
            set.reserve(s.len());
            for i in 0..s.len() {
                if s.is_valid(i) {
                    set.insert(parse_id(s.value(i)));
                }
            }
        } else if let Some(s) = col.as_string_view_opt() {
            for i in 0..s.len() {
                if s.is_valid(i) {
                    set.insert(parse_id(s.value(i)));
                }
            }
        }
    }
    Ok(())
}

/// Retired files of `m` whose grace period is over at `now`.
fn expired_of(m: &Manifest, grace: std::time::Duration, now: i64) -> Vec<String> {
    m.retired
        .iter()
        .filter(|r| now.saturating_sub(r.retired_at) >= grace.as_nanos() as i64)
        .map(|r| r.path.clone())
        .collect()
}

/// The manifest of a store in object storage and its version; an empty store has neither.
pub fn read_remote_manifest(remote: &Remote) -> Result<(Manifest, Option<UpdateVersion>)> {
    let got = remote.get(MANIFEST).map_err(remote_err(remote))?;
    match got {
        None => Ok((
            Manifest {
                format: 1,
                ..Default::default()
            },
            None,
        )),
        Some((bytes, v)) => serde_json::from_slice(&bytes)
            .map(|m| (m, Some(v)))
            .map_err(|e| StoreError::Manifest {
                path: PathBuf::from(&remote.url).join(MANIFEST),
                msg: e.to_string(),
            }),
    }
}

fn rel_path(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Current time in nanoseconds since the epoch (ingest timestamps).
pub fn now_nanos() -> i64 {
    now_ns()
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn parse_id_fast_path_agrees_with_from_str_radix() {
        for id in [
            "0123456789abcdef0123456789ABCDEF",
            "ffffffffffffffffffffffffffffffff",
            "00000000000000000000000000000000",
            "8f3a9c0d11e24b7fa0c65d2e7b19f4aa",
        ] {
            assert_eq!(parse_id(id), u128::from_str_radix(id, 16).unwrap(), "{id}");
        }
        // Not 32 hex digits: the general path, which hashes what it cannot read.
        assert_eq!(parse_id("ff"), 0xff);
        let odd = "0123456789abcdef0123456789abcdeg";
        assert_ne!(parse_id(odd), parse_id("0123456789abcdef0123456789abcdef"));
        assert_eq!(parse_id(odd), parse_id(odd));
    }
}
