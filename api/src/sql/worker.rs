//! The SQL worker process (`kvwatch sql-worker`) and its protocol with the parent.
//!
//! The parent writes one request at a time on the worker's stdin; the worker answers on its
//! stdout. Every message is a frame: a 4-byte little-endian length and that many bytes.
//! A request is one JSON frame ([`Request`]); an answer is a JSON frame ([`Answer`]) followed
//! by a frame holding the result as an Arrow IPC stream (empty when the query failed).
//!
//! The worker exits when its stdin closes, when its parent goes away (checked every second,
//! because a worker busy in a query does not read stdin), and after any answer that asks for
//! a fresh process (`recycle`): a timeout (an engine task may still be spinning), a memory
//! error, or a refused statement whose parse tree it leaked rather than dropped.

use super::exec::{self, Outcome};
use super::{Shape, SqlError, SqlLimits, Tables};
use datafusion::arrow::ipc::writer::StreamWriter;
use kvwatch_ingest::DataDir;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::time::Duration;

/// Largest frame either side accepts: a request is a statement of at most a few hundred KiB,
/// an answer's result is bounded by the result limit.
pub const MAX_FRAME: usize = 2 << 30;

/// One query for the worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub sql: String,
    pub max_rows: usize,
    pub max_result_bytes: usize,
    pub memory_bytes: usize,
    pub timeout_ms: u64,
    pub max_depth: usize,
    pub max_set_terms: usize,
    pub tables: Tables,
}

impl Request {
    pub fn new(sql: &str, limits: SqlLimits, tables: Tables) -> Self {
        Self {
            sql: sql.to_owned(),
            max_rows: limits.max_rows,
            max_result_bytes: limits.max_result_bytes,
            memory_bytes: limits.memory_bytes,
            timeout_ms: limits.timeout.as_millis() as u64,
            max_depth: limits.shape.max_depth,
            max_set_terms: limits.shape.max_set_terms,
            tables,
        }
    }

    fn limits(&self) -> SqlLimits {
        SqlLimits {
            max_rows: self.max_rows.max(1),
            max_result_bytes: self.max_result_bytes.max(1),
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
            memory_bytes: self.memory_bytes.max(1 << 20),
            shape: Shape {
                max_depth: self.max_depth,
                max_set_terms: self.max_set_terms,
            },
        }
    }
}

/// The worker's answer to one request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub error: Option<WireError>,
    pub rows: usize,
    pub truncated: bool,
    pub elapsed_us: u64,
    /// The worker exits after this answer; the parent must not send it another request.
    pub recycle: bool,
}

/// An [`SqlError`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireError {
    pub code: String,
    pub message: String,
    /// The engine's own text, for the parent's log only.
    pub detail: Option<String>,
    pub memory_bytes: usize,
    pub timeout_ms: u64,
}

impl WireError {
    fn from_error(e: &SqlError) -> Self {
        let (message, detail, memory_bytes, timeout_ms) = match e {
            SqlError::Refused(m) | SqlError::TooComplex(m) | SqlError::Query(m) => {
                (m.clone(), None, 0, 0)
            }
            SqlError::Memory(b) => (String::new(), None, *b, 0),
            SqlError::Timeout(t) => (String::new(), None, 0, t.as_millis() as u64),
            SqlError::Crashed(d) | SqlError::Internal(d) => (String::new(), Some(d.clone()), 0, 0),
            SqlError::Busy => (String::new(), None, 0, 0),
        };
        Self {
            code: e.code().to_owned(),
            message,
            detail,
            memory_bytes,
            timeout_ms,
        }
    }

    pub fn into_error(self) -> SqlError {
        match self.code.as_str() {
            "refused" => SqlError::Refused(self.message),
            "too_complex" => SqlError::TooComplex(self.message),
            "query_failed" => SqlError::Query(self.message),
            "memory_limit" => SqlError::Memory(self.memory_bytes),
            "timeout" => SqlError::Timeout(Duration::from_millis(self.timeout_ms)),
            "busy" => SqlError::Busy,
            "worker_failed" => SqlError::Crashed(self.detail.unwrap_or_default()),
            _ => SqlError::Internal(self.detail.unwrap_or(self.message)),
        }
    }
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|n| (*n as usize) <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "frame too large"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(bytes)
}

