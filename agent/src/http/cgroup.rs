//! `GET /api/v1/throttling`: CPU throttling per container and pod, worst first.

use super::{envelope, query, ApiError, Route};
use crate::collect::pods::Name;
use crate::store::Store;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn routes() -> Vec<Route> {
    vec![Route::get("/api/v1/throttling", throttling)]
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
        let is = |key: &str, v: &Option<Name>| {
            params
                .get(key)
                .is_none_or(|want| v.as_deref() == Some(want.as_str()))
        };
        is("namespace", &t.namespace) && is("pod", &t.pod)
    };
    store.view(|s| {
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
