//! One collector per signal. A collector reads the kernel through `kernel/` on a
//! blocking thread and returns a typed sample; the scheduler stores it.

pub mod cgroup;
pub mod cgroup_counters;
pub mod conntrack;
pub mod conntrack_dumper;
pub mod conntrack_peak;
pub mod conntrack_top;
pub mod disk;
pub mod dns;
pub mod host_links;
pub mod kmsg;
pub mod latency_histogram;
pub mod native_histogram;
pub mod netns;
pub mod nic;
pub mod pods;
pub mod pressure;
mod proc_listing;

use crate::host::HostRoot;
use crate::kernel::mountinfo::MountsMemo;
use crate::sample::{AnySample, CollectError, Sample};
use std::sync::Arc;
use std::time::Duration;

/// How long after one collector made a read that others of the same tick need (the
/// `/proc` walk, the host's link counters) they may take it instead of making their
/// own: about the time the collectors of one tick take to reach it.
pub(crate) const SAME_TICK: Duration = Duration::from_millis(100);

/// How long a process is young: what it does as it starts (a runtime puts it in its
/// network namespace, a program opens its inotify instances) is done within it, so
/// the collectors that keep what they read of a process read it every round until
/// then, and between their full reads only after.
pub(crate) const YOUNG_PROCESS: Duration = Duration::from_secs(60);

pub use cgroup::CgroupSample;
pub use conntrack::ConntrackSample;
pub use disk::DiskSample;
pub use dns::DnsSample;
pub use kmsg::KmsgSample;
pub use netns::NetnsSample;
pub use nic::NicSample;
pub use pressure::PressureSample;

pub trait Collector: Send + 'static {
    /// The sample type names the collector (`Sample::COLLECTOR`).
    type Sample: Sample;

    /// Blocking: called on a blocking thread, never on an async worker.
    fn collect(&mut self) -> Result<Self::Sample, CollectError>;

    /// Whether its next collection takes turns with the other collectors' (see
    /// [`crate::agent::schedule`]), asked before each: yes, unless it will spend
    /// most of its time waiting on something off the node or on a thread of its own.
    fn takes_turns(&self) -> bool {
        true
    }
}

/// A collector as the scheduler runs it, its sample type erased.
pub trait DynCollector: Send + 'static {
    fn name(&self) -> &'static str;
    fn collect_any(&mut self) -> Result<Arc<dyn AnySample>, CollectError>;
    fn takes_turns(&self) -> bool;
}

impl<C: Collector> DynCollector for C {
    fn name(&self) -> &'static str {
        C::Sample::COLLECTOR
    }

    fn collect_any(&mut self) -> Result<Arc<dyn AnySample>, CollectError> {
        Ok(Arc::new(self.collect()?))
    }

    fn takes_turns(&self) -> bool {
        Collector::takes_turns(self)
    }
}

/// A collector with the interval it runs on.
pub struct Enabled {
    pub collector: Box<dyn DynCollector>,
    pub interval: Duration,
}

/// What every collector is built with, besides its own flags.
#[derive(Debug, Clone)]
pub struct Context {
    pub root: HostRoot,
    /// Netlink sockets allowed (ctnetlink, rtnetlink, ethtool); off for fixture trees.
    pub netlink: bool,
    /// The default interval, for collectors without one of their own.
    pub interval: Duration,
    /// The rule window: how much history a collector's own buffers must cover.
    pub window: Duration,
    /// The host's mount table, read once for the collectors that need it.
    pub mounts: MountsMemo,
}
