//! The byte stream between a client connection and hyper, with the limits hyper does
//! not enforce on a server connection:
//!
//! - **header timeout**: a request head must be complete within `read_header` of the
//!   connection's start (after the TLS handshake) or of its own first byte; a
//!   client that sent nothing is closed quietly, one that sent part of a head gets a
//!   408 (hyper's own `header_read_timeout` also counts the idle time between
//!   keep-alive requests, so it cannot be both short and kind to scrapers);
//! - **idle timeout**: a keep-alive connection with no request for `idle` is closed;
//! - **stalled writes**: a client that stops reading its answer for `idle` is cut;
//! - **head checks** ([`head_gate`](super::head_gate)): a head hyper would refuse
//!   with an empty body is replaced by a harmless one whose answer is our JSON error.

use super::head_gate::{self, HeadLimits, Inspection, Rejection, Verdict};
use axum::http::StatusCode;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What hyper is handed in place of a rejected head: a request every router answers
/// without side effects. Its answer is the rejection, taken from the verdict queue.
const STAND_IN_HEAD: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub read_header: Duration,
    pub idle: Duration,
}

/// State shared by a connection's reader and its service: the verdict on each head
/// handed to hyper, in order (hyper serves HTTP/1 requests one after another), and
/// the number of requests being answered.
#[derive(Debug, Default)]
pub struct ConnShared {
    verdicts: Mutex<VecDeque<Verdict>>,
    in_flight: AtomicUsize,
    /// When the last answer was produced: idleness counts from there.
    answered_at: Mutex<Option<Instant>>,
}

