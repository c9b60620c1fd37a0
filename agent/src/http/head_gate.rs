//! Judges each HTTP/1 request head before hyper parses it.
//!
//! hyper answers a head it cannot parse (bad request line, header block too large,
//! URI too long) with its own 400/431/414 and an empty body, and gives the service no
//! chance to answer instead. The connection reader therefore holds back the bytes of
//! each head until it is complete, runs the checks hyper would run (with lower limits
//! of our own), and replaces a head that fails them with a harmless one whose answer
//! is our JSON error. Bytes reach hyper only as whole, valid heads (or a body).

use axum::http::{HeaderName, Method, StatusCode, Uri};

/// Limits on a request head. Below hyper's own (400 KiB buffer, 64 KiB URI), so
/// hyper never rejects a head we let through.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Request line plus headers plus the blank line.
    pub max_head_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_headers: usize,
}

impl Default for HeadLimits {
    /// 16 KiB heads (Node.js's default; a scrape's head is about 300 bytes), 8 KiB
    /// URIs, and hyper's 100 headers.
    fn default() -> Self {
        HeadLimits {
            max_head_bytes: 16 * 1024,
            max_uri_bytes: 8 * 1024,
            max_headers: 100,
        }
    }
}

/// What the server does with a head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it. `has_body`: the request carries a body (or is a CONNECT); no
    /// endpoint reads one, so the answer closes the connection and the reader stops
    /// tracking heads instead of following the body's framing.
    Serve { has_body: bool },
    /// Answer with this error and close.
    Reject(Rejection),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub message: String,
}

impl Rejection {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Rejection {
            status,
            message: message.into(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Inspection {
    /// Not a complete head yet, and nothing wrong so far.
    Partial,
    /// The first `len` bytes are a complete head.
    Complete { len: usize, verdict: Verdict },
}

/// Inspects the bytes at the start of a request: `Partial` until a whole head is
/// there, then the verdict on it. Bytes after the head are not looked at.
pub fn inspect(buf: &[u8], limits: &HeadLimits) -> Inspection {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    let reject = |status, message: String| Inspection::Complete {
        len: buf.len(),
        verdict: Verdict::Reject(Rejection::new(status, message)),
    };
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if let Some(path) = req.path {
                if path.len() > limits.max_uri_bytes {
                    return reject(StatusCode::URI_TOO_LONG, uri_too_long(limits));
                }
            } else if buf.len() > limits.max_uri_bytes + 32 && !buf.contains(&b'\n') {
                // A request line still unfinished this long is a URI over the limit
                // (methods and the version are short).
                return reject(StatusCode::URI_TOO_LONG, uri_too_long(limits));
            }
            if buf.len() > limits.max_head_bytes {
                return reject(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    head_too_large(limits),
                );
            }
            return Inspection::Partial;
        }
        Err(httparse::Error::TooManyHeaders) => {
            return reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("more than {} request headers", limits.max_headers),
            )
        }
        Err(e) => return reject(StatusCode::BAD_REQUEST, malformed(&req, e)),
    };
    let verdict = judge(&req, len, limits);
    Inspection::Complete { len, verdict }
}

fn uri_too_long(limits: &HeadLimits) -> String {
    format!("request URI longer than {} bytes", limits.max_uri_bytes)
}

fn head_too_large(limits: &HeadLimits) -> String {
    format!(
        "request line and headers larger than {} bytes",
        limits.max_head_bytes
    )
}

fn malformed(req: &httparse::Request<'_, '_>, e: httparse::Error) -> String {
    let part = match (req.method, req.path, req.version) {
        (None, _, _) => "request line (method)",
        (Some(_), None, _) => "request line (target)",
        (Some(_), Some(_), None) => "request line (HTTP version)",
        _ => "header",
    };
    format!("malformed request: {part}: {e}")
}

/// The checks hyper makes on a complete head, each answered as hyper would (400,
/// 414, 431) but with a message.
fn judge(req: &httparse::Request<'_, '_>, len: usize, limits: &HeadLimits) -> Verdict {
    let reject = |status, message: String| Verdict::Reject(Rejection::new(status, message));
    if len > limits.max_head_bytes {
        return reject(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            head_too_large(limits),
        );
    }
    let path = req.path.unwrap_or_default();
    if path.len() > limits.max_uri_bytes {
        return reject(StatusCode::URI_TOO_LONG, uri_too_long(limits));
    }
    let method = req.method.unwrap_or_default();
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return reject(
            StatusCode::BAD_REQUEST,
            format!("malformed request: method {method:?}"),
        );
    };
    if let Err(e) = path.parse::<Uri>() {
        return reject(
            StatusCode::BAD_REQUEST,
            format!("malformed request: target {:?}: {e}", truncated(path)),
        );
    }
    let http11 = req.version == Some(1);
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<bool> = None;
    for h in req.headers.iter() {
        if HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            return reject(
                StatusCode::BAD_REQUEST,
                format!("malformed request: header name {:?}", truncated(h.name)),
            );
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                return reject(
                    StatusCode::BAD_REQUEST,
                    "malformed request: Transfer-Encoding in an HTTP/1.0 request".into(),
                );
            }
            transfer_encoding = Some(ends_in_chunked(h.value));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = digits(h.value) else {
                return reject(
                    StatusCode::BAD_REQUEST,
                    "malformed request: invalid Content-Length".into(),
                );
            };
            if content_length.is_some_and(|prev| prev != n) {
                return reject(
                    StatusCode::BAD_REQUEST,
                    "malformed request: differing Content-Length headers".into(),
                );
            }
            content_length = Some(n);
        }
    }
    if transfer_encoding == Some(false) {
        return reject(
            StatusCode::BAD_REQUEST,
            "malformed request: Transfer-Encoding does not end in chunked".into(),
        );
    }
    let has_body = transfer_encoding.is_some()
        || content_length.is_some_and(|n| n > 0)
        || method == Method::CONNECT;
    Verdict::Serve { has_body }
}

