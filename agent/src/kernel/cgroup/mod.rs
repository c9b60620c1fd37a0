//! cgroup CPU bandwidth, v1 and v2: where the hierarchies are mounted, how a pod's
//! cgroups sit in them, and the files of one cgroup. Parsers are pure; readers take
//! the directory of one cgroup.

mod counter_files;
mod dir_watch;
mod files;
mod held_listing;
mod hierarchy;
mod quota;
mod stat;
mod tree;

pub use counter_files::{CounterFiles, LimitFiles};
pub use dir_watch::{Changes, DirWatch, Watched};
pub use files::{
    parse_v1_usage, read_v1_counters, read_v1_quota, read_v1_usage, read_v2_counters,
    read_v2_quota, v2_controllers,
};
pub use held_listing::HeldListing;
pub use hierarchy::{cpu_hierarchy, CpuHierarchy};
pub use quota::{parse_cpu_max, parse_v1_quota, CpuQuota};
pub use stat::{parse_cpu_stat, CpuStat};
pub use tree::{cgroup_dir, child_cgroups, find_kubepods};
