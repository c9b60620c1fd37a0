//! The HTTP server: our own accept loop around hyper, so that every connection is
//! bounded in number, in time and in memory, with optional TLS.
//!
//! - at most `max_connections` connections are served at once; one more is answered
//!   503 with the JSON error body and closed (a few at a time; past that it is
//!   closed at once), so a flood cannot take the file descriptors the collectors
//!   need;
//! - the TLS handshake and each request head must arrive within the header timeout,
//!   idle keep-alives end after the idle timeout ([`guarded_io`](super::guarded_io));
//! - shutdown stops accepting, lets requests in progress finish, closes idle and
//!   slow connections at once, and gives up on the rest after a grace period that
//!   fits in the pod's termination grace period.

use super::access::{self, Peer};
use super::guarded_io::{ConnShared, GuardedIo, InFlight, Timeouts};
use super::head_gate::{HeadLimits, Verdict};
use super::reload::WebState;
use super::web_metrics::ConnectionRefusal;
use super::ApiError;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

/// Connections over the cap being answered 503 at once; more are closed unanswered.
const REFUSING_AT_ONCE: usize = 32;
/// How long a refusal (or the answer to plain HTTP on the TLS port) may take.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    pub max_connections: usize,
    pub timeouts: Timeouts,
    pub limits: HeadLimits,
    /// How long shutdown waits for requests in progress.
    pub shutdown_grace: Duration,
}

struct Shared {
    app: Router,
    web: Arc<WebState>,
    settings: ServerSettings,
}

/// Serves `app` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    web: Arc<WebState>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let shared = Arc::new(Shared { app, web, settings });
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut accept_errors = AcceptErrors::default();
    let mut memory = MemoryReturn::default();
    let mut cap_warned: Option<Instant> = None;
    let live = |slots: &Semaphore| settings.max_connections - slots.available_permits();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => memory.closed(live(&slots)),
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        accept_errors.on_error(e).await;
                        continue;
                    }
                };
                accept_errors.on_success();
                let _ = stream.set_nodelay(true);
                match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        memory.opened(live(&slots));
                        let (shared, stop) = (shared.clone(), stop_rx.clone());
                        conns.spawn(async move {
                            let _slot = slot;
                            connection(stream, addr, shared, stop).await;
                        });
                    }
                    Err(_) => {
                        shared.web.counters.refused_connection(ConnectionRefusal::MaxConnections);
                        if cap_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                            tracing::warn!(
                                max_connections = settings.max_connections,
                                "connection cap reached: refusing new connections (--web.max-connections)"
                            );
                            cap_warned = Some(Instant::now());
                        }
                        let tls = shared.web.current().config.tls.is_some();
                        match refusals.clone().try_acquire_owned() {
                            // A TLS client cannot read a plain answer: just close.
                            Ok(permit) if !tls => {
                                conns.spawn(async move {
                                    let _permit = permit;
                                    let body = raw_response(
                                        StatusCode::SERVICE_UNAVAILABLE,
                                        "too many connections; retry shortly",
                                    );
                                    answer_and_close(stream, &body).await;
                                });
                            }
                            _ => drop(stream),
                        }
                    }
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = conns.len();
    let drained = tokio::time::timeout(settings.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open,
            still_open = conns.len(),
            "closing connections still busy after {:?}",
            settings.shutdown_grace
        );
        conns.shutdown().await;
    }
    Ok(())
}

/// glibc keeps what threads free in per-thread arenas and gives little of it back to
/// the system: after a burst of slow connections (about 17 KiB each while they send
/// a head) closes, the agent's RSS would stay at the burst's peak. When the live
/// connections fall to half of their high-water mark, hand the freed memory back.
#[derive(Default)]
struct MemoryReturn {
    high_water: usize,
}

impl MemoryReturn {
    /// Bursts smaller than this are not worth a trim (it walks every arena).
    const WORTH_IT: usize = 64;

    fn opened(&mut self, live: usize) {
        self.high_water = self.high_water.max(live);
    }

    fn closed(&mut self, live: usize) {
        if self.high_water >= Self::WORTH_IT && live <= self.high_water / 2 {
            self.high_water = live;
            tokio::task::spawn_blocking(crate::memory::return_free_pages);
        }
    }
}

/// Out of file descriptors (EMFILE, ENFILE) or memory, accept fails until something
/// closes; the pending connection stays queued, so retrying at once would spin.
/// Back off as Go's net/http does (5 ms doubling to 1 s), and say so at most every
/// 10 s.
#[derive(Default)]
struct AcceptErrors {
    backoff: Option<Duration>,
    last_warned: Option<Instant>,
    since_warned: u64,
}

impl AcceptErrors {
    async fn on_error(&mut self, e: io::Error) {
        let exhausted = matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        if !exhausted {
            // The client gave up between SYN and accept (ECONNABORTED) and the like.
            tracing::debug!("accept: {e}");
            return;
        }
        self.since_warned += 1;
        if self
            .last_warned
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(
                failures = self.since_warned,
                "cannot accept connections: {e}; retrying with back-off"
            );
            self.last_warned = Some(Instant::now());
            self.since_warned = 0;
        }
        let next = self.backoff.map_or(Duration::from_millis(5), |b| {
            (b * 2).min(Duration::from_secs(1))
        });
        self.backoff = Some(next);
        tokio::time::sleep(next).await;
    }

    fn on_success(&mut self) {
        self.backoff = None;
    }
}

