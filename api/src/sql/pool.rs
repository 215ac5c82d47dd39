//! The parent's side of analyst SQL: a small pool of worker processes.
//!
//! Each query runs in a worker (`kvwatch sql-worker`, see [`super::worker`]) started with an
//! OS limit on its data memory (`RLIMIT_DATA`: heap and anonymous mappings, so every engine
//! operator and every function counts, not only those that use DataFusion's pool), no core
//! dumps, and a lower CPU priority, so that detection, forwarding and the API keep the CPU
//! they need while a query runs. The parent waits on pipes, never on the query: at the
//! deadline it kills the worker and answers 408 at once, whatever the query was doing.
//!
//! A worker that ends without an answer is classified from how it ended (killed by us: a
//! timeout; "memory allocation … failed": the memory limit; "overflowed its stack": a
//! statement too complex to plan) and replaced on the next query. Idle workers are kept for
//! the next query; a worker is also dropped (and so killed) when the request that uses it is
//! dropped, e.g. because the HTTP client went away.

use super::worker::{Answer, MAX_FRAME, Request};
use super::{SqlError, SqlLimits, SqlResult, Tables};
use datafusion::arrow::ipc::reader::StreamReader;
use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Memory a worker needs besides the query's operators and its result: the binary's data,
/// the runtime's threads and stacks, the session, Parquet footers.
pub const BASE_MEMORY: usize = 384 << 20;

/// How long after the query's own timeout the parent waits before killing the worker: the
/// worker normally answers a timeout itself and stays usable.
const GRACE: Duration = Duration::from_millis(1000);

/// Lines of a worker's standard error kept to explain how it ended.
const TAIL_LINES: usize = 16;

/// Configuration of the pool.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// The `kvwatch` executable (this process's own, normally).
    pub exe: PathBuf,
    /// The data location the workers query.
    pub data: kvwatch_ingest::DataDir,
    /// Queries that run at once; more wait for a free worker.
    pub workers: usize,
    /// Nice value of the workers (0 to 19): higher yields the CPU to the service.
    pub nice: i32,
}

impl PoolOptions {
    /// Options for this executable and `data`, with two workers at nice 10.
    pub fn new(data: kvwatch_ingest::DataDir) -> std::io::Result<Self> {
        Ok(Self {
            exe: std::env::current_exe()?,
            data,
            workers: 2,
            nice: 10,
        })
    }
}

/// Counters of the pool, for `/metrics`.
#[derive(Debug, Default)]
pub struct PoolMetrics {
    pub queries: AtomicU64,
    pub failed: AtomicU64,
    pub timeouts: AtomicU64,
    pub memory_limited: AtomicU64,
    pub crashed: AtomicU64,
    pub busy: AtomicU64,
    pub spawned: AtomicU64,
}

/// A pool of SQL worker processes.
pub struct SqlPool {
    opts: PoolOptions,
    idle: Mutex<Vec<Worker>>,
    slots: Arc<tokio::sync::Semaphore>,
    /// Process IDs of workers running a query, killed by [`SqlPool::close`].
    active: Mutex<HashSet<u32>>,
    closed: AtomicBool,
    pub metrics: PoolMetrics,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    tail: Arc<Mutex<VecDeque<String>>>,
    pid: u32,
    /// The memory limit the worker was started with.
    ceiling: usize,
}

