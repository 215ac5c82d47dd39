//! File and stdin sources: path expansion, gzip sniffing, and the ingest pipeline that runs
//! parsing on as many threads as there are cores and storage on another.

use crate::batch::{
    Columns, activity_columns, events_columns, push_activity, push_event, push_quarantine,
    quarantine_columns,
};
use crate::framing::{DEFAULT_MAX_FRAME, Framer};
pub use crate::gzip::{Damage, Salvage};
use crate::loganalytics::Shape;
pub use crate::parse::parse_stream;
use crate::parse::{ParseCounts, Parser, RowSink, read_into};
use crate::schema::Table;
use crate::store::{StoreError, StoreWriter, WriteStats, now_nanos};
use crate::{activity::ActivityRow, audit::EventRow};
use datafusion::arrow::array::RecordBatch;
use flate2::read::MultiGzDecoder;
use serde::Serialize;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// An input named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    /// A file, and the label its rows' `source` names it by.
    File {
        path: PathBuf,
        label: String,
    },
}

impl Input {
    /// A file named by itself: labelled with its file name.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let label = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Input::File { path, label }
    }

    /// The input's name in `source` labels: `stdin`, a file's name, or for a file found in a
    /// directory, its path from that directory (the directory's own name first). Never the
    /// path above what the user named, so stored rows and alert evidence do not reveal where
    /// the service keeps its files.
    pub fn label(&self) -> String {
        match self {
            Input::Stdin => "stdin".to_owned(),
            Input::File { label, .. } => label.clone(),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Input::Stdin => None,
            Input::File { path, .. } => Some(path),
        }
    }
}

/// File name endings walked in directories. Files named explicitly are read whatever their name.
pub const EXTENSIONS: &[&str] = &["json", "jsonl", "ndjson", "csv", "gz"];

/// Expands paths: `-` is stdin, directories are walked recursively in sorted order keeping the
/// files with a known ending. Returns the inputs and the files skipped in directories.
pub fn expand(paths: &[String]) -> io::Result<(Vec<Input>, Vec<PathBuf>)> {
    let mut inputs = Vec::new();
    let mut skipped = Vec::new();
    for p in paths {
        if p == "-" {
            inputs.push(Input::Stdin);
            continue;
        }
        let path = PathBuf::from(p);
        let meta = std::fs::metadata(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            // Labels start at the directory's own name (`archive/resourceId=…/PT1H.json`).
            let name = std::fs::canonicalize(&path)
                .ok()
                .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            for entry in walkdir::WalkDir::new(&path).sort_by_file_name() {
                let entry = entry.map_err(|e| io::Error::other(e.to_string()))?;
                if !entry.file_type().is_file() {
                    continue;
                }
                let file = entry.file_name().to_string_lossy();
                let known = EXTENSIONS
                    .iter()
                    .any(|ext| file.to_ascii_lowercase().ends_with(&format!(".{ext}")));
                if known && !file.starts_with('.') {
                    let below = entry
                        .path()
                        .strip_prefix(&path)
                        .unwrap_or(entry.path())
                        .to_string_lossy()
                        .into_owned();
                    let label = if name.is_empty() {
                        below
                    } else {
                        format!("{name}/{below}")
                    };
                    inputs.push(Input::File {
                        path: entry.into_path(),
                        label,
                    });
                } else {
                    skipped.push(entry.into_path());
                }
            }
        } else {
            inputs.push(Input::file(path));
        }
    }
    Ok((inputs, skipped))
}

/// An opened input: its bytes, and for gzip, whether the compressed stream broke.
pub struct Opened {
    reader: Box<dyn BufRead + Send>,
    damage: Option<Damage>,
}

impl Opened {
    /// The reader, and where a damaged compressed stream leaves its error once the reader has
    /// been read to its end.
    pub fn into_parts(self) -> (Box<dyn BufRead + Send>, Option<Damage>) {
        (self.reader, self.damage)
    }
}

