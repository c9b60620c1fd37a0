//! The HTTP surface: `/` (text report), `/metrics`, `/healthz`, `/readyz` and the JSON
//! API under `/api/v1/`. Handlers only read the store.

use crate::diagnose::Severity;
use crate::metrics::{self, encode::Format};
use crate::report;
use crate::store::Store;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

pub fn router(store: Arc<Store>) -> Router {
    Router::new()
        .route("/", get(text_report))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/findings", get(findings))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/api/v1/collectors/{name}", get(collector))
        .route("/api/v1/throttling", get(throttling))
        .route("/api/v1/kernel-log", get(kernel_log))
        .route("/api/v1/netns", get(netns_list))
        .route("/api/v1/veths", get(veth_list))
        .route("/api/v1/disks", get(disks))
        .fallback(not_found)
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
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
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

/// Parses the query string, refusing parameters the endpoint does not know.
fn query(raw: Option<String>, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
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
        out.insert(k, percent_decode(v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
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

async fn text_report(State(store): State<Arc<Store>>, q: RawQuery) -> Result<Response, ApiError> {
    query(q.0, &[])?;
    let body = store.read(|s| report::render(s, SystemTime::now()));
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

async fn metrics_handler(
    State(store): State<Arc<Store>>,
    headers: HeaderMap,
    q: RawQuery,
) -> Result<Response, ApiError> {
    query(q.0, &[])?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let body = store.read(|s| metrics::render(s, format));
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(store): State<Arc<Store>>) -> Result<&'static str, ApiError> {
    let pending: Vec<&str> = store.read(|s| {
        s.collectors
            .iter()
            .filter(|(_, c)| c.status == crate::store::Status::Pending)
            .map(|(n, _)| *n)
            .collect()
    });
    if pending.is_empty() {
        Ok("ready\n")
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not every collector has sampled yet",
        )
        .with("pending", json!(pending)))
    }
}

fn envelope(node: &str) -> Value {
    json!({ "node": node, "generated_at": crate::time::rfc3339(SystemTime::now()) })
}

async fn findings(State(store): State<Arc<Store>>, q: RawQuery) -> Result<Json<Value>, ApiError> {
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
        if crate::diagnose::catalog::find(id).is_none() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown finding id {id:?}"),
            ));
        }
    }
    Ok(Json(store.read(|s| {
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
            v["sample"] = json!(s.sample);
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
    Ok(Json(store.read(|s| {
        let mut v = envelope(&s.node);
        v["ready"] = json!(s.ready());
        v["findings"] = json!(s.findings);
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

/// CPU throttling of each container (and pod-level cgroup) over the rule window,
/// worst first; `namespace`, `pod` and `container` filter by exact name, `limit` keeps
/// the first N containers.
async fn throttling(State(store): State<Arc<Store>>, q: RawQuery) -> Result<Json<Value>, ApiError> {
    use crate::collect::CgroupSample;
    use crate::diagnose::cgroup::{throttling, Throttling};
    let params = query(q.0, &["namespace", "pod", "container", "limit"])?;
    let limit = match params.get("limit") {
        None => usize::MAX,
        Some(l) => l.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("limit {l:?}: expected a number of containers"),
            )
        })?,
    };
    let keep = |t: &Throttling| {
        let is = |key: &str, v: &Option<String>| {
            params
                .get(key)
                .is_none_or(|want| v.as_deref() == Some(want.as_str()))
        };
        is("namespace", &t.namespace) && is("pod", &t.pod)
    };
    store.read(|s| {
        let Some(state) = s.collectors.get("cgroup") else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "the cgroup collector is disabled (--no-collector.cgroup)",
            ));
        };
        let history = s.history::<CgroupSample>();
        let Some(&(at, latest)) = history.last() else {
            return Err(
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no cgroup sample to show")
                    .with("status", json!(state.status)),
            );
        };
        let (containers, pods) = throttling(&history, s.window);
        let containers: Vec<Throttling> = containers
            .into_iter()
            .filter(|t| keep(t))
            .filter(|t| {
                params
                    .get("container")
                    .is_none_or(|c| t.container.as_deref() == Some(c.as_str()))
            })
            .take(limit)
            .collect();
        let pods: Vec<Throttling> = pods.into_iter().filter(|t| keep(t)).collect();
        let mut v = envelope(&s.node);
        v["sampled_at"] = json!(crate::time::rfc3339(at));
        v["window_seconds"] = json!(s.window.as_secs_f64());
        v["cgroup_version"] = json!(latest.version);
        v["kernel_release"] = json!(latest.kernel_release);
        v["containers"] = json!(containers);
        v["pods"] = json!(pods);
        Ok(Json(v))
    })
}

/// The kernel log lines the kmsg collector matched, newest last:
/// `?event=oom_kill` (repeatable) and `?limit=N`.
async fn kernel_log(State(store): State<Arc<Store>>, q: RawQuery) -> Result<Json<Value>, ApiError> {
    use crate::kernel::kmsg::EventKind;
    let raw = q.0.unwrap_or_default();
    let params = query(Some(raw.clone()), &["event", "limit"])?;
    let kinds_known = || json!(EventKind::ALL.map(|k| k.as_str()));
    let mut kinds = Vec::new();
    for pair in raw.split('&').filter(|p| p.starts_with("event=")) {
        let name = percent_decode(&pair["event=".len()..]);
        for name in name.split(',') {
            let kind = EventKind::parse(name).ok_or_else(|| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("unknown event {name:?}"))
                    .with("events", kinds_known())
            })?;
            kinds.push(kind);
        }
    }
    let limit = match params.get("limit") {
        None => usize::MAX,
        Some(v) => v.parse::<usize>().map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("limit {v:?}: {e} (a count of lines)"),
            )
        })?,
    };
    store.read(|s| {
        let Some(state) = s.collectors.get("kmsg") else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "the kmsg collector is disabled (--no-collector.kmsg)",
            ));
        };
        let latest =
            state
                .latest()
                .filter(|_| state.is_ok())
                .and_then(|st| match st.sample.as_ref() {
                    crate::collect::Sample::Kmsg(k) => Some((st.at, k)),
                    _ => None,
                });
        let Some((at, sample)) = latest else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the kernel log is not being read",
            )
            .with("status", json!(state.status)));
        };
        let events: Vec<_> = sample
            .events
            .iter()
            .filter(|e| kinds.is_empty() || kinds.contains(&e.event.kind()))
            .collect();
        let skip = events.len().saturating_sub(limit);
        let mut v = envelope(&s.node);
        v["sampled_at"] = json!(crate::time::rfc3339(at));
        v["source"] = json!(sample.source);
        v["path"] = json!(sample.path);
        v["totals"] = json!(sample.totals);
        v["events"] = json!(&events[skip..]);
        Ok(Json(v))
    })
}