impl SqlPool {
    pub fn new(opts: PoolOptions) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(tokio::sync::Semaphore::new(opts.workers.max(1))),
            opts,
            idle: Mutex::new(Vec::new()),
            active: Mutex::new(HashSet::new()),
            closed: AtomicBool::new(false),
            metrics: PoolMetrics::default(),
        })
    }

    /// The data memory limit of a worker serving `limits`.
    pub fn ceiling(limits: &SqlLimits) -> usize {
        limits
            .memory_bytes
            .saturating_add(limits.max_result_bytes.saturating_mul(2))
            .saturating_add(BASE_MEMORY)
    }

    /// Runs one query in a worker. Waits for a free worker at most as long as the query may
    /// run.
    pub async fn run(
        &self,
        sql: &str,
        limits: SqlLimits,
        tables: Tables,
    ) -> Result<SqlResult, SqlError> {
        let started = Instant::now();
        self.metrics.queries.fetch_add(1, Ordering::Relaxed);
        let r = self.run_inner(sql, limits, tables, started).await;
        if let Err(e) = &r {
            let counter = match e {
                SqlError::Timeout(_) => &self.metrics.timeouts,
                SqlError::Memory(_) => &self.metrics.memory_limited,
                SqlError::Crashed(_) => &self.metrics.crashed,
                SqlError::Busy => &self.metrics.busy,
                _ => &self.metrics.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    async fn run_inner(
        &self,
        sql: &str,
        limits: SqlLimits,
        tables: Tables,
        started: Instant,
    ) -> Result<SqlResult, SqlError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(SqlError::Busy);
        }
        let _slot = tokio::time::timeout(limits.timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| SqlError::Busy)?
            .map_err(|_| SqlError::Busy)?;
        let request = serde_json::to_vec(&Request::new(sql, limits, tables))
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        let ceiling = Self::ceiling(&limits);
        // A worker that went away while idle is noticed when the request cannot be written;
        // the request is then sent to a fresh one (nothing ran yet).
        let mut worker = None;
        for _ in 0..2 {
            let mut w = self.take(ceiling)?;
            if w.send(&request).await.is_ok() {
                worker = Some(w);
                break;
            }
        }
        let Some(mut w) = worker else {
            return Err(SqlError::Internal("no SQL worker could be started".into()));
        };
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(w.pid);
        let deadline = limits.timeout.saturating_sub(started.elapsed()) + GRACE;
        let answer = tokio::time::timeout(deadline, w.receive()).await;
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&w.pid);
        match answer {
            Ok(Ok((answer, payload))) => {
                let recycle = answer.recycle;
                let result = decode(answer, payload, started);
                if !recycle && !self.closed.load(Ordering::Relaxed) {
                    self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(w);
                }
                result
            }
            Ok(Err(io)) => Err(self.ended(w, &limits, io).await),
            Err(_) => {
                let pid = w.pid;
                let _ = w.child.start_kill();
                let _ = w.child.wait().await;
                tracing::warn!(
                    worker = pid,
                    timeout_ms = limits.timeout.as_millis() as u64,
                    "sql.worker_killed_at_deadline"
                );
                Err(SqlError::Timeout(limits.timeout))
            }
        }
    }

    /// An idle worker started with the same memory limit, or a new one.
    fn take(&self, ceiling: usize) -> Result<Worker, SqlError> {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.iter()
                .position(|w| w.ceiling == ceiling)
                .map(|i| idle.swap_remove(i))
        };
        match reused {
            Some(w) => Ok(w),
            None => self
                .spawn(ceiling)
                .map_err(|e| SqlError::Internal(format!("starting a SQL worker: {e}"))),
        }
    }

    fn spawn(&self, ceiling: usize) -> std::io::Result<Worker> {
        let mut cmd = Command::new(&self.opts.exe);
        // The location as the user named it, this node's state directory, and the storage
        // settings with their secret references unresolved (read again in the worker).
        cmd.arg("--data")
            .arg(self.opts.data.display())
            .arg("--state")
            .arg(self.opts.data.root())
            .arg("--cache-mb")
            .arg((self.opts.data.cache_bytes() >> 20).to_string())
            .arg("sql-worker")
            .env(
                "KVWATCH_STORAGE_OPTIONS",
                self.opts.data.options().to_pairs().replace('\n', ","),
            )
            .env(
                "KVWATCH_ALERTS",
                self.opts.data.alerts_url().unwrap_or_default(),
            )
            .env("MALLOC_ARENA_MAX", "2")
            .env("RUST_BACKTRACE", "0")
            .env_remove("KVWATCH_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        {
            let nice = self.opts.nice.clamp(0, 19);
            let limit = ceiling as libc::rlim_t;
            // SAFETY: only async-signal-safe calls (setrlimit, setpriority) between fork and
            // exec, on values computed before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    let data = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_DATA, &data) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let none = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    libc::setrlimit(libc::RLIMIT_CORE, &none);
                    libc::setpriority(libc::PRIO_PROCESS, 0, nice);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn()?;
        let pid = child.id().unwrap_or(0);
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("no stderr"))?;
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let kept = tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // Structured, so a line of the worker's (which may quote a statement) cannot
                // pass for one of the service's own log lines.
                tracing::warn!(worker = pid, line = ?line, "sql.worker_stderr");
                let mut t = kept.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        self.metrics.spawned.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            worker = pid,
            ceiling_mb = ceiling >> 20,
            "sql.worker_started"
        );
        Ok(Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            tail,
            pid,
            ceiling,
        })
    }

    /// Why a worker ended without answering.
    async fn ended(&self, mut w: Worker, limits: &SqlLimits, io: std::io::Error) -> SqlError {
        let status = tokio::time::timeout(Duration::from_secs(5), w.child.wait()).await;
        // The stderr task may still be reading the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let tail: Vec<String> = w
            .tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let text = tail.join("\n");
        if self.closed.load(Ordering::Relaxed) {
            return SqlError::Busy;
        }
        let status_text = match &status {
            Ok(Ok(s)) => s.to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "still running".into(),
        };
        tracing::warn!(worker = w.pid, status = %status_text, error = %io, tail = ?text, "sql.worker_ended");
        if text.contains("memory allocation of") || text.contains("out of memory") {
            return SqlError::Memory(limits.memory_bytes);
        }
        if text.contains("overflowed its stack") {
            return SqlError::TooComplex(
                "the statement is too complex to plan: simplify its expressions".into(),
            );
        }
        #[cfg(unix)]
        if let Ok(Ok(s)) = &status {
            use std::os::unix::process::ExitStatusExt;
            // Killed by someone else: the kernel's OOM killer is the usual one.
            if s.signal() == Some(libc::SIGKILL) {
                return SqlError::Memory(limits.memory_bytes);
            }
        }
        SqlError::Crashed(format!("{status_text}: {text}"))
    }

    /// Stops every worker, idle or busy; queries running now fail with `Busy`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        for pid in self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            #[cfg(unix)]
            // SAFETY: kill has no memory-safety preconditions; the PID is our own child's,
            // still unreaped (its Child is held by the waiting query).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }

    /// Workers idle now (for tests and metrics).
    pub fn idle_workers(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for SqlPool {
    fn drop(&mut self) {
        self.close();
    }
}

impl Worker {
    async fn send(&mut self, request: &[u8]) -> std::io::Result<()> {
        let len =
            u32::try_from(request.len()).map_err(|_| std::io::Error::other("request too large"))?;
        self.stdin.write_all(&len.to_le_bytes()).await?;
        self.stdin.write_all(request).await?;
        self.stdin.flush().await
    }

    async fn receive(&mut self) -> std::io::Result<(Answer, Vec<u8>)> {
        let header = read_frame(&mut self.stdout).await?;
        let answer: Answer = serde_json::from_slice(&header)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let payload = read_frame(&mut self.stdout).await?;
        Ok((answer, payload))
    }
}

async fn read_frame(r: &mut BufReader<ChildStdout>) -> std::io::Result<Vec<u8>> {
    let len = r.read_u32_le().await? as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

fn decode(answer: Answer, payload: Vec<u8>, started: Instant) -> Result<SqlResult, SqlError> {
    if let Some(e) = answer.error {
        return Err(e.into_error());
    }
    let reader = StreamReader::try_new(std::io::Cursor::new(payload), None)
        .map_err(|e| SqlError::Internal(format!("decoding a result: {e}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SqlError::Internal(format!("decoding a result: {e}")))?;
    Ok(SqlResult {
        schema,
        batches,
        rows: answer.rows,
        truncated: answer.truncated,
        elapsed: started.elapsed(),
    })
}
