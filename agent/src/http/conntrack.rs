//! `GET /api/v1/conntrack/top`: who fills the conntrack table, from a dump of it.
//!
//! The one endpoint that reads the kernel on request, because only the entries say
//! who opened them. The dump runs on a blocking thread, within the budget of
//! `--conntrack.top-max-entries` and `--conntrack.top-timeout` (the answer says when
//! it was cut), one at a time: a request during a dump waits for it and shares its
//! result, and a dump younger than 5 s is handed out again (`shared: true`, with
//! its age), so a burst of requests or a `watch curl` costs one dump.

use super::{envelope, query, ApiError, Route};
use crate::collect::conntrack_dumper::{DumpError, TopDumper, Trigger};
use crate::diagnose::conntrack_top;
use crate::store::Store;
use crate::time::rfc3339;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::SystemTime;

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

pub fn routes(dumper: Arc<TopDumper>) -> Vec<Route> {
    vec![Route {
        path: "/api/v1/conntrack/top",
        handler: get(move |state: State<Arc<Store>>, q: RawQuery| top(state, q, dumper.clone())),
    }]
}

fn limit(raw: Option<&String>) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit {raw:?}: expected rows per list, 1 to {MAX_LIMIT}"),
        )),
    }
}

async fn top(
    State(store): State<Arc<Store>>,
    q: RawQuery,
    dumper: Arc<TopDumper>,
) -> Result<Json<Value>, ApiError> {
    let params = query(q.0, &["limit"])?;
    let limit = limit(params.get("limit"))?;
    // Never on an async worker: the dump blocks on the socket, the wait on the gate.
    let fetched = tokio::task::spawn_blocking(move || dumper.fetch(Trigger::Request))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the dump did not finish: {e}"),
            )
        })?
        .map_err(dump_error)?;
    let now = SystemTime::now();
    let dump = &fetched.dump;
    Ok(Json(store.view(|s| {
        let top = conntrack_top::ranked(s, dump, limit);
        let mut v = envelope(&s.node);
        if let (Value::Object(out), Value::Object(d)) = (&mut v, json!(dump)) {
            out.extend(d);
        }
        v["age_seconds"] = json!(crate::text::round(dump.age(now).as_secs_f64(), 3));
        v["shared"] = json!(fetched.shared);
        v["sources"] = json!(top.sources);
        v["owners"] = json!(top.owners);
        v["destinations"] = json!(top.destinations);
        v["protocols"] = json!(top.protocols);
        v["states"] = json!(top.states);
        v["owners_from"] = match s.latest::<crate::collect::NetnsSample>() {
            Some((at, _)) => json!({ "netns_sampled_at": rfc3339(at) }),
            None => json!(null),
        };
        v
    })))
}

fn dump_error(e: DumpError) -> ApiError {
    match e {
        DumpError::Unavailable(u) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, u.what).with("hint", json!(u.hint))
        }
        DumpError::Busy => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            .with("hint", json!("retry in a few seconds")),
        DumpError::Failed(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_checked() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some(&"3".to_string())).unwrap(), 3);
        for bad in ["0", "101", "-1", "ten"] {
            let e = limit(Some(&bad.to_string())).err().unwrap();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.body["error"].as_str().unwrap().contains("1 to 100"));
        }
    }
}
