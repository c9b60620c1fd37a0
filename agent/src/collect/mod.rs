//! One collector per signal. A collector reads the kernel through `kernel/` on a
//! blocking thread and returns a typed sample; the scheduler stores it.

pub mod cgroup;
pub mod conntrack;
pub mod conntrack_peak;
pub mod conntrack_top;
pub mod disk;
pub mod kmsg;
pub mod netns;
pub mod nic;
pub mod pressure;
pub mod schedule;

use crate::config::AgentArgs;
use serde::Serialize;
use std::time::Duration;

pub use cgroup::CgroupSample;
pub use conntrack::ConntrackSample;
pub use disk::DiskSample;
pub use kmsg::KmsgSample;
pub use netns::NetnsSample;
pub use nic::NicSample;
pub use pressure::PressureSample;

pub trait Collector: Send + 'static {
    fn name(&self) -> &'static str;
    /// Blocking: called on a blocking thread, never on an async worker.
    fn collect(&mut self) -> Result<Sample, CollectError>;
}

/// A part of a signal the host could not give, with what to do about it. Samples carry
/// these so nothing is dropped silently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unavailable {
    pub what: String,
    pub hint: String,
}

impl Unavailable {
    pub fn new(what: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            hint: hint.into(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CollectError {
    /// The kernel feature is missing on this host: not a failure of nodediag.
    #[error("{}: unavailable ({})", .0.what, .0.hint)]
    Unavailable(Unavailable),
    #[error("{0}")]
    Failed(String),
}

impl From<crate::kernel::ReadError> for CollectError {
    fn from(e: crate::kernel::ReadError) -> Self {
        CollectError::Failed(e.to_string())
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Sample {
    Conntrack(ConntrackSample),
    Nic(NicSample),
    Cgroup(CgroupSample),
    Pressure(Box<PressureSample>),
    Kmsg(KmsgSample),
    Netns(NetnsSample),
    Disk(DiskSample),
}

impl Sample {
    /// One line for the report's collector section.
    pub fn summary(&self) -> String {
        match self {
            Sample::Conntrack(s) => s.summary(),
            Sample::Nic(s) => s.summary(),
            Sample::Cgroup(s) => s.summary(),
            Sample::Pressure(s) => s.summary(),
            Sample::Kmsg(s) => s.summary(),
            Sample::Netns(s) => s.summary(),
            Sample::Disk(s) => s.summary(),
        }
    }
}

/// Ties a sample type to its variant, so rules can ask the store for typed history.
pub trait SampleKind: Sized + 'static {
    const COLLECTOR: &'static str;
    fn from_sample(sample: &Sample) -> Option<&Self>;
}

macro_rules! sample_kind {
    ($ty:ty, $variant:ident, $name:literal) => {
        impl SampleKind for $ty {
            const COLLECTOR: &'static str = $name;
            fn from_sample(sample: &Sample) -> Option<&Self> {
                match sample {
                    Sample::$variant(s) => Some(s),
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
        }
    };
}
sample_kind!(ConntrackSample, Conntrack, "conntrack");
sample_kind!(NicSample, Nic, "nic");
sample_kind!(CgroupSample, Cgroup, "cgroup");
sample_kind!(PressureSample, Pressure, "pressure");
sample_kind!(KmsgSample, Kmsg, "kmsg");
sample_kind!(NetnsSample, Netns, "netns");
sample_kind!(DiskSample, Disk, "disk");

/// A collector with the interval it runs on.
pub struct Enabled {
    pub collector: Box<dyn Collector>,
    pub interval: Duration,
}

/// Builds every collector the configuration enables.
pub fn enabled(args: &AgentArgs) -> Vec<Enabled> {
    let root = args.host_root();
    let netlink = !args.no_netlink;
    let c = &args.collectors;
    let every = |o: Option<Duration>| o.unwrap_or(args.interval);
    let mut out: Vec<Enabled> = Vec::new();
    if !c.no_conntrack {
        out.push(Enabled {
            collector: Box::new(conntrack::ConntrackCollector::new(root.clone(), netlink)),
            interval: every(c.conntrack_interval),
        });
    }
    if !c.no_nic {
        out.push(Enabled {
            collector: Box::new(nic::NicCollector::new(root.clone(), netlink)),
            interval: every(c.nic_interval),
        });
    }
    if !c.no_cgroup {
        out.push(Enabled {
            collector: Box::new(cgroup::CgroupCollector::new(
                root.clone(),
                args.cgroup_root.clone(),
            )),
            interval: every(c.cgroup_interval),
        });
    }
    if !c.no_pressure {
        out.push(Enabled {
            collector: Box::new(pressure::PressureCollector::new(root.clone())),
            interval: every(c.pressure_interval),
        });
    }
    if !c.no_kmsg {
        out.push(Enabled {
            collector: Box::new(kmsg::KmsgCollector::new(root.clone(), args.kmsg_path())),
            interval: every(c.kmsg_interval),
        });
    }
    if !c.no_netns {
        out.push(Enabled {
            collector: Box::new(netns::NetnsCollector::new(
                root.clone(),
                netlink,
                &c.netns_dirs,
                &c.cni_conf_dirs,
            )),
            interval: every(c.netns_interval),
        });
    }
    if !c.no_disk {
        let interval = every(c.disk_interval);
        let d = &args.disk;
        out.push(Enabled {
            collector: Box::new(disk::DiskCollector::new(
                root.clone(),
                disk::DiskConfig {
                    probe_dirs: d.fsync_paths.clone(),
                    space_dirs: d.disk_paths.clone(),
                    interval,
                    probes_per_interval: d.fsync_probes,
                    file_size: d.fsync_file_size,
                    min_free: d.fsync_min_free,
                    stall_timeout: d.fsync_stall_timeout,
                    window: args.window,
                },
            )),
            interval,
        });
    }
    out
}