/// Reads one frame; `None` at a clean end of input (between frames).
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

/// Stack of the thread that parses and plans: deep enough for any statement the guard lets
/// through in an unoptimised build, and small beside the memory limit (a stack is reserved,
/// not used, until it is needed).
const PLAN_STACK: usize = 64 << 20;
/// Stack of the engine's execution threads (expression evaluation recurses too).
const EXEC_STACK: usize = 16 << 20;

/// The worker's main loop. Returns the process exit code.
pub fn main(data: DataDir) -> i32 {
    watch_parent();
    let served = std::thread::Builder::new()
        .name("kvwatch-sql".into())
        .stack_size(PLAN_STACK)
        .spawn(move || serve(&data));
    match served.map(|h| h.join()) {
        Ok(Ok(code)) => code,
        _ => 70,
    }
}

fn serve(data: &DataDir) -> i32 {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_stack_size(EXEC_STACK)
        .thread_name("kvwatch-sql-exec")
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sql-worker: cannot start a runtime: {e}");
            return 71;
        }
    };
    let mut input = io::stdin().lock();
    let mut output = io::stdout().lock();
    loop {
        let frame = match read_frame(&mut input) {
            Ok(Some(f)) => f,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("sql-worker: reading a request: {e}");
                return 74;
            }
        };
        let (answer, payload) = match serde_json::from_slice::<Request>(&frame) {
            Ok(req) => rt.block_on(handle(data, &req)),
            Err(e) => (
                failed(&SqlError::Internal(format!("bad request: {e}")), true),
                Vec::new(),
            ),
        };
        let recycle = answer.recycle;
        let header = serde_json::to_vec(&answer).unwrap_or_default();
        let sent = write_frame(&mut output, &header)
            .and_then(|()| write_frame(&mut output, &payload))
            .and_then(|()| output.flush());
        if sent.is_err() || recycle {
            // Exit without unwinding or dropping what a refusal leaked.
            std::process::exit(0);
        }
    }
}

fn failed(e: &SqlError, recycle: bool) -> Answer {
    Answer {
        error: Some(WireError::from_error(e)),
        rows: 0,
        truncated: false,
        elapsed_us: 0,
        recycle,
    }
}

async fn handle(data: &DataDir, req: &Request) -> (Answer, Vec<u8>) {
    let limits = req.limits();
    match exec::run(data, &req.sql, limits, req.tables).await {
        Outcome::Refused(r) => {
            // A refused statement may be thousands of levels deep; dropping it would recurse
            // that deep. It is leaked instead, and this process replaced.
            let recycle = r.holds_tree();
            let e = r.leak();
            (failed(&e, recycle), Vec::new())
        }
        Outcome::Failed(e) => {
            let recycle = !matches!(
                e,
                SqlError::Refused(_) | SqlError::TooComplex(_) | SqlError::Query(_)
            );
            (failed(&e, recycle), Vec::new())
        }
        Outcome::Done(res) => {
            let mut payload = Vec::new();
            let written = StreamWriter::try_new(&mut payload, &res.schema).and_then(|mut w| {
                for b in &res.batches {
                    w.write(b)?;
                }
                w.finish()
            });
            if let Err(e) = written {
                return (
                    failed(
                        &SqlError::Internal(format!("encoding the result: {e}")),
                        true,
                    ),
                    Vec::new(),
                );
            }
            let answer = Answer {
                error: None,
                rows: res.rows,
                truncated: res.truncated,
                elapsed_us: res.elapsed.as_micros() as u64,
                recycle: false,
            };
            (answer, payload)
        }
    }
}

/// Ends this process when its parent goes away, even while a query keeps every other thread
/// busy.
fn watch_parent() {
    #[cfg(unix)]
    {
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        let _ = std::thread::Builder::new()
            .name("kvwatch-sql-watch".into())
            .stack_size(64 << 10)
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(500));
                    // SAFETY: as above.
                    if unsafe { libc::getppid() } != parent {
                        std::process::exit(75);
                    }
                }
            });
    }
}