/// Each watched directory with its fsync p50/p99/max over the rule window, space,
/// inodes and read-only state, and the latency of the disks behind them.
/// `?path=DIR` keeps one directory.
async fn disks(State(store): State<Arc<Store>>, q: RawQuery) -> Result<Json<Value>, ApiError> {
    let params = query(q.0, &["path"])?;
    store.read(|s| {
        let state = s.collectors.get("disk").ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "the disk collector is disabled")
        })?;
        let mut v = envelope(&s.node);
        v["status"] = json!(state.status);
        let Some(mut view) = crate::diagnose::disk::view(s, None) else {
            v["sampled_at"] = Value::Null;
            v["dirs"] = json!([]);
            v["devices"] = json!([]);
            return Ok(Json(v));
        };
        if let Some(path) = params.get("path") {
            view.dirs.retain(|d| &d.dir.path == path);
            if view.dirs.is_empty() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("directory {path:?} is not watched"),
                ));
            }
        }
        if let Value::Object(m) = json!(view) {
            v.as_object_mut().expect("object").extend(m);
        }
        Ok(Json(v))
    })
}

/// Filters shared by /api/v1/netns and /api/v1/veths: a pod name or UID, a
/// Kubernetes namespace, an interface name.
const NETNS_FILTERS: &[&str] = &["pod", "namespace", "interface"];

