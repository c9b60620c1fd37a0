//! The events nodediag looks for in the kernel log, as the API and metrics name them.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    OomKill,
    ConntrackTableFull,
    NetdevUnregisterStuck,
    FilesystemReadonly,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::OomKill,
        EventKind::ConntrackTableFull,
        EventKind::NetdevUnregisterStuck,
        EventKind::FilesystemReadonly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::OomKill => "oom_kill",
            EventKind::ConntrackTableFull => "conntrack_table_full",
            EventKind::NetdevUnregisterStuck => "netdev_unregister_stuck",
            EventKind::FilesystemReadonly => "filesystem_readonly",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OomKill {
    pub pid: u32,
    pub task: String,
    /// The victim's memory cgroup (`task_memcg=` since 4.19, `Task in X` before).
    pub memory_cgroup: Option<String>,
    /// The cgroup whose limit was hit (a parent of the victim's, e.g. the pod's).
    pub limit_cgroup: Option<String>,
    /// CONSTRAINT_MEMCG for a cgroup limit, CONSTRAINT_NONE for the node running out.
    pub constraint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KernelEvent {
    OomKill(OomKill),
    ConntrackTableFull {
        netns: Option<u64>,
    },
    NetdevUnregisterStuck {
        device: String,
        usage_count: Option<u64>,
    },
    FilesystemReadonly {
        device: String,
        filesystem: String,
    },
}

impl KernelEvent {
    pub fn kind(&self) -> EventKind {
        match self {
            KernelEvent::OomKill(_) => EventKind::OomKill,
            KernelEvent::ConntrackTableFull { .. } => EventKind::ConntrackTableFull,
            KernelEvent::NetdevUnregisterStuck { .. } => EventKind::NetdevUnregisterStuck,
            KernelEvent::FilesystemReadonly { .. } => EventKind::FilesystemReadonly,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("oom"), None);
        let ev = KernelEvent::ConntrackTableFull { netns: None };
        assert_eq!(ev.kind().as_str(), "conntrack_table_full");
    }
}
