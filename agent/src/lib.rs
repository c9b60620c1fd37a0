//! nodediag: a per-node diagnostic agent for Kubernetes.
//!
//! Data flows one way: kernel files and netlink -> `kernel` parsers -> `collect`
//! samples -> `store` -> `diagnose` findings -> `metrics` / `http` / `report`.

pub mod agent;
pub mod collect;
pub mod config;
pub mod diagnose;
pub mod fd_limit;
pub mod host;
pub mod http;
pub mod kernel;
pub mod metrics;
pub mod pods;
pub mod report;
pub mod store;
pub mod time;