/// Opens an input, transparently decompressing gzip (detected by its magic bytes, not its name).
/// With `mmap`, a non-empty regular file is memory-mapped instead of read: parsing then works
/// on the page cache directly, saving the kernel's copy of every byte (a tenth of the CPU of
/// an ingest). Like ripgrep, which maps for the same reason, a file truncated by another
/// process while it is mapped ends the process (SIGBUS); `--no-mmap` avoids that risk.
pub fn open(input: &Input, mmap: bool) -> io::Result<Opened> {
    let mut buf: Box<dyn BufRead + Send> = match input {
        Input::Stdin => Box::new(BufReader::with_capacity(1 << 20, io::stdin())),
        Input::File { path: p, .. } => {
            let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
            let file = std::fs::File::open(p).map_err(named)?;
            match mmap.then(|| map_file(&file)).flatten() {
                Some(m) => {
                    let len = m.len();
                    Box::new(Mapped::range(m, 0, len))
                }
                None => Box::new(BufReader::with_capacity(1 << 20, file)),
            }
        }
    };
    let head = buf.fill_buf()?;
    if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        let (salvage, damage) = Salvage::new(MultiGzDecoder::new(buf));
        Ok(Opened {
            reader: Box::new(BufReader::with_capacity(1 << 20, salvage)),
            damage: Some(damage),
        })
    } else {
        Ok(Opened {
            reader: buf,
            damage: None,
        })
    }
}

/// Maps a file; `None` when it cannot or need not be mapped (empty, not a regular file,
/// mapping refused), and the caller then reads it normally.
fn map_file(file: &std::fs::File) -> Option<Arc<memmap2::Mmap>> {
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() == 0 {
        return None;
    }
    // SAFETY: the map is read-only and private to this process. Another process truncating
    // the file while it is mapped is the one hazard, documented on `open`.
    let map = unsafe { memmap2::Mmap::map(file) }.ok()?;
    let _ = map.advise(memmap2::Advice::Sequential);
    Some(Arc::new(map))
}

/// A byte range of a memory-mapped file read as a stream. Several readers may share one map,
/// each over its own range.
struct Mapped {
    map: Arc<memmap2::Mmap>,
    pos: usize,
    end: usize,
    /// Start of the range still mapped in: whole pages before it have been handed back.
    kept: usize,
}

/// How far the read position runs ahead before the pages behind it are handed back: mapped
/// pages count as resident memory, and a file is read once, front to back.
const RELEASE_STEP: usize = 64 << 20;

/// Pages are handed back whole: a range that starts inside a page leaves that page alone,
/// since the range before it may still be reading it.
const PAGE: usize = 4096;

impl Mapped {
    fn range(map: Arc<memmap2::Mmap>, start: usize, end: usize) -> Self {
        let end = end.min(map.len());
        Self {
            map,
            pos: start.min(end),
            end,
            kept: start.next_multiple_of(PAGE),
        }
    }
}

impl Read for Mapped {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let rest = &self.map[self.pos..self.end];
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Mapped {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        Ok(&self.map[self.pos..self.end])
    }
    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.end);
        if self.pos.saturating_sub(self.kept) >= RELEASE_STEP {
            let end = self.pos & !(RELEASE_STEP - 1);
            // SAFETY: only bytes already consumed are released, and nothing borrows them: a
            // caller's borrow of the buffer ends before it consumes. The map is a read-only
            // view of a file, so a page touched again would just be read back in.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    self.kept,
                    end - self.kept,
                )
            };
            self.kept = end;
        }
    }
}

/// A reader that publishes how many bytes it has handed out, for progress on long inputs
/// (a single large file would otherwise show no progress in bytes until it ends).
struct Counted<'c, R> {
    inner: R,
    local: u64,
    shared: &'c AtomicU64,
}

impl<'c, R> Counted<'c, R> {
    fn new(inner: R, shared: &'c AtomicU64) -> Self {
        Self {
            inner,
            local: 0,
            shared,
        }
    }

