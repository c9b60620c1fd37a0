//! The HTTP surface: `/` (text report), `/metrics`, `/healthz`, `/readyz` and the JSON
//! API under `/api/v1/`. Handlers only read the store. The server around the router
//! (limits, TLS, authentication) starts in `web_server` and runs in `server`.

use crate::finding::Severity;
use crate::metrics::exposition::{Exposition, Format};
use crate::metrics::gzip;
use crate::store::{Snapshot, Store};

mod access;
pub mod auth;
pub mod cgroup;
pub mod conntrack;
pub mod disk;
pub mod dns;
pub mod fd_limit;
mod guarded_io;
mod head_gate;
pub mod kmsg;
pub mod netns;
mod parts_body;
mod reload;
mod server;
mod tls;
mod web_config;
pub mod web_flags;
pub(crate) mod web_metrics;
pub mod web_server;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

/// An endpoint a signal serves under `/api/v1/`.
pub struct Route {
    pub path: &'static str,
    pub handler: MethodRouter<Arc<Store>>,
}

impl Route {
    pub fn get<H, T>(path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, Arc<Store>>,
        T: 'static,
    {
        Self {
            path,
            handler: get(handler),
        }
    }
}

/// What the server renders that it does not own: the report and the metrics of every
/// signal, the signals' own endpoints, and which finding ids exist.
pub struct View {
    pub report: fn(&Snapshot, SystemTime) -> String,
    /// What `/metrics` encodes, with the web server's own families
    /// ([`web_server::WebServer::register_metrics`]).
    pub metrics: Arc<Exposition>,
    pub routes: Vec<Route>,
    pub finding: fn(&str) -> bool,
}

const OWN_ENDPOINTS: [&str; 7] = [
    "/",
    "/metrics",
    "/healthz",
    "/readyz",
    "/api/v1/findings",
    "/api/v1/snapshot",
    "/api/v1/collectors/{name}",
];

pub fn router(store: Arc<Store>, view: View) -> Router {
    let View {
        report,
        metrics,
        routes,
        finding,
    } = view;
    let endpoints: Vec<&'static str> = OWN_ENDPOINTS
        .into_iter()
        .chain(routes.iter().map(|r| r.path))
        .collect();
    let mut router = Router::new()
        .route(
            "/",
            get(move |state: State<Arc<Store>>, q: RawQuery| text_report(state, q, report)),
        )
        .route(
            "/metrics",
            get(move |headers: HeaderMap, q: RawQuery| {
                metrics_handler(headers, q, metrics.clone())
            }),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/api/v1/findings",
            get(move |state: State<Arc<Store>>, q: RawQuery| findings(state, q, finding)),
        )
        .route("/api/v1/snapshot", get(snapshot))
        .route("/api/v1/collectors/{name}", get(collector));
    for r in routes {
        router = router.route(r.path, r.handler);
    }
    router
        .fallback(move |uri: axum::http::Uri| not_found(uri, endpoints.clone()))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(store)
}

/// A 4xx/5xx with a JSON body: `{"error": "...", ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "error": message.into() }),
        }
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.body[key] = value;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// Parses the query string, refusing parameters the endpoint does not know and
/// parameters given twice (which one would win is a guess the client should not
/// have to make).
pub(crate) fn query(
    raw: Option<String>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    query_with_repeats(raw, allowed, &[])
}

/// [`query`], with `repeatable` parameters allowed more than once (the map keeps
/// the last; the endpoint reads all of them from the raw string).
pub(crate) fn query_with_repeats(
    raw: Option<String>,
    allowed: &[&str],
    repeatable: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for pair in raw
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k);
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown query parameter {k:?}"),
            )
            .with("allowed", json!(allowed)));
        }
        if out.contains_key(&k) && !repeatable.contains(&k.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("query parameter {k:?} given more than once"),
            )
            .with("parameter", json!(k)));
        }
        out.insert(k, percent_decode(v));
    }
    Ok(out)
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn text_report(
    State(store): State<Arc<Store>>,
    q: RawQuery,
    report: fn(&Snapshot, SystemTime) -> String,
) -> Result<Response, ApiError> {
    query(q.0, &[])?;
    let body = store.view(|s| report(s, SystemTime::now()));
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

async fn metrics_handler(
    headers: HeaderMap,
    q: RawQuery,
    metrics: Arc<Exposition>,
) -> Result<Response, ApiError> {
    query(q.0, &[])?;
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let format = Format::negotiate(header_str(header::ACCEPT));
    let gzip = gzip::accepted(header_str(header::ACCEPT_ENCODING));
    let body = metrics
        .scrape(format, gzip)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let body = axum::body::Body::new(parts_body::Parts::new(body));
    let mut response = ([(header::CONTENT_TYPE, format.content_type())], body).into_response();
    let h = response.headers_mut();
    // The body depends on both: a cache in between must know.
    h.insert(
        header::VARY,
        HeaderValue::from_static("accept, accept-encoding"),
    );
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response)
}

