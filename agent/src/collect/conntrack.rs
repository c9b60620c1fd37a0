//! Conntrack table usage and failure counters of the host network namespace.

use super::Collector;
use crate::host::HostRoot;
use crate::kernel::conntrack::{self, ConntrackStats};
use crate::kernel::ctnetlink;
use crate::sample::{CollectError, Sample, Unavailable};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsSource {
    Netlink,
    Procfs,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConntrackSample {
    pub entries: u64,
    pub max: u64,
    pub buckets: Option<u64>,
    /// Per-CPU statistics summed; None when neither ctnetlink nor the proc file answers.
    pub stats: Option<ConntrackStats>,
    pub stats_source: Option<StatsSource>,
    pub unavailable: Vec<Unavailable>,
}

impl Sample for ConntrackSample {
    const COLLECTOR: &'static str = "conntrack";

    fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }
}

impl ConntrackSample {
    pub fn usage_ratio(&self) -> Option<f64> {
        (self.max > 0).then(|| self.entries as f64 / self.max as f64)
    }

    /// Packets the table could not take: `drop` plus `early_drop`.
    pub fn dropped(&self) -> Option<u64> {
        let s = self.stats?;
        Some(s.drop.unwrap_or(0) + s.early_drop.unwrap_or(0))
    }
}

pub struct ConntrackCollector {
    root: HostRoot,
    netlink: bool,
}

impl ConntrackCollector {
    pub fn new(root: HostRoot, netlink: bool) -> Self {
        Self { root, netlink }
    }
}

impl Collector for ConntrackCollector {
    type Sample = ConntrackSample;

    fn collect(&mut self) -> Result<ConntrackSample, CollectError> {
        let table = conntrack::read_table(&self.root).map_err(|e| {
            if e.is_not_found() {
                CollectError::Unavailable(Unavailable::new(
                    "conntrack",
                    format!(
                        "{} does not exist: nf_conntrack is not loaded, so nothing is tracked \
                         (modprobe nf_conntrack if kube-proxy should be using it)",
                        e.path.display()
                    ),
                ))
            } else {
                e.into()
            }
        })?;
        let mut unavailable = Vec::new();
        let mut stats = None;
        let mut source = None;
        if self.netlink {
            match ctnetlink::read_stats() {
                Ok(s) => {
                    stats = Some(s);
                    source = Some(StatsSource::Netlink);
                }
                Err(e) => unavailable.push(Unavailable::new(
                    "ctnetlink statistics",
                    format!(
                        "{e}: needs CAP_NET_ADMIN; falling back to /proc/net/stat/nf_conntrack"
                    ),
                )),
            }
        }
        if stats.is_none() {
            match conntrack::read_proc_stats(&self.root) {
                Ok(s) => {
                    stats = Some(s);
                    source = Some(StatsSource::Procfs);
                }
                Err(e) => unavailable.push(Unavailable::new(
                    "/proc/net/stat/nf_conntrack",
                    format!(
                        "{e}: kernels since 5.15.65 are often built without \
                         CONFIG_NF_CONNTRACK_PROCFS; grant CAP_NET_ADMIN for ctnetlink"
                    ),
                )),
            }
        }
        Ok(ConntrackSample {
            entries: table.entries,
            max: table.max,
            buckets: table.buckets,
            stats,
            stats_source: source,
            unavailable,
        })
    }
}
