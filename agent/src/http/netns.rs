//! `GET /api/v1/netns` and `GET /api/v1/veths`: namespaces and veths with their pods.

use super::{envelope, query, ApiError, Route};
use crate::collect::pods::Attribution;
use crate::collect::NetnsSample;
use crate::store::Store;
use crate::time::rfc3339;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/api/v1/netns", netns_list),
        Route::get("/api/v1/veths", veth_list),
    ]
}

/// Filters shared by /api/v1/netns and /api/v1/veths: a pod name or UID, a
/// Kubernetes namespace, an interface name.
const NETNS_FILTERS: &[&str] = &["pod", "namespace", "interface"];

fn pod_matches(pod: Option<&Attribution>, params: &BTreeMap<String, String>) -> bool {
    let by_pod = params.get("pod").is_none_or(|want| {
        pod.is_some_and(|p| p.pod.as_deref() == Some(want.as_str()) || *p.pod_uid == **want)
    });
    let by_ns = params
        .get("namespace")
        .is_none_or(|want| pod.is_some_and(|p| p.namespace.as_deref() == Some(want.as_str())));
    by_pod && by_ns
}

/// The netns collector's latest sample with its time, or why there is none.
fn with_netns_sample<R>(
    store: &Store,
    f: impl FnOnce(&str, SystemTime, &NetnsSample) -> R,
) -> Result<R, ApiError> {
    store.view(|s| match s.latest::<NetnsSample>() {
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
                        .any(|v| *v.name == **want && v.peer_netns.is_some());
                    n.host_veths.iter().any(|v| **v == **want)
                        || (!(n.host && leads_elsewhere)
                            && n.interfaces.iter().any(|i| *i.name == **want))
                })
            })
            .collect();
        let mut v = envelope(node);
        v["sampled_at"] = json!(rfc3339(at));
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
                    .is_none_or(|want| *v.name == **want || v.peer_name.as_deref() == Some(want))
            })
            .collect();
        let mut v = envelope(node);
        v["sampled_at"] = json!(rfc3339(at));
        v["veths"] = json!(list);
        v["unavailable"] = json!(sample.unavailable);
        Json(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_filters_match_pod_name_or_uid_and_namespace() {
        let pod = crate::diagnose::pod_addresses::tests::pod("shop", "web-1");
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
}