    fn publish(&mut self) {
        self.shared
            .fetch_add(std::mem::take(&mut self.local), Ordering::Relaxed);
    }
}

impl<R> Drop for Counted<'_, R> {
    fn drop(&mut self) {
        self.publish();
    }
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.local += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.local += n as u64;
        // Publishing per megabyte keeps the shared counter off the per-line path.
        if self.local >= 1 << 20 {
            self.publish();
        }
    }
}

/// Tells glibc's allocator to keep freed memory for reuse instead of handing it back to the
/// kernel at once. By default glibc maps large blocks fresh each time and unmaps them when
/// freed, and the kernel then zeroes every page again. Every Arrow batch of an ingest
/// allocates tens of MiB of builders (a twentieth of the CPU of an ingest went to this), and
/// the Parquet reader allocates a buffer per page it decompresses: a principal's trail took
/// 5,000 page faults a query and spent a fifth of its CPU in them. Memory stays bounded: the
/// same sizes are reused batch after batch and query after query, and a process keeps at
/// most its own peak. The binary calls it first thing, for every command.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// Tunables of an ingest run.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Rows per Arrow batch handed from the parser to the store.
    pub batch_rows: usize,
    pub max_frame: usize,
    /// Memory-map regular files instead of reading them (see [`open`]).
    pub mmap: bool,
    /// Parser threads: inputs are parsed side by side, and a large JSON Lines file is cut at
    /// line boundaries into one range per thread.
    pub parse_threads: usize,
    /// Smallest file cut into ranges for several parser threads: below it, the threads are
    /// better spent on other inputs.
    pub split_min: usize,
    /// What the inputs hold (`Auto`: told record by record).
    pub shape: Shape,
    /// Source positions published with the rows (an archive's blob positions).
    pub checkpoints: Vec<(String, serde_json::Value)>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            batch_rows: 32 * 1024,
            max_frame: DEFAULT_MAX_FRAME,
            mmap: true,
            // Each thread keeps a window of its mapped input and its own allocator arena; past
            // four, memory would grow with the machine rather than stay under 1 GiB.
            parse_threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            split_min: 64 << 20,
            shape: Shape::Auto,
            checkpoints: Vec::new(),
        }
    }
}

/// A file that could not be read at all.
#[derive(Debug, Clone, Serialize)]
pub struct InputError {
    pub input: String,
    pub error: String,
}

/// What an ingest run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    pub files: u64,
    pub skipped_files: Vec<String>,
    pub failed: Vec<InputError>,
    pub parsed: ParseCounts,
    pub stored: WriteStats,
    pub elapsed_secs: f64,
    pub records_per_sec: f64,
}

/// Progress of a running ingest, for people watching a long run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub files_done: u64,
    pub files_total: u64,
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

enum Msg {
    Batch(Table, RecordBatch),
    FileDone(ParseCounts),
    Failed(InputError),
}

/// Parser-side sink: builds batches and ships them to the store thread.
struct Shipper {
    events: Columns,
    activity: Columns,
    quarantine: Columns,
    batch_rows: usize,
    now: i64,
    tx: mpsc::SyncSender<Msg>,
    closed: bool,
}

impl Shipper {
    fn ship(&mut self, table: Table) {
        let cols = match table {
            Table::Events => &mut self.events,
            Table::Activity => &mut self.activity,
            Table::Quarantine => &mut self.quarantine,
        };
        if cols.is_empty() {
            return;
        }
        match cols.finish() {
            Ok(b) => {
                if self.tx.send(Msg::Batch(table, b)).is_err() {
                    self.closed = true;
                }
            }
            Err(e) => {
                // Builders follow the schema by construction; a failure is a bug, reported loudly.
                let _ = self.tx.send(Msg::Failed(InputError {
                    input: table.name().to_owned(),
                    error: format!("internal error building batch: {e}"),
                }));
                self.closed = true;
            }
        }
    }

    fn ship_all(&mut self) {
        for t in Table::ALL {
            self.ship(t);
        }
    }
}