/// Content-Length as hyper reads it in a request: ASCII digits only, no sign, no
/// list, fits in a u64 (hyper keeps u64::MAX for itself).
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    (n < u64::MAX).then_some(n)
}

/// Whether the last coding of a Transfer-Encoding value is `chunked`.
fn ends_in_chunked(value: &[u8]) -> bool {
    let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Whether `buf` needs a new look given that `buf[..old_len]` was `Partial`: only a
/// line feed can complete (or newly break) a head, and only growth past the URI
/// limit can make a partial head too long. Keeps a head trickled in a byte at a
/// time from costing a parse per byte.
pub fn worth_inspecting(buf: &[u8], old_len: usize, limits: &HeadLimits) -> bool {
    old_len == 0 || buf.len() > limits.max_uri_bytes + 32 || buf[old_len..].contains(&b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(head: &str) -> Verdict {
        match inspect(head.as_bytes(), &HeadLimits::default()) {
            Inspection::Complete { verdict, .. } => verdict,
            Inspection::Partial => panic!("partial: {head:?}"),
        }
    }

    fn status(head: &str) -> StatusCode {
        match verdict(head) {
            Verdict::Reject(r) => r.status,
            other => panic!("{head:?} was not rejected: {other:?}"),
        }
    }

    #[test]
    fn a_plain_get_is_served_and_its_length_counted() {
        let head = "GET /metrics HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\nGET / HTTP/1.1";
        let want = head.find("\r\n\r\n").unwrap() + 4;
        assert_eq!(
            inspect(head.as_bytes(), &HeadLimits::default()),
            Inspection::Complete {
                len: want,
                verdict: Verdict::Serve { has_body: false }
            }
        );
    }

    #[test]
    fn heads_are_partial_until_the_blank_line() {
        for part in [
            "",
            "GET",
            "GET /metrics HTTP/1.1\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert_eq!(
                inspect(part.as_bytes(), &HeadLimits::default()),
                Inspection::Partial,
                "{part:?}"
            );
        }
    }

    #[test]
    fn a_bad_request_line_is_400_as_soon_as_it_is_seen() {
        // No blank line yet: the request line alone is enough to tell.
        let got = inspect(b"G@T / HTTP/1.1\r\n", &HeadLimits::default());
        assert!(
            matches!(got, Inspection::Complete { verdict: Verdict::Reject(ref r), .. } if r.status == StatusCode::BAD_REQUEST),
            "{got:?}"
        );
        assert_eq!(status("GET / HTTP/9.9\r\n\r\n"), StatusCode::BAD_REQUEST);
        assert_eq!(
            status("\x16\x03\x01\x02\x00\x01\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status("GET / HTTP/1.1\r\nbad header\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn framing_errors_hyper_refuses_are_400() {
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn bodies_are_noted() {
        assert_eq!(
            verdict("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Verdict::Serve { has_body: true }
        );
        assert_eq!(
            verdict("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Verdict::Serve { has_body: true }
        );
        assert_eq!(
            verdict("GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"),
            Verdict::Serve { has_body: false }
        );
    }

    #[test]
    fn limits_give_414_and_431() {
        let limits = HeadLimits::default();
        let long_uri = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(limits.max_uri_bytes));
        assert_eq!(status(&long_uri), StatusCode::URI_TOO_LONG);
        // Told before the line ends, so a client cannot make us buffer it all.
        let unfinished = format!("GET /{}", "a".repeat(limits.max_uri_bytes + 64));
        assert!(matches!(
            inspect(unfinished.as_bytes(), &limits),
            Inspection::Complete { verdict: Verdict::Reject(ref r), .. } if r.status == StatusCode::URI_TOO_LONG
        ));
        let big = format!(
            "GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "b".repeat(limits.max_head_bytes)
        );
        assert_eq!(status(&big), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let unfinished = format!(
            "GET / HTTP/1.1\r\nX-Big: {}",
            "b".repeat(limits.max_head_bytes)
        );
        assert!(matches!(
            inspect(unfinished.as_bytes(), &limits),
            Inspection::Complete { verdict: Verdict::Reject(ref r), .. } if r.status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        ));
        let many: String = (0..=limits.max_headers)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn only_line_feeds_are_worth_a_look() {
        let limits = HeadLimits::default();
        assert!(worth_inspecting(b"G", 0, &limits));
        assert!(!worth_inspecting(b"GET / HT", 3, &limits));
        assert!(worth_inspecting(b"GET / HTTP/1.1\r\n", 10, &limits));
        let long = vec![b'a'; limits.max_uri_bytes + 40];
        assert!(worth_inspecting(&long, long.len() - 1, &limits));
    }
}
