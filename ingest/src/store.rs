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
//! Invariants:
//! * A file is visible to queries only once `manifest.json` lists it. Files are written to a
//!   temporary name, fsynced and renamed; the manifest is replaced atomically the same way. A
//!   crash at any point leaves the previous manifest intact; files it does not list are orphans
//!   and are deleted when the next writer opens the store.
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
use std::time::{SystemTime, UNIX_EPOCH};

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
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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
        }
    }
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

/// The single writer of a data directory.
pub struct StoreWriter {
    root: PathBuf,
    manifest: Manifest,
    opts: WriteOptions,
    _lock: File,
    ids: HashMap<Key, IdSet>,
    pending: HashMap<Key, (Vec<RecordBatch>, usize, usize)>,
    pending_bytes: usize,
    staged: Vec<(Table, FileEntry)>,
    stats: WriteStats,
    seq: u64,
    /// Newest event time per streaming source since the last commit (`i64::MIN`: assigned,
    /// nothing delivered), and whether it had records waiting.
    marks: BTreeMap<String, (i64, bool)>,
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
        let mut w = Self {
            root: root.to_owned(),
            manifest,
            opts,
            _lock: lock,
            ids: HashMap::new(),
            pending: HashMap::new(),
            pending_bytes: 0,
            staged: Vec::new(),
            stats: WriteStats::default(),
            seq: 0,
            marks: BTreeMap::new(),
        };
        w.remove_orphans()?;
        Ok(w)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts over from the store as it is on disk, keeping the lock: forgets buffered rows,
    /// staged files and ID sets, re-reads the manifest and removes what a failed write left
    /// behind. For a writer whose last write or commit failed (a full or read-only disk),
    /// before it tries the same data again.
    pub fn recover(&mut self) -> Result<()> {
        self.manifest = read_manifest(&self.root)?;
        self.ids.clear();
        self.pending.clear();
        self.pending_bytes = 0;
        self.staged.clear();
        self.remove_orphans()
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn stats(&self) -> WriteStats {
        self.stats
    }

    /// Deletes Parquet and temp files that the manifest does not list.
    fn remove_orphans(&mut self) -> Result<()> {
        let live: HashSet<&str> = self
            .manifest
            .tables
            .values()
            .flatten()
            .map(|f| f.path.as_str())
            .chain(self.manifest.retired.iter().map(|r| r.path.as_str()))
            .collect();
        for t in Table::ALL {
            let dir = self.root.join(t.name());
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
                let rel = rel_path(&self.root, entry.path());
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
                load_ids(&self.root.join(&f.path), table.id_column(), &mut set)?;
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

    fn next_file(&mut self, table: Table, partition: &str) -> (String, PathBuf) {
        self.seq += 1;
        let rel = format!(
            "{}/date={}/part-{}-{:05}.parquet",
            table.name(),
            partition,
            now_ns(),
            self.seq
        );
        let abs = self.root.join(&rel);
        (rel, abs)
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
        let (rel, abs) = self.next_file(table, partition);
        let dir = abs.parent().expect("file path has a parent");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let tmp = abs.with_extension("parquet.tmp");
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
        fs::rename(&tmp, &abs).map_err(io_err(&abs))?;
        sync_dir(dir);
        let bytes = fs::metadata(&abs).map_err(io_err(&abs))?.len();
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
        let expired = self.expired_retired(now);
        if self.staged.is_empty()
            && checkpoints.is_empty()
            && expired.is_empty()
            && self.marks.is_empty()
        {
            return Ok(());
        }
        crate::fault::crash_point("store-before-manifest");
        let mut next = self.manifest.clone();
        next.format = 1;
        next.version += 1;
        for (t, e) in &self.staged {
            next.tables
                .entry(t.name().to_owned())
                .or_default()
                .push(e.clone());
        }
        next.checkpoints.extend(checkpoints);
        for (source, (t, behind)) in &self.marks {
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
        next.retired.retain(|r| !expired.contains(&r.path));
        self.publish(next)?;
        self.staged.clear();
        self.marks.clear();
        self.delete_files(&expired);
        Ok(())
    }

    /// Retired files whose grace period is over at `now`.
    fn expired_retired(&self, now: i64) -> Vec<String> {
        self.manifest
            .retired
            .iter()
            .filter(|r| {
                now.saturating_sub(r.retired_at) >= self.opts.retire_grace.as_nanos() as i64
            })
            .map(|r| r.path.clone())
            .collect()
    }

    /// Deletes files that no manifest lists any more (after the manifest saying so is durable).
    fn delete_files(&self, paths: &[String]) {
        for rel in paths {
            let p = self.root.join(rel);
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

    fn publish(&mut self, next: Manifest) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| StoreError::Manifest {
            path: self.root.join(MANIFEST),
            msg: e.to_string(),
        })?;
        write_atomic(&self.root.join(MANIFEST), &bytes)?;
        self.manifest = next;
        Ok(())
    }

    /// Merges partitions holding many small files into few large time-sorted ones. Returns
    /// (files before, files after) over the partitions it touched.
    pub async fn compact(&mut self) -> Result<(usize, usize)> {
        self.commit(None)?;
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
                let mut next = self.manifest.clone();
                next.version += 1;
                let list = next.tables.entry(table.name().to_owned()).or_default();
                list.retain(|f| !gone.contains(f.path.as_str()));
                list.extend(merged);
                // Readers that planned against the previous manifest may still be scanning
                // these files: they are deleted by a later commit once the grace period ends.
                let now = now_ns();
                next.retired.extend(files.iter().map(|f| RetiredFile {
                    path: f.path.clone(),
                    retired_at: now,
                }));
                self.publish(next)?;
            }
        }
        // Files whose grace has passed (all of them with a zero grace) go now.
        self.commit_checkpoints([])?;
        Ok((before, after))
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
        let paths: Vec<PathBuf> = files.iter().map(|f| self.root.join(&f.path)).collect();
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

fn load_ids(path: &Path, column: &str, set: &mut IdSet) -> Result<()> {
    let file = File::open(path).map_err(io_err(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
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