impl RowSink for Shipper {
    fn event(&mut self, row: &EventRow<'_>, source: &str) {
        push_event(&mut self.events, row, source, self.now);
        if self.events.len() >= self.batch_rows {
            self.ship(Table::Events);
        }
    }
    fn activity(&mut self, row: &ActivityRow, source: &str) {
        push_activity(&mut self.activity, row, source, self.now);
        if self.activity.len() >= self.batch_rows {
            self.ship(Table::Activity);
        }
    }
    fn quarantine(&mut self, source: &str, reason: &str, raw: &str) {
        tracing::debug!(source, reason, "quarantined");
        push_quarantine(&mut self.quarantine, source, reason, raw, self.now);
        if self.quarantine.len() >= self.batch_rows {
            self.ship(Table::Quarantine);
        }
    }
}

/// What the parser threads share.
struct ParseCtx {
    batch_rows: usize,
    max_frame: usize,
    mmap: bool,
    threads: usize,
    split_min: usize,
    shape: Shape,
    now: i64,
    /// Bytes consumed so far, for progress.
    read: Arc<AtomicU64>,
    tx: mpsc::SyncSender<Msg>,
}

impl ParseCtx {
    fn shipper(&self) -> Shipper {
        Shipper {
            events: events_columns(),
            activity: activity_columns(),
            quarantine: quarantine_columns(),
            // Every thread fills its own builders: sharing the batch size between them keeps
            // the rows in flight, and so memory, the same whatever the number of threads.
            batch_rows: (self.batch_rows / self.threads).max(1024.min(self.batch_rows)),
            now: self.now,
            tx: self.tx.clone(),
            closed: false,
        }
    }

    /// Parses every input: large JSON Lines files one at a time with all threads on ranges
    /// of the file, the others side by side, one per thread.
    fn run(self, inputs: Vec<Input>) {
        let mut whole = Vec::new();
        let mut split = Vec::new();
        for input in inputs {
            match self.split_plan(&input) {
                Some(map) => split.push((input, map)),
                None => whole.push(input),
            }
        }
        self.parse_whole(&whole);
        for (input, map) in split {
            if !self.parse_split(&input, map) {
                break;
            }
        }
    }

    /// Reports a finished input; false once the store side has stopped listening.
    fn report(&self, label: String, result: io::Result<ParseCounts>) -> bool {
        let msg = match result {
            Ok(c) => Msg::FileDone(c),
            Err(e) => Msg::Failed(InputError {
                input: label,
                error: e.to_string(),
            }),
        };
        self.tx.send(msg).is_ok()
    }