fn pod_matches(pod: Option<&crate::pods::Attribution>, params: &BTreeMap<String, String>) -> bool {
    let by_pod = params.get("pod").is_none_or(|want| {
        pod.is_some_and(|p| p.pod.as_deref() == Some(want.as_str()) || &p.pod_uid == want)
    });
    let by_ns = params
        .get("namespace")
        .is_none_or(|want| pod.is_some_and(|p| p.namespace.as_deref() == Some(want.as_str())));
    by_pod && by_ns
}

/// The netns collector's latest sample with its time, or why there is none.
fn with_netns_sample<R>(
    store: &Store,
    f: impl FnOnce(&str, SystemTime, &crate::collect::NetnsSample) -> R,
) -> Result<R, ApiError> {
    store.read(|s| match s.latest::<crate::collect::NetnsSample>() {
        Some((at, sample)) => Ok(f(&s.node, at, sample)),
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the netns collector has no current sample",
        )
        .with(
            "collector",
            s.collectors
                .get("netns")
                .map(|c| json!(c.status))
                .unwrap_or(json!("disabled")),
        )),
    })
}

async fn netns_list(State(store): State<Arc<Store>>, q: RawQuery) -> Result<Json<Value>, ApiError> {
    let params = query(q.0, NETNS_FILTERS)?;
    with_netns_sample(&store, |node, at, sample| {
        let list: Vec<_> = sample
            .namespaces
            .iter()
            .filter(|n| pod_matches(n.pod.as_ref().or(n.former_pod.as_ref()), &params))
            .filter(|n| {
                params.get("interface").is_none_or(|want| {
                    // A host veth answers with the namespace at its other end.
                    let leads_elsewhere = sample
                        .veths
                        .iter()
                        .any(|v| &v.name == want && v.peer_netns.is_some());
                    n.host_veths.contains(want)
                        || (!(n.host && leads_elsewhere)
                            && n.interfaces.iter().any(|i| &i.name == want))
                })
            })
            .collect();
        let mut v = envelope(node);
        v["sampled_at"] = json!(crate::time::rfc3339(at));
        v["namespaces"] = json!(list);
        v["stale_pins"] = json!(sample.stale_pins);
        v["unavailable"] = json!(sample.unavailable);
        Json(v)
    })
}

async fn veth_list(State(store): State<Arc<Store>>, q: RawQuery) -> Result<Json<Value>, ApiError> {
    let params = query(q.0, NETNS_FILTERS)?;
    with_netns_sample(&store, |node, at, sample| {
        let list: Vec<_> = sample
            .veths
            .iter()
            .filter(|v| pod_matches(v.pod.as_ref(), &params))
            .filter(|v| {
                params
                    .get("interface")
                    .is_none_or(|want| &v.name == want || v.peer_name.as_ref() == Some(want))
            })
            .collect();
        let mut v = envelope(node);
        v["sampled_at"] = json!(crate::time::rfc3339(at));
        v["veths"] = json!(list);
        v["unavailable"] = json!(sample.unavailable);
        Json(v)
    })
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
    .with(
        "endpoints",
        json!([
            "/",
            "/metrics",
            "/healthz",
            "/readyz",
            "/api/v1/findings",
            "/api/v1/snapshot",
            "/api/v1/collectors/{name}",
            "/api/v1/throttling",
            "/api/v1/kernel-log",
            "/api/v1/netns",
            "/api/v1/veths",
            "/api/v1/disks"
        ]),
    )
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
    }

    #[test]
    fn netns_filters_match_pod_name_or_uid_and_namespace() {
        let pod = crate::pods::Attribution {
            pod_uid: "0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9".into(),
            qos: crate::pods::Qos::Burstable,
            namespace: Some("shop".into()),
            pod: Some("web-1".into()),
            container: None,
            container_id: None,
        };
        let q = |raw: &str| query(Some(raw.into()), NETNS_FILTERS).unwrap();
        assert!(pod_matches(Some(&pod), &q("pod=web-1&namespace=shop")));
        assert!(pod_matches(
            Some(&pod),
            &q("pod=0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9")
        ));
        assert!(!pod_matches(Some(&pod), &q("namespace=kube-system")));
        assert!(
            !pod_matches(None, &q("pod=web-1")),
            "no pod matches no pod filter"
        );
        assert!(
            pod_matches(None, &q("interface=veth1")),
            "pod filters absent"
        );
    }

    #[test]
    fn percent_decoding_survives_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
