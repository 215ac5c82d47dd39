//! Accepting connections: a limit on how many are open, and timeouts for clients that send or
//! read too slowly, so that idle or half-open connections cannot hold the service.
//!
//! * **Connection limit**: past `max_connections`, a new connection gets a short `503` answer
//!   with `Retry-After` and is closed, instead of waiting unseen in the backlog.
//! * **Header-read timeout**: a request's header must arrive within `header_read_timeout`
//!   of the connection becoming ready for it (hyper's timer), which also ends keep-alive
//!   connections that sit idle between requests.
//! * **Idle timeout**: a connection on which no byte moved for `idle_timeout` while no handler
//!   was working on one of its requests is closed (a client that stopped reading its answer).
//!   Request bodies have their own read deadline in the handlers that read them.
//!
//! On shutdown the listener closes at once and open connections finish their requests.

use crate::state::Shared;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tower::ServiceExt;

/// Limits on connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// How long open connections get to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(30);

/// The answer to a connection over the limit.
fn refusal(request_id: &str) -> Vec<u8> {
    let body = format!(
        r#"{{"error":"too many open connections; retry shortly","code":"too_many_connections","request_id":"{request_id}"}}"#
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n{}: {request_id}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        crate::error::REQUEST_ID_HEADER,
        body.len()
    )
    .into_bytes()
}

/// Serves `state`'s router on `listener` until `shutdown` completes, then lets open
/// connections finish (at most 30 s).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnLimits,
) -> std::io::Result<()> {
    let app = crate::server::router(state);
    let graceful = GracefulShutdown::new();
    let open = Arc::new(AtomicUsize::new(0));
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "api.accept_failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        if open.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            open.fetch_sub(1, Ordering::AcqRel);
            let request_id = crate::error::new_request_id();
            tracing::warn!(
                max = limits.max_connections,
                request_id = %request_id,
                "api.connection_refused_over_limit"
            );
            tokio::spawn(refuse(stream, request_id));
            continue;
        }
        let guard = OpenGuard(open.clone());
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let service = hyper::service::service_fn({
            let app: Router = app.clone();
            let activity = activity.clone();
            move |req: hyper::Request<Incoming>| {
                let app = app.clone();
                let busy = activity.begin();
                async move {
                    let resp = app.oneshot(req.map(axum::body::Body::new)).await;
                    drop(busy);
                    resp
                }
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(io, service);
        let conn = graceful.watch(conn);
        let idle = limits.idle_timeout;
        tokio::spawn(async move {
            let _guard = guard;
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "api.connection_ended");
                    }
                }
                _ = activity.idle_for(idle) => {
                    tracing::debug!(idle_secs = idle.as_secs(), "api.connection_idle_closed");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("api.connections_still_open_at_shutdown");
    }
    Ok(())
}

async fn refuse(mut stream: tokio::net::TcpStream, request_id: String) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&refusal(&request_id)).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Counts an open connection until dropped.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// When a connection last moved a byte, and how many of its requests a handler is working on.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Resolves once nothing moved for `limit` while no handler was busy.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let now = self.epoch.elapsed().as_millis() as u64;
            let quiet = now.saturating_sub(self.last_ms.load(Ordering::Relaxed));
            let limit_ms = limit.as_millis() as u64;
            if self.busy.load(Ordering::Acquire) == 0 && quiet >= limit_ms {
                return;
            }
            let wait = if self.busy.load(Ordering::Acquire) > 0 {
                limit_ms
            } else {
                limit_ms - quiet
            };
            tokio::time::sleep(Duration::from_millis(wait.max(50))).await;
        }
    }
}

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream that records when bytes last moved.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