async fn healthz(q: RawQuery) -> Result<&'static str, ApiError> {
    query(q.0, &[])?;
    Ok("ok\n")
}

async fn readyz(State(store): State<Arc<Store>>, q: RawQuery) -> Result<&'static str, ApiError> {
    query(q.0, &[])?;
    // Each collector not ready yet, with its state (pending, hung, error and why).
    let waiting: BTreeMap<&str, Value> = store.read(|s| {
        s.not_ready()
            .into_iter()
            .map(|n| (n, json!(s.collectors[n].status)))
            .collect()
    });
    if waiting.is_empty() && store.judged() {
        Ok("ready\n")
    } else if waiting.is_empty() {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "every collector has sampled; findings are being evaluated",
        )
        .with("pending", json!(["findings"])))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not every collector has sampled yet",
        )
        .with("pending", json!(waiting.keys().collect::<Vec<_>>()))
        .with("collectors", json!(waiting)))
    }
}

pub(crate) fn envelope(node: &str) -> Value {
    json!({ "node": node, "generated_at": crate::time::rfc3339(SystemTime::now()) })
}

async fn findings(
    State(store): State<Arc<Store>>,
    q: RawQuery,
    known: fn(&str) -> bool,
) -> Result<Json<Value>, ApiError> {
    let params = query(q.0, &["severity", "finding", "subject"])?;
    let min_severity = match params.get("severity").map(String::as_str) {
        None => Severity::Info,
        Some("info") => Severity::Info,
        Some("warning") => Severity::Warning,
        Some("critical") => Severity::Critical,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "severity {other:?}: expected info, warning or critical (the minimum to show)"
                ),
            ))
        }
    };
    if let Some(id) = params.get("finding") {
        if !known(id) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown finding id {id:?}"),
            ));
        }
    }
    Ok(Json(store.view(|s| {
        let list: Vec<_> = s
            .findings
            .iter()
            .filter(|f| f.severity >= min_severity)
            .filter(|f| params.get("finding").is_none_or(|id| f.id == id))
            .filter(|f| params.get("subject").is_none_or(|sub| &f.subject == sub))
            .collect();
        let mut v = envelope(&s.node);
        v["findings"] = json!(list);
        v
    })))
}

fn collector_json(name: &str, c: &crate::store::CollectorState) -> Value {
    let mut v = json!(c);
    v["collector"] = json!(name);
    match c.latest() {
        Some(s) => {
            v["sampled_at"] = json!(crate::time::rfc3339(s.at));
            v["sample"] = s.sample.to_json();
        }
        None => {
            v["sampled_at"] = Value::Null;
            v["sample"] = Value::Null;
        }
    }
    v
}

async fn snapshot(State(store): State<Arc<Store>>, q: RawQuery) -> Result<Json<Value>, ApiError> {
    query(q.0, &[])?;
    Ok(Json(store.view(|s| {
        let mut v = envelope(&s.node);
        v["ready"] = json!(s.ready());
        v["findings"] = json!(s.findings);
        v["rules"] = json!(s.rules);
        v["setup"] = json!(s.setup);
        v["collectors"] = s
            .collectors
            .iter()
            .map(|(n, c)| (n.to_string(), collector_json(n, c)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        v
    })))
}

async fn collector(
    State(store): State<Arc<Store>>,
    Path(name): Path<String>,
    q: RawQuery,
) -> Result<Json<Value>, ApiError> {
    query(q.0, &[])?;
    store.read(|s| match s.collectors.get(name.as_str()) {
        Some(c) => {
            let mut v = envelope(&s.node);
            if let Value::Object(m) = collector_json(&name, c) {
                v.as_object_mut().expect("object").extend(m);
            }
            Ok(Json(v))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no collector named {name:?} is enabled"),
        )
        .with("collectors", json!(s.collectors.keys().collect::<Vec<_>>()))),
    })
}

async fn not_found(uri: axum::http::Uri, endpoints: Vec<&'static str>) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
    .with("endpoints", json!(endpoints))
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed: nodediag's endpoints are read-only (GET)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_rejects_unknown_parameters_and_decodes_values() {
        let q = query(
            Some("severity=warning&subject=eth%300".into()),
            &["severity", "subject"],
        )
        .unwrap();
        assert_eq!(q["subject"], "eth00");
        let err = query(Some("sevrity=1".into()), &["severity"])
            .err()
            .unwrap();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.body["error"], "unknown query parameter \"sevrity\"");
        let err = query(
            Some("severity=info&severity=critical".into()),
            &["severity"],
        )
        .err()
        .unwrap();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.body["parameter"], "severity");
        let q = query_with_repeats(Some("event=a&event=b".into()), &["event"], &["event"]);
        assert_eq!(q.unwrap()["event"], "b");
    }

    #[test]
    fn percent_decoding_survives_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
