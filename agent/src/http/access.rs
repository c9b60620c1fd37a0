//! Who may reach the router: the rate limit, client certificates where they are
//! required per request, and basic authentication. Fails closed: a request that is
//! not shown to be allowed gets a 401/403/429 with the JSON error body.

use super::auth;
use super::reload::{Active, WebState};
use super::tls::ClientCerts;
use super::web_metrics::RequestRefusal;
use super::ApiError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The probe endpoints that may be left open (`--web.unauthenticated-path`): the
/// kubelet's httpGet probes cannot send credentials or a client certificate, and
/// these answer "ok"/"ready" and nothing about the node.
pub const OPENABLE_PATHS: &[&str] = &["/healthz", "/readyz"];

/// What the connection knows about its client.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    /// The client showed a certificate that verified against `client_ca`.
    pub client_cert: bool,
}

/// Decides on one request; `Err` is the answer to send instead.
pub async fn admit(
    req: &axum::http::request::Parts,
    peer: &Peer,
    web: &WebState,
    active: &Active,
) -> Result<(), Response> {
    let path = req.uri.path();
    if web.is_open(path) {
        return Ok(());
    }
    if let Some(bucket) = &active.limiter {
        if !bucket.allow() {
            web.counters.refused_request(RequestRefusal::RateLimited);
            let mut r =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded").into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Err(r);
        }
    }
    if let Some(tls) = &active.config.tls {
        let required = matches!(
            tls.client_certs,
            ClientCerts::Required | ClientCerts::RequiredOutsideOpenPaths
        );
        if required && !peer.client_cert {
            web.counters
                .refused_request(RequestRefusal::ClientCertificateMissing);
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "a client certificate signed by the configured client CA is required",
            )
            .into_response());
        }
    }
    let users = &active.config.users;
    if users.is_empty() {
        return Ok(());
    }
    let given = req
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| auth::credentials(v.as_bytes()));
    let (message, why) = match given {
        Some(Some((user, password))) => {
            if web.passwords.check(users, &user, &password).await {
                return Ok(());
            }
            tracing::debug!(peer = %peer.addr, %user, "basic auth failed");
            (
                "wrong user name or password",
                RequestRefusal::CredentialsWrong,
            )
        }
        Some(None) => (
            "the Authorization header is not Basic credentials",
            RequestRefusal::CredentialsWrong,
        ),
        None => (
            "authentication required",
            RequestRefusal::CredentialsMissing,
        ),
    };
    web.counters.refused_request(why);
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"nodediag\", charset=\"UTF-8\""),
    );
    Err(r)
}

/// exporter-toolkit's `rate_limit`: one request per `interval` on average, bursts of
/// `burst`, over all clients (it protects the agent, not fairness between clients).
pub struct TokenBucket {
    interval: Duration,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(interval: Duration, burst: u32) -> Self {
        TokenBucket {
            interval,
            burst: f64::from(burst),
            state: Mutex::new((f64::from(burst), Instant::now())),
        }
    }

    pub fn allow(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let refill = now.duration_since(last).as_secs_f64() / self.interval.as_secs_f64();
        let tokens = (tokens + refill).min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_refills() {
        let b = TokenBucket::new(Duration::from_millis(50), 3);
        assert!((0..3).all(|_| b.allow()));
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(120));
        assert!(b.allow(), "refilled after two intervals");
    }
}
