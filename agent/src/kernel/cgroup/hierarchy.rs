//! Which cgroup mount holds the CPU controller, from the host's mount table.

use crate::kernel::mountinfo::Mount;

/// Where the CPU controller lives, from the cgroup mounts of a mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuHierarchy {
    /// cgroup v1: the `cpu` controller's mount and the `cpuacct` one (the same mount
    /// when they are co-mounted as `cpu,cpuacct`, absent if cpuacct is not mounted).
    V1 { cpu: Mount, cpuacct: Option<Mount> },
    /// cgroup v2 (unified): one mount for every controller.
    V2 { unified: Mount },
}

/// Picks the hierarchy holding the CPU controller. A controller can be bound to only
/// one hierarchy, so on a hybrid host (v1 controllers plus a v2 mount, usually at
/// `/sys/fs/cgroup/unified`) a mounted v1 `cpu` wins; otherwise the v2 mount is the
/// candidate, and whether it has the cpu controller is for the caller to check in
/// its `cgroup.controllers`.
pub fn cpu_hierarchy(mounts: &[Mount]) -> Option<CpuHierarchy> {
    let v1 = |ctrl: &str| {
        mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.has_super_option(ctrl))
            .cloned()
    };
    if let Some(cpu) = v1("cpu") {
        return Some(CpuHierarchy::V1 {
            cpu,
            cpuacct: v1("cpuacct"),
        });
    }
    mounts
        .iter()
        .find(|m| m.fstype == "cgroup2")
        .map(|m| CpuHierarchy::V2 { unified: m.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::mountinfo::parse;

    // The cgroup lines of a hybrid host's mountinfo (systemd's "hybrid" mode), as on
    // Ubuntu 20.04: separate cpu and cpuacct would be `cpu` and `cpuacct` mounts, here
    // they are co-mounted, with an optional field between options and the separator.
    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
38 33 0:33 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpuset
39 33 0:34 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn mountinfo_lines_are_split_around_optional_fields() {
        let m = parse(HYBRID);
        assert_eq!(m.len(), 6);
        assert_eq!(m[5].mount_point, "/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(m[5].fstype, "cgroup");
        assert_eq!(m[5].super_options, "rw,cpu,cpuacct");
        assert_eq!(m[5].root, "/");
        assert!(!m[4].has_super_option("cpu"), "cpuset is not cpu");
    }

    #[test]
    fn hybrid_hosts_take_cpu_from_v1() {
        match cpu_hierarchy(&parse(HYBRID)).unwrap() {
            CpuHierarchy::V1 { cpu, cpuacct } => {
                assert_eq!(cpu.mount_point, "/sys/fs/cgroup/cpu,cpuacct");
                assert_eq!(cpuacct.unwrap().mount_point, "/sys/fs/cgroup/cpu,cpuacct");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn separate_cpu_and_cpuacct_mounts_and_pure_v2() {
        let separate = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
";
        let CpuHierarchy::V1 { cpu, cpuacct } = cpu_hierarchy(&parse(separate)).unwrap() else {
            panic!("v1 expected");
        };
        assert_eq!(cpu.mount_point, "/sys/fs/cgroup/cpu");
        assert_eq!(cpuacct.unwrap().mount_point, "/sys/fs/cgroup/cpuacct");
        let v2 = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert!(matches!(
            cpu_hierarchy(&parse(v2)),
            Some(CpuHierarchy::V2 { unified }) if unified.mount_point == "/sys/fs/cgroup"
        ));
        assert_eq!(cpu_hierarchy(&parse("")), None);
    }
}
