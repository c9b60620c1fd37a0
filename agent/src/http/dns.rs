//! `GET /api/v1/dns`: DNS as the pods see it over the window, per server and per
//! probed pod (and the host).

use super::{envelope, query, ApiError, Route};
use crate::store::Store;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn routes() -> Vec<Route> {
    vec![Route::get("/api/v1/dns", dns)]
}

/// Each server and each target probed in the window: queries, failures by kind,
/// lookup and query p50/p99, fallbacks to single-request, examples; the server's
/// source; conntrack and input-backlog drops of the same window. `?server=IP` keeps
/// one server (and the targets that asked it), `?pod=` the targets whose name
/// (`namespace/pod`, the pod's name, `host`) or UID it is.
async fn dns(State(store): State<Arc<Store>>, q: RawQuery) -> Result<Json<Value>, ApiError> {
    let params = query(q.0, &["server", "pod"])?;
    store.view(|s| {
        let state = s
            .collectors
            .get("dns")
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "the dns collector is disabled"))?;
        let mut v = envelope(&s.node);
        v["status"] = json!(state.status);
        let Some(mut view) = crate::diagnose::dns::view(s, None) else {
            v["sampled_at"] = Value::Null;
            v["servers"] = json!([]);
            v["targets"] = json!([]);
            return Ok(Json(v));
        };
        if let Some(server) = params.get("server") {
            view.servers.retain(|x| &x.server == server);
            if view.servers.is_empty() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no probe asked server {server:?} in the window"),
                ));
            }
            view.targets.retain(|t| t.servers.contains(server));
        }
        if let Some(pod) = params.get("pod") {
            view.targets.retain(|t| {
                &t.target == pod
                    || t.target.rsplit('/').next() == Some(pod.as_str())
                    || t.pod_uid.as_ref() == Some(pod)
            });
        }
        if let Value::Object(m) = json!(view) {
            v.as_object_mut().expect("object").extend(m);
        }
        Ok(Json(v))
    })
}
