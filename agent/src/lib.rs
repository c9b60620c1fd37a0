//! nodediag: a per-node diagnostic agent for Kubernetes.
//!
//! Data flows one way: kernel files and netlink -> `kernel` readers -> `collect`
//! samples -> `store` -> `diagnose` findings -> `metrics` / `report` / `http`.
//! `signals` ties each signal's pieces together; `agent` runs them.
//!
//! Shared types sit in leaf modules every layer may use: `host`, `time`, `text`,
//! `flags`, `sample`, `finding`.

pub mod agent;
pub mod collect;
pub mod config;
pub mod diagnose;
pub mod finding;
pub mod flags;
pub mod host;
pub mod http;
pub mod kernel;
pub mod memory;
pub mod metrics;
pub mod report;
pub mod sample;
pub mod signals;
pub mod store;
pub mod text;
pub mod time;
