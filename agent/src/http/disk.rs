//! `GET /api/v1/disks`: fsync latency, space and inodes of each watched directory.

use super::{envelope, query, ApiError, Route};
use crate::store::Store;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn routes() -> Vec<Route> {
    vec![Route::get("/api/v1/disks", disks)]
}

/// Each watched directory with its fsync p50/p99/max over the rule window, space,
/// inodes and read-only state, and the latency of the disks behind them.
/// `?path=DIR` keeps one directory.
async fn disks(State(store): State<Arc<Store>>, q: RawQuery) -> Result<Json<Value>, ApiError> {
    let params = query(q.0, &["path"])?;
    store.view(|s| {
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