async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let accepted = Instant::now();
    let deadline = accepted + shared.settings.timeouts.read_header;
    // Until the client sends something, a connection costs its socket and this
    // small task only: the TLS and hyper state (several KiB) waits, boxed, for the
    // first byte, so thousands of half-open connections hold little memory.
    // (`readable()` is not enough: it can report a fresh socket readable.)
    let mut first = [0u8; 1];
    tokio::select! {
        r = tokio::time::timeout_at(deadline, stream.peek(&mut first)) => match r {
            Ok(Ok(n)) if n > 0 => {}
            // Closed, failed, or silent for the whole header timeout.
            _ => return,
        },
        () = stopped(&mut stop) => return,
    }
    Box::pin(talk(stream, addr, accepted, shared, stop)).await;
}

/// A connection that has sent its first byte: TLS if configured, then HTTP.
async fn talk(
    stream: TcpStream,
    addr: SocketAddr,
    accepted: Instant,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let timeouts = shared.settings.timeouts;
    let deadline = accepted + timeouts.read_header;
    let active = shared.web.current();
    let Some(tls) = &active.config.tls else {
        let peer = Peer {
            addr,
            client_cert: false,
        };
        drop(active);
        return serve_http(stream, peer, accepted, shared, stop).await;
    };
    let handshake = async move {
        // A TLS client speaks first with a handshake record (0x16). Anything else is
        // most likely plain HTTP sent to the TLS port: say so, as Go servers do,
        // rather than leave the client with a reset.
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(1) if first[0] != 0x16 => return Err(Some(stream)),
            Ok(1) => {}
            _ => return Err(None),
        }
        tls.acceptor.accept(stream).await.map_err(|e| {
            tracing::debug!(peer = %addr, "TLS handshake failed: {e}");
            None
        })
    };
    let tls_stream = tokio::select! {
        r = tokio::time::timeout_at(deadline, handshake) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(Some(plain))) => {
                shared.web.counters.refused_connection(ConnectionRefusal::PlainHttp);
                let body = raw_response(
                    StatusCode::BAD_REQUEST,
                    "this port serves HTTPS: the client sent plain HTTP",
                );
                return answer_and_close(plain, &body).await;
            }
            Ok(Err(None)) => {
                shared.web.counters.refused_connection(ConnectionRefusal::TlsHandshake);
                return;
            }
            Err(_) => {
                shared.web.counters.refused_connection(ConnectionRefusal::TlsHandshake);
                tracing::debug!(peer = %addr, "TLS handshake not done within {:?}", timeouts.read_header);
                return;
            }
        },
        () = stopped(&mut stop) => return,
    };
    let client_cert = tls_stream
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|c| !c.is_empty());
    drop(active);
    let peer = Peer { addr, client_cert };
    serve_http(tls_stream, peer, Instant::now(), shared, stop).await;
}

/// `started`: when the first request's header timeout began.
async fn serve_http<T>(
    io: T,
    peer: Peer,
    started: Instant,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn_shared = Arc::new(ConnShared::default());
    let settings = shared.settings;
    let io = GuardedIo::new(
        io,
        conn_shared.clone(),
        settings.limits,
        settings.timeouts,
        started,
    );
    let service = ConnService {
        shared,
        conn: conn_shared,
        peer,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .max_headers(settings.limits.max_headers)
        .header_read_timeout(None);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %peer.addr, "connection ended: {e}");
    }
}

/// One connection's view of the app: answers a rejected head with its error, checks
/// access, routes, and adds the configured headers.
#[derive(Clone)]
struct ConnService {
    shared: Arc<Shared>,
    conn: Arc<ConnShared>,
    peer: Peer,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let verdict = self.conn.next_verdict();
        let in_flight = InFlight::enter(&self.conn);
        let this = self.clone();
        Box::pin(async move {
            let response = this.answer(req, verdict).await;
            drop(in_flight);
            Ok(response)
        })
    }
}

impl ConnService {
    async fn answer(&self, req: Request<Incoming>, verdict: Option<Verdict>) -> Response {
        let has_body = match verdict {
            Some(Verdict::Reject(r)) => {
                return closing(ApiError::new(r.status, r.message).into_response())
            }
            Some(Verdict::Serve { has_body }) => has_body,
            // hyper parsed a head the reader did not hand it: cannot happen; answer
            // it, but do not trust the connection after.
            None => true,
        };
        let web = &self.shared.web;
        let active = web.current();
        let (parts, body) = req.into_parts();
        let mut response = match access::admit(&parts, &self.peer, web, &active).await {
            Err(refused) => refused,
            Ok(()) => {
                let req = Request::from_parts(parts, body);
                match self.shared.app.clone().oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                }
            }
        };
        for (name, value) in &active.config.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        if has_body {
            // No endpoint reads a body, and the reader stopped looking at heads.
            response = closing(response);
        }
        response
    }
}

/// Completes once shutdown has begun (at once if it already has).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn closing(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A whole HTTP/1.1 answer with the JSON error body, for connections hyper never sees.
fn raw_response(status: StatusCode, message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error": message }).to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// Writes `answer`, then reads and drops what the client sent until it closes (or
/// briefly), so closing does not reset the connection before the client has read
/// the answer (a close with unread input sends RST, which can discard it).
async fn answer_and_close(mut stream: TcpStream, answer: &[u8]) {
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<_, io::Error>(())
    })
    .await;
}