    fn parse_whole(&self, inputs: &[Input]) {
        let next = AtomicUsize::new(0);
        let work = || {
            let mut ship = self.shipper();
            while let Some(input) = inputs.get(next.fetch_add(1, Ordering::Relaxed)) {
                let label = input.label();
                let result = open(input, self.mmap).and_then(|opened| {
                    let (reader, damage) = opened.into_parts();
                    let mut parser = Parser::new(&mut ship, label.as_str());
                    parser.shape = self.shape;
                    let lines = read_into(
                        Counted::new(reader, &self.read),
                        &mut parser,
                        self.max_frame,
                    )?;
                    if let Some(why) = damage.as_ref().and_then(Damage::get) {
                        parser.unreadable(lines + 1, &why);
                    }
                    Ok(parser.finish())
                });
                // Rows of a file are shipped before its completion is reported.
                ship.ship_all();
                if ship.closed || !self.report(label, result) {
                    break;
                }
            }
        };
        // This thread is one of the workers, so parsing goes on even if no helper starts.
        let helpers = self.threads.min(inputs.len()).saturating_sub(1);
        std::thread::scope(|s| {
            for i in 1..=helpers {
                let spawned = std::thread::Builder::new()
                    .name(format!("kvwatch-parse-{i}"))
                    .spawn_scoped(s, work);
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "could not start a parser thread");
                }
            }
            work();
        });
    }

    /// The file's map when it is worth cutting into ranges: several threads, a large regular
    /// file, not compressed, and line-oriented (its first line is complete JSON, the same
    /// test the framer applies), so that every range starts at a record.
    fn split_plan(&self, input: &Input) -> Option<Arc<memmap2::Mmap>> {
        let Input::File { path, .. } = input else {
            return None;
        };
        if self.threads < 2 || !self.mmap {
            return None;
        }
        // Most inputs (hourly archive blobs) are small: decided without opening them.
        if std::fs::metadata(path).ok()?.len() < self.split_min as u64 {
            return None;
        }
        let map = map_file(&std::fs::File::open(path).ok()?)?;
        if map.len() < self.split_min || map.starts_with(&[0x1f, 0x8b]) {
            return None;
        }
        let mut probe = Framer::with_max(&map[..], self.max_frame);
        probe.next_frame().ok()??;
        probe.is_line_oriented().then_some(map)
    }

    /// Parses one large JSON Lines file on all threads; false once the store has stopped.
    fn parse_split(&self, input: &Input, map: Arc<memmap2::Mmap>) -> bool {
        let label = input.label();
        let ranges = line_ranges(&map, self.threads);
        tracing::debug!(input = %label, ranges = ranges.len(), "parsing in ranges");
        // Sources name lines, so each range needs the number of lines before it: counted in
        // parallel first (a fraction of the parse), through readers that hand pages back.
        let lines: Vec<u64> = std::thread::scope(|s| {
            let counters: Vec<_> = ranges
                .iter()
                .map(|r| {
                    let mut reader = Mapped::range(map.clone(), r.start, r.end);
                    s.spawn(move || count_lines(&mut reader))
                })
                .collect();
            counters
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .collect()
        });
        let mut before = 0;
        let starts: Vec<u64> = lines
            .iter()
            .map(|n| {
                let first = before;
                before += n;
                first
            })
            .collect();
        let results: Vec<io::Result<ParseCounts>> = std::thread::scope(|s| {
            let workers: Vec<_> = ranges
                .iter()
                .zip(&starts)
                .map(|(r, &after)| {
                    let reader =
                        Counted::new(Mapped::range(map.clone(), r.start, r.end), &self.read);
                    let label = &label;
                    s.spawn(move || {
                        let mut ship = self.shipper();
                        let mut framer = Framer::with_max(reader, self.max_frame)
                            .lines_only()
                            .after_line(after);
                        let mut parser = Parser::new(&mut ship, label.as_str());
                        parser.shape = self.shape;
                        while let Some(frame) = framer.next_frame()? {
                            parser.frame(&frame);
                        }
                        let counts = parser.finish();
                        ship.ship_all();
                        Ok(counts)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a parser thread panicked")))
                })
                .collect()
        });
        let mut total = ParseCounts::default();
        let mut failed = None;
        for r in results {
            match r {
                Ok(c) => total.add(&c),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        self.report(label, failed.map_or(Ok(total), Err))
    }
}

/// Cuts `data` into up to `n` ranges that each end just after a newline (or at the end).
fn line_ranges(data: &[u8], n: usize) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::with_capacity(n);
    let mut start = 0;
    for k in 1..=n {
        let end = if k == n {
            data.len()
        } else {
            let cut = (data.len() / n * k).max(start);
            memchr::memchr(b'\n', &data[cut..]).map_or(data.len(), |i| cut + i + 1)
        };
        if end > start {
            ranges.push(start..end);
        }
        start = end;
    }
    ranges
}

/// Newlines in a stream.
fn count_lines(r: &mut impl BufRead) -> u64 {
    let mut n = 0;
    while let Ok(buf) = r.fill_buf() {
        if buf.is_empty() {
            break;
        }
        let len = buf.len().min(1 << 20);
        n += memchr::memchr_iter(b'\n', &buf[..len]).count() as u64;
        r.consume(len);
    }
    n
}

/// Ingests inputs into the store and commits. Parsing runs on helper threads while this
/// thread de-duplicates and writes Parquet, so the two halves overlap.
pub fn ingest(
    writer: &mut StoreWriter,
    inputs: Vec<Input>,
    opts: &IngestOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<IngestReport, StoreError> {
    let start = Instant::now();
    let before = writer.stats();
    let total = inputs.len() as u64;
    let (tx, rx) = mpsc::sync_channel::<Msg>(4);
    let read = Arc::new(AtomicU64::new(0));
    let ctx = ParseCtx {
        batch_rows: opts.batch_rows.max(1),
        max_frame: opts.max_frame,
        mmap: opts.mmap,
        threads: opts.parse_threads.max(1),
        split_min: opts.split_min.max(1),
        shape: opts.shape,
        now: now_nanos(),
        read: read.clone(),
        tx,
    };
    let parser = std::thread::Builder::new()
        .name("kvwatch-parse".into())
        .spawn(move || ctx.run(inputs))
        .map_err(|e| StoreError::Io {
            path: PathBuf::from("<parser thread>"),
            source: e,
        })?;

    let mut report = IngestReport {
        files: total,
        ..Default::default()
    };
    let mut last_progress = Instant::now();
    let mut files_done = 0u64;
    let mut result = Ok(());
    for msg in rx.iter() {
        match msg {
            Msg::Batch(t, b) => {
                if let Err(e) = writer.append(t, &b) {
                    result = Err(e);
                    break;
                }
            }
            Msg::FileDone(c) => {
                files_done += 1;
                report.parsed.add(&c);
            }
            Msg::Failed(e) => {
                files_done += 1;
                tracing::error!(input = %e.input, error = %e.error, "input could not be read");
                report.failed.push(e);
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let s = writer.stats();
            progress(&Progress {
                files_done,
                files_total: total,
                records: s.events + s.activity + s.quarantine + s.duplicates
                    - before.events
                    - before.activity
                    - before.quarantine
                    - before.duplicates,
                bytes: read.load(Ordering::Relaxed),
                elapsed: start.elapsed(),
            });
        }
    }
    drop(rx);
    let _ = parser.join();
    result?;
    writer.commit_checkpoints(opts.checkpoints.iter().cloned())?;
    let after = writer.stats();
    report.stored = WriteStats {
        events: after.events - before.events,
        activity: after.activity - before.activity,
        quarantine: after.quarantine - before.quarantine,
        duplicates: after.duplicates - before.duplicates,
        files_written: after.files_written - before.files_written,
    };
    report.elapsed_secs = start.elapsed().as_secs_f64();
    report.records_per_sec = report.parsed.records as f64 / report.elapsed_secs.max(1e-9);
    Ok(report)
}

/// Convenience for tests and tools: ingest paths into a data directory with default options.
pub fn ingest_paths(
    data: &crate::data::DataDir,
    paths: &[String],
) -> Result<IngestReport, Box<dyn std::error::Error>> {
    let (inputs, skipped) = expand(paths)?;
    let mut w = data.writer(Default::default())?;
    let mut r = ingest(&mut w, inputs, &IngestOptions::default(), |_| {})?;
    r.skipped_files = skipped.iter().map(|p| p.display().to_string()).collect();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_reader_publishes_every_byte_consumed() {
        let line = "{\"a\":\"0123456789\"}\n";
        let text = line.repeat(200_000);
        let shared = AtomicU64::new(0);
        {
            let r = Counted::new(BufReader::with_capacity(4096, text.as_bytes()), &shared);
            let mut framer = Framer::new(r);
            let mut frames = 0;
            while framer.next_frame().unwrap().is_some() {
                frames += 1;
                // Published in megabyte steps while reading, never ahead of what was read.
                assert!(shared.load(Ordering::Relaxed) <= (frames * line.len()) as u64);
            }
            assert_eq!(frames, 200_000);
            assert!(shared.load(Ordering::Relaxed) >= 3 << 20);
        }
        assert_eq!(shared.load(Ordering::Relaxed), text.len() as u64);
    }
}
