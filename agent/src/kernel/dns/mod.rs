//! DNS as a pod sees it: its resolv.conf, the kubelet's cluster DNS settings,
//! glibc's search order, and a probe that sends a pod's queries from inside its
//! network namespace.
//!
//! - `wire`: DNS messages (queries out, responses in).
//! - `resolv_conf`: `/etc/resolv.conf` as glibc reads it.
//! - `kubelet`: `clusterDNS` / `clusterDomain` from the kubelet's files.
//! - `search`: which candidate names glibc tries, in which order, and when it stops.
//! - `exchange`: one candidate's A and AAAA queries, as glibc's res_send sends them.
//! - `probe`: lookups of a few names on a thread inside a namespace, with a deadline.
//! - `probe_threads`: the threads probes run on, kept between rounds.

pub mod exchange;
pub mod kubelet;
pub mod probe;
pub mod probe_threads;
pub mod resolv_conf;
pub mod search;
pub mod wire;

#[cfg(test)]
pub(crate) mod test_server;
