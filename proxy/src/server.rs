//! The HTTP server: the accept loop feeding connections to the `App`, the
//! limits on connections themselves (how many, how long idle), and graceful
//! shutdown (stop accepting, drain in-flight requests within
//! `server.shutdown_grace_ms`, then close).
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::app::App;

/// File descriptors kept back from client connections: the database pool,
/// the listener, log files, outbound HTTP and SMTP.
const RESERVED_FDS: u64 = 128;

/// Raises the open-file soft limit to the hard limit (where allowed) and
/// returns how many client connections that leaves room for.
pub fn connection_capacity(configured: usize, pool_size: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(1024)
        }
    };
    let room = limit.saturating_sub(RESERVED_FDS + pool_size as u64).max(1);
    let capacity = configured.min(usize::try_from(room).unwrap_or(usize::MAX));
    if capacity < configured {
        warn!(
            configured,
            capacity,
            open_file_limit = limit,
            "server.max_connections lowered to fit the open-file limit"
        );
    }
    capacity
}

pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: CancellationToken) {
    let config = &app.state().config.server;
    let capacity = connection_capacity(config.max_connections, app.state().config.database.pool_size);
    let idle = Duration::from_millis(config.idle_timeout_ms);
    let open = Arc::new(AtomicUsize::new(0));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(config.header_limit_bytes).timer(TokioTimer::new()).header_read_timeout(idle);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if open.load(Ordering::Relaxed) >= capacity {
                    app.state().metrics.connection_refused();
                    tokio::spawn(refuse(stream));
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let slot = Slot::take(open.clone());
                let activity = Arc::new(Activity::new());
                // The slot lives with the socket: a WebSocket keeps counting
                // after its upgrade ended the HTTP connection.
                let io = Tracked { inner: stream, activity: activity.clone(), _slot: slot };
                let (app, requests) = (app.clone(), activity.clone());
                let service = service_fn(move |req| {
                    let (app, requests) = (app.clone(), requests.clone());
                    async move {
                        let _busy = requests.begin();
                        Ok::<_, Infallible>(app.handle(req, peer).await)
                    }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
                let conn = graceful.watch(conn);
                // An upgrade (WebSocket) completes `conn` and ends this
                // watchdog: the upgraded socket is watched by its service
                // (realtime: heartbeats, `realtime.heartbeat_timeout_ms`).
                tokio::spawn(async move {
                    tokio::pin!(conn);
                    let mut check = tokio::time::interval(idle / 4);
                    loop {
                        tokio::select! {
                            result = &mut conn => {
                                if let Err(e) = result {
                                    tracing::debug!(error = %e, "connection closed with error");
                                }
                                break;
                            }
                            _ = check.tick() => {
                                // Dropping the connection closes its socket.
                                if activity.idle_for() >= idle {
                                    tracing::debug!(peer = %peer, "idle connection closed");
                                    break;
                                }
                            }
                        }
                    }
                });
            }
            _ = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    info!(grace_ms = grace.as_millis() as u64, "shutting down: draining in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => info!("all connections drained"),
        _ = tokio::time::sleep(grace) => warn!("grace period over; closing remaining connections"),
    }
}

/// One connection over the cap: a plain `503` with Fluxbase's error body,
/// then the socket is closed.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str =
        r#"{"code":"FB007","message":"Too many open connections; try again later","status":503,"hint":null}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let answered = async {
        stream.write_all(response.as_bytes()).await?;
        // Closing with the request unread would reset the connection, and
        // the client could lose the answer: end our side, then read what it
        // sent until it closes.
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answered).await;
}

/// Counts an open connection while it lives.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: Arc<AtomicUsize>) -> Slot {
        open.fetch_add(1, Ordering::Relaxed);
        Slot(open)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When a connection last moved a byte, and how many of its requests are
/// being answered (a slow query is not idleness).
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity { started: Instant::now(), last_ms: AtomicU64::new(0), in_flight: AtomicUsize::new(0) }
    }

    fn touch(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The client's socket, noting every byte that moves, holding its place
/// under `server.max_connections` until it closes.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