impl ConnShared {
    /// The verdict on the head hyper has just parsed.
    pub fn next_verdict(&self) -> Option<Verdict> {
        self.verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    fn push(&self, v: Verdict) {
        self.verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(v);
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    fn answered_at(&self) -> Option<Instant> {
        *self.answered_at.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Held while a request is being answered: a connection is not idle then.
pub struct InFlight(Arc<ConnShared>);

impl InFlight {
    pub fn enter(shared: &Arc<ConnShared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.answered_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reading request heads.
    Heads,
    /// A request with a body was let through: its answer closes the connection, so
    /// the rest is passed on without looking.
    Passthrough,
    /// A head was rejected: hyper has the stand-in and answers it with `close`.
    Rejected,
    /// Timed out with nothing pending: hyper reads end-of-file and closes.
    Eof,
}

pub struct GuardedIo<T> {
    inner: T,
    shared: Arc<ConnShared>,
    limits: HeadLimits,
    timeouts: Timeouts,
    mode: Mode,
    /// Bytes of the head being read, held back until it is complete.
    pending: Vec<u8>,
    /// Bytes hyper may read, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// When the head being read started: the connection's start for the first one.
    head_since: Option<Instant>,
    /// The last head handed on or the last byte written.
    last_activity: Instant,
    read_timer: Pin<Box<Sleep>>,
    write_stalled_since: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
}

impl<T> GuardedIo<T> {
    /// `started`: when the header timeout of the first request began (the accept,
    /// or the end of the TLS handshake).
    pub fn new(
        inner: T,
        shared: Arc<ConnShared>,
        limits: HeadLimits,
        timeouts: Timeouts,
        started: Instant,
    ) -> Self {
        let now = Instant::now();
        GuardedIo {
            inner,
            shared,
            limits,
            timeouts,
            mode: Mode::Heads,
            pending: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            head_since: Some(started),
            last_activity: now,
            read_timer: Box::pin(tokio::time::sleep_until(started + timeouts.read_header)),
            write_stalled_since: None,
            write_timer: Box::pin(tokio::time::sleep_until(now + timeouts.idle)),
        }
    }

    /// Takes bytes read from the client: whole valid heads go on to hyper.
    fn take(&mut self, bytes: &[u8]) {
        if self.mode == Mode::Passthrough {
            self.out.extend_from_slice(bytes);
            return;
        }
        if self.mode != Mode::Heads {
            return;
        }
        let mut old_len = self.pending.len();
        if old_len == 0 && self.head_since.is_none() {
            self.head_since = Some(Instant::now());
        }
        self.pending.extend_from_slice(bytes);
        while !self.pending.is_empty()
            && head_gate::worth_inspecting(&self.pending, old_len, &self.limits)
        {
            match head_gate::inspect(&self.pending, &self.limits) {
                Inspection::Partial => return,
                Inspection::Complete {
                    verdict: Verdict::Reject(r),
                    ..
                } => return self.reject(r),
                Inspection::Complete {
                    len,
                    verdict: verdict @ Verdict::Serve { has_body },
                } => {
                    self.out.extend(self.pending.drain(..len));
                    self.shared.push(verdict);
                    let now = Instant::now();
                    self.last_activity = now;
                    if has_body {
                        self.out.append(&mut self.pending);
                        self.mode = Mode::Passthrough;
                        self.head_since = None;
                        return;
                    }
                    self.head_since = (!self.pending.is_empty()).then_some(now);
                    old_len = 0;
                }
            }
        }
        if self.pending.is_empty() {
            self.head_since = None;
        }
    }

    fn reject(&mut self, r: Rejection) {
        tracing::debug!(status = %r.status, error = %r.message, "request head rejected");
        self.shared.push(Verdict::Reject(r));
        self.out.extend_from_slice(STAND_IN_HEAD);
        self.pending = Vec::new();
        self.head_since = None;
        self.mode = Mode::Rejected;
    }

    fn read_deadline(&self) -> Option<Instant> {
        match self.mode {
            Mode::Rejected | Mode::Eof => None,
            _ if self.head_since.is_some() => {
                self.head_since.map(|t| t + self.timeouts.read_header)
            }
            _ if self.shared.busy() => None,
            _ => {
                let since = self
                    .shared
                    .answered_at()
                    .map_or(self.last_activity, |t| t.max(self.last_activity));
                Some(since + self.timeouts.idle)
            }
        }
    }

    fn on_read_timeout(&mut self) {
        if self.pending.is_empty() {
            self.mode = Mode::Eof;
        } else {
            let secs = self.timeouts.read_header.as_secs_f64();
            self.reject(Rejection::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("request head not complete within {secs}s"),
            ));
        }
    }

    /// Fails a write that has made no progress for the idle timeout.
    fn write_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let since = *self.write_stalled_since.get_or_insert_with(Instant::now);
        let deadline = since + self.timeouts.idle;
        if self.write_timer.deadline() != deadline {
            self.write_timer.as_mut().reset(deadline);
        }
        match self.write_timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "client read nothing of the answer for {}s",
                    self.timeouts.idle.as_secs_f64()
                ),
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn wrote(&mut self) {
        self.write_stalled_since = None;
        self.last_activity = Instant::now();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match this.mode {
                // The stand-in's answer closes the connection: nothing more to read.
                Mode::Rejected => return Poll::Pending,
                Mode::Eof => return Poll::Ready(Ok(())),
                Mode::Passthrough => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Mode::Heads => {}
            }
            if let Some(deadline) = this.read_deadline() {
                if this.read_timer.deadline() != deadline {
                    this.read_timer.as_mut().reset(deadline);
                }
                if this.read_timer.as_mut().poll(cx).is_ready() {
                    this.on_read_timeout();
                    continue;
                }
            }
            let mut scratch = [0u8; 8192];
            let mut chunk = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut chunk) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if chunk.filled().is_empty() => {
                    // The client closed; a partial head it left is dropped.
                    this.pending.clear();
                    this.mode = Mode::Eof;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {
                    let n = chunk.filled().len();
                    this.take(&scratch[..n]);
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.wrote();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.write_stalled(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.wrote();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.write_stalled(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                this.write_stalled_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => this.write_stalled(cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.write_stalled(cx).map(Err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 1024,
        max_uri_bytes: 256,
        max_headers: 10,
    };
    const TIMEOUTS: Timeouts = Timeouts {
        read_header: Duration::from_secs(5),
        idle: Duration::from_secs(60),
    };

    fn guarded() -> (
        tokio::io::DuplexStream,
        GuardedIo<tokio::io::DuplexStream>,
        Arc<ConnShared>,
    ) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let shared = Arc::new(ConnShared::default());
        (
            client,
            GuardedIo::new(server, shared.clone(), LIMITS, TIMEOUTS, Instant::now()),
            shared,
        )
    }

    async fn read_some(io: &mut GuardedIo<tokio::io::DuplexStream>) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let n = io.read(&mut buf).await.unwrap();
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn a_head_reaches_hyper_only_once_complete() {
        let (mut client, mut io, shared) = guarded();
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHo")
            .await
            .unwrap();
        let read = tokio::time::timeout(Duration::from_millis(100), read_some(&mut io)).await;
        assert!(read.is_err(), "a partial head was handed on: {read:?}");
        client
            .write_all(b"st: a\r\n\r\nGET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let got = read_some(&mut io).await;
        assert_eq!(
            got,
            b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n"
        );
        assert_eq!(
            shared.next_verdict(),
            Some(Verdict::Serve { has_body: false })
        );
        assert_eq!(
            shared.next_verdict(),
            Some(Verdict::Serve { has_body: false })
        );
        assert_eq!(shared.next_verdict(), None);
    }

    #[tokio::test]
    async fn a_bad_head_becomes_the_stand_in_and_its_rejection() {
        let (mut client, mut io, shared) = guarded();
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\nNOT HTTP\r\n\r\n")
            .await
            .unwrap();
        let got = read_some(&mut io).await;
        assert_eq!(
            got,
            [b"GET / HTTP/1.1\r\n\r\n".as_slice(), STAND_IN_HEAD].concat()
        );
        assert_eq!(
            shared.next_verdict(),
            Some(Verdict::Serve { has_body: false })
        );
        match shared.next_verdict() {
            Some(Verdict::Reject(r)) => assert_eq!(r.status, StatusCode::BAD_REQUEST),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn bodies_pass_through_unread() {
        let (mut client, mut io, shared) = guarded();
        client
            .write_all(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n\x00\x01\x02\x03")
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < 42 {
            got.extend(read_some(&mut io).await);
        }
        assert!(got.ends_with(b"\x00\x01\x02\x03"), "{got:?}");
        assert_eq!(
            shared.next_verdict(),
            Some(Verdict::Serve { has_body: true })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_reads_eof_after_the_header_timeout() {
        let (_client, mut io, _) = guarded();
        let started = Instant::now();
        assert!(read_some(&mut io).await.is_empty());
        assert_eq!(started.elapsed(), TIMEOUTS.read_header);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_head_is_answered_408() {
        let (mut client, mut io, shared) = guarded();
        client.write_all(b"GET / HT").await.unwrap();
        let got = read_some(&mut io).await;
        assert_eq!(got, STAND_IN_HEAD);
        match shared.next_verdict() {
            Some(Verdict::Reject(r)) => assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_cut_after_the_idle_timeout() {
        // A 1 KiB pipe that the client never reads: writes stall once it is full.
        let (_client, server) = tokio::io::duplex(1024);
        let shared = Arc::new(ConnShared::default());
        let mut io = GuardedIo::new(server, shared, LIMITS, TIMEOUTS, Instant::now());
        let started = Instant::now();
        let err = loop {
            if let Err(e) = io.write_all(&[b'x'; 4096]).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert_eq!(started.elapsed(), TIMEOUTS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_ends_after_the_idle_timeout_not_while_busy() {
        let (mut client, mut io, shared) = guarded();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        read_some(&mut io).await;
        let busy = InFlight::enter(&shared);
        let waited = tokio::time::timeout(TIMEOUTS.idle * 2, read_some(&mut io)).await;
        assert!(waited.is_err(), "closed while a request was in flight");
        drop(busy);
        let started = Instant::now();
        assert!(read_some(&mut io).await.is_empty());
        assert_eq!(started.elapsed(), TIMEOUTS.idle);
    }
}
