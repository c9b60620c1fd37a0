//! `GET /api/v1/kernel-log`: what the kernel log follower matched.

use super::percent_decode;
use super::{envelope, query_with_repeats, ApiError, Route};
use crate::store::Store;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn routes() -> Vec<Route> {
    vec![Route::get("/api/v1/kernel-log", kernel_log)]
}

/// The kernel log lines the kmsg collector matched, newest last:
/// `?event=oom_kill` (repeatable) and `?limit=N`.
async fn kernel_log(State(store): State<Arc<Store>>, q: RawQuery) -> Result<Json<Value>, ApiError> {
    use crate::kernel::kmsg::EventKind;
    let raw = q.0.unwrap_or_default();
    let params = query_with_repeats(Some(raw.clone()), &["event", "limit"], &["event"])?;
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
    store.view(|s| {
        let Some(state) = s.collectors.get("kmsg") else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "the kmsg collector is disabled (--no-collector.kmsg)",
            ));
        };
        let latest = s.latest::<crate::collect::KmsgSample>();
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
