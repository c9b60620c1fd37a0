//! cgroup CPU bandwidth files, v1 and v2, and the mount table that says where the
//! hierarchies are. Parsers are pure; readers take the directory of one cgroup.

use super::{read_optional, read_string, ReadError};
use std::io;
use std::path::{Path, PathBuf};

/// One line of `/proc/<pid>/mountinfo`, cgroup filesystems only matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The cgroup path the mount shows as its root (`/` on the host).
    pub root: String,
    /// Where it is mounted, as a path in the mount namespace of the process read.
    pub mount_point: String,
    pub fstype: String,
    /// Per-superblock options: for cgroup v1 these name the controllers (`rw,cpu,cpuacct`).
    pub super_options: Vec<String>,
}

impl Mount {
    pub fn has_option(&self, name: &str) -> bool {
        self.super_options.iter().any(|o| o == name)
    }
}

/// Parses mountinfo (proc(5)): `id parent major:minor root mount-point options
/// [optional fields...] - fstype source super-options`. Lines that do not have this
/// shape are skipped: a mount table is never worth failing a collection over.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            if left.len() < 6 {
                return None;
            }
            let mut right = right.split(' ');
            let fstype = right.next()?.to_string();
            let _source = right.next()?;
            let super_options = right
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::to_string)
                .collect();
            Some(Mount {
                root: unescape(left[3]),
                mount_point: unescape(left[4]),
                fstype,
                super_options,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|o| b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let Some(o) = octal {
            // Three octal digits fit a byte only up to \377.
            let v =
                u32::from(o[0] - b'0') * 64 + u32::from(o[1] - b'0') * 8 + u32::from(o[2] - b'0');
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

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
            .find(|m| m.fstype == "cgroup" && m.has_option(ctrl))
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

/// The CPU bandwidth limit of a cgroup: `quota_us` of CPU time per `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

impl CpuQuota {
    /// The limit in CPU cores (a Kubernetes `limits.cpu` of 500m is 0.5).
    pub fn cores(&self) -> f64 {
        if self.period_us == 0 {
            return 0.0;
        }
        self.quota_us as f64 / self.period_us as f64
    }
}

/// Bandwidth counters of one cgroup, in the same units for v1 and v2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CpuStat {
    /// Enforcement periods that had runnable tasks; 0 without a quota.
    pub nr_periods: u64,
    /// Periods in which the cgroup ran out of quota.
    pub nr_throttled: u64,
    /// Total time its tasks waited throttled, nanoseconds (v1 `throttled_time`,
    /// v2 `throttled_usec` * 1000).
    pub throttled_ns: u64,
    /// CPU time used, nanoseconds: v2 `usage_usec` here, v1 from `cpuacct.usage`.
    pub usage_ns: Option<u64>,
}

fn bad_data(path: &Path, message: String) -> ReadError {
    ReadError {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, message),
    }
}

/// Parses `cpu.stat` of either version by key: v1 has `nr_periods nr_throttled
/// throttled_time` (ns; newer kernels add `nr_bursts burst_time`), v2 has
/// `usage_usec user_usec system_usec` and, with the cpu controller enabled,
/// `nr_periods nr_throttled throttled_usec` (6.x adds `nr_bursts burst_usec` and
/// `core_sched.force_idle_usec`). Keys nodediag does not use are ignored; missing
/// bandwidth keys read as 0 (no quota was ever enforced).
pub fn parse_cpu_stat(text: &str) -> Result<CpuStat, String> {
    let mut s = CpuStat::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(value)) = (it.next(), it.next()) else {
            continue;
        };
        let slot: &mut dyn FnMut(u64) = match key {
            "nr_periods" => &mut |v| s.nr_periods = v,
            "nr_throttled" => &mut |v| s.nr_throttled = v,
            "throttled_time" => &mut |v| s.throttled_ns = v,
            "throttled_usec" => &mut |v| s.throttled_ns = v.saturating_mul(1000),
            "usage_usec" => &mut |v| s.usage_ns = Some(v.saturating_mul(1000)),
            _ => continue,
        };
        let v: u64 = value
            .parse()
            .map_err(|e| format!("{key} {value:?} is not a counter: {e}"))?;
        slot(v);
    }
    Ok(s)
}

/// v2 `cpu.max`: `$MAX $PERIOD`, `max` meaning no limit. The period may be omitted
/// (it then stays at the kernel default of 100000 us).
pub fn parse_cpu_max(text: &str) -> Result<Option<CpuQuota>, String> {
    let mut it = text.split_whitespace();
    let max = it.next().ok_or("empty cpu.max")?;
    let period_us = match it.next() {
        Some(p) => p
            .parse()
            .map_err(|e| format!("period {p:?} is not a number: {e}"))?,
        None => 100_000,
    };
    if max == "max" {
        return Ok(None);
    }
    let quota_us = max
        .parse()
        .map_err(|e| format!("quota {max:?} is neither max nor a number: {e}"))?;
    Ok(Some(CpuQuota {
        quota_us,
        period_us,
    }))
}

/// v1 `cpu.cfs_quota_us` (-1 means no limit) with `cpu.cfs_period_us`.
pub fn parse_v1_quota(quota: &str, period: &str) -> Result<Option<CpuQuota>, String> {
    let q: i64 = quota
        .trim()
        .parse()
        .map_err(|e| format!("cfs_quota_us {:?}: {e}", quota.trim()))?;
    let period_us: u64 = period
        .trim()
        .parse()
        .map_err(|e| format!("cfs_period_us {:?}: {e}", period.trim()))?;
    Ok((q >= 0).then_some(CpuQuota {
        quota_us: q as u64,
        period_us,
    }))
}

/// What one cgroup says about CPU bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuCgroupFiles {
    pub quota: Option<CpuQuota>,
    pub stat: CpuStat,
}

/// Reads a v1 cgroup: `cpu_dir` in the cpu hierarchy, `cpuacct_dir` the same cgroup in
/// the cpuacct hierarchy (the same directory when co-mounted). A kernel without
/// CONFIG_CFS_BANDWIDTH has no quota files: no quota, zero counters.
pub fn read_v1(cpu_dir: &Path, cpuacct_dir: Option<&Path>) -> Result<CpuCgroupFiles, ReadError> {
    let stat_path = cpu_dir.join("cpu.stat");
    let mut stat =
        parse_cpu_stat(&read_string(&stat_path)?).map_err(|m| bad_data(&stat_path, m))?;
    let quota_path = cpu_dir.join("cpu.cfs_quota_us");
    let quota = match (
        read_optional(&quota_path),
        read_optional(&cpu_dir.join("cpu.cfs_period_us")),
    ) {
        (Some(q), Some(p)) => parse_v1_quota(&q, &p).map_err(|m| bad_data(&quota_path, m))?,
        _ => None,
    };
    if let Some(dir) = cpuacct_dir {
        let usage_path = dir.join("cpuacct.usage");
        stat.usage_ns = match read_optional(&usage_path) {
            Some(u) => Some(u.parse().map_err(|e| {
                bad_data(&usage_path, format!("expected nanoseconds, got {u:?}: {e}"))
            })?),
            None => None,
        };
    }
    Ok(CpuCgroupFiles { quota, stat })
}

/// Reads a v2 cgroup. `cpu.max` is missing where the parent has not enabled the cpu
/// controller for its children: no quota.
pub fn read_v2(dir: &Path) -> Result<CpuCgroupFiles, ReadError> {
    let stat_path = dir.join("cpu.stat");
    let stat = parse_cpu_stat(&read_string(&stat_path)?).map_err(|m| bad_data(&stat_path, m))?;
    let max_path = dir.join("cpu.max");
    let quota = match read_optional(&max_path) {
        Some(text) => parse_cpu_max(&text).map_err(|m| bad_data(&max_path, m))?,
        None => None,
    };
    Ok(CpuCgroupFiles { quota, stat })
}

/// The controllers a v2 cgroup offers (`cgroup.controllers` of the root).
pub fn v2_controllers(root: &Path) -> Result<Vec<String>, ReadError> {
    Ok(read_string(&root.join("cgroup.controllers"))?
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// Finds the kubelet's top cgroup (`kubepods` with the cgroupfs driver,
/// `kubepods.slice` with systemd) at the root of a hierarchy or one level below (a
/// kubelet `--cgroup-root` other than `/`). Returns its path relative to the root.
pub fn find_kubepods(root: &Path) -> Option<String> {
    let is_kubepods = |n: &str| n == "kubepods" || n == "kubepods.slice";
    for name in ["kubepods", "kubepods.slice"] {
        if root.join(name).is_dir() {
            return Some(format!("/{name}"));
        }
    }
    for e in std::fs::read_dir(root).ok()?.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let parent = e.file_name().to_string_lossy().into_owned();
        let Ok(inner) = std::fs::read_dir(e.path()) else {
            continue;
        };
        for inner in inner.flatten() {
            let n = inner.file_name().to_string_lossy().into_owned();
            if is_kubepods(&n) && inner.file_type().is_ok_and(|t| t.is_dir()) {
                return Some(format!("/{parent}/{n}"));
            }
        }
    }
    None
}

/// Subdirectories of a cgroup directory, names only; a cgroup removed meanwhile has none.
pub fn child_cgroups(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// A cgroup path (`/kubepods/burstable/pod.../<id>`) under a hierarchy's directory.
pub fn cgroup_dir(hierarchy: &Path, cgroup_path: &str) -> PathBuf {
    hierarchy.join(cgroup_path.trim_start_matches('/'))
}

/// `major.minor.patch` of a kernel release string such as `5.15.0-91-generic` or
/// `4.19.84-microsoft-standard`; a missing patch reads as 0.
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32, u32)> {
    let numeric: String = release
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut it = numeric.split('.').filter(|p| !p.is_empty());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// Whether a kernel has the CFS bandwidth fix for throttling far below quota
/// (upstream commit de53fd7aedb1 "sched/fair: Fix low cpu usage with high throttling
/// by removing expiration of cpu-local slices", kubernetes/kubernetes#67577): in 5.4,
/// backported to 4.14.154 and 4.19.84. Distribution backports to other versions are
/// not visible from the version number.
pub fn has_cfs_bandwidth_fix((major, minor, patch): (u32, u32, u32)) -> bool {
    match (major, minor) {
        (m, _) if m > 5 => true,
        (5, n) => n >= 4,
        (4, 14) => patch >= 154,
        (4, 19) => patch >= 84,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.len(), 6);
        assert_eq!(m[5].mount_point, "/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(m[5].fstype, "cgroup");
        assert_eq!(m[5].super_options, ["rw", "cpu", "cpuacct"]);
        assert_eq!(m[5].root, "/");
        assert!(!m[4].has_option("cpu"), "cpuset is not cpu");
    }

    #[test]
    fn mountinfo_escapes_and_garbage() {
        let m = parse_mountinfo(
            "40 31 0:37 / /mnt/my\\040cgroups rw - cgroup2 none rw\nnonsense\n\n1 2 3\n",
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mount_point, "/mnt/my cgroups");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn hybrid_hosts_take_cpu_from_v1() {
        match cpu_hierarchy(&parse_mountinfo(HYBRID)).unwrap() {
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
        let CpuHierarchy::V1 { cpu, cpuacct } = cpu_hierarchy(&parse_mountinfo(separate)).unwrap()
        else {
            panic!("v1 expected");
        };
        assert_eq!(cpu.mount_point, "/sys/fs/cgroup/cpu");
        assert_eq!(cpuacct.unwrap().mount_point, "/sys/fs/cgroup/cpuacct");
        let v2 = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert!(matches!(
            cpu_hierarchy(&parse_mountinfo(v2)),
            Some(CpuHierarchy::V2 { unified }) if unified.mount_point == "/sys/fs/cgroup"
        ));
        assert_eq!(cpu_hierarchy(&parse_mountinfo("")), None);
    }

    #[test]
    fn v1_cpu_stat_old_and_new_kernels() {
        // 4.x: three keys.
        let old =
            parse_cpu_stat("nr_periods 4242\nnr_throttled 1200\nthrottled_time 98765432100\n")
                .unwrap();
        assert_eq!(
            old,
            CpuStat {
                nr_periods: 4242,
                nr_throttled: 1200,
                throttled_ns: 98_765_432_100,
                usage_ns: None
            }
        );
        // 5.14+ adds burst accounting.
        let new = parse_cpu_stat(
            "nr_periods 10\nnr_throttled 9\nthrottled_time 812000000\nnr_bursts 0\nburst_time 0\n",
        )
        .unwrap();
        assert_eq!(new.nr_throttled, 9);
        assert_eq!(new.throttled_ns, 812_000_000);
    }

    #[test]
    fn v2_cpu_stat_with_and_without_the_cpu_controller() {
        let full = "usage_usec 8123456\nuser_usec 6000000\nsystem_usec 2123456\n\
core_sched.force_idle_usec 0\nnr_periods 300\nnr_throttled 75\nthrottled_usec 4500000\n\
nr_bursts 0\nburst_usec 0\n";
        assert_eq!(
            parse_cpu_stat(full).unwrap(),
            CpuStat {
                nr_periods: 300,
                nr_throttled: 75,
                throttled_ns: 4_500_000_000,
                usage_ns: Some(8_123_456_000)
            }
        );
        let bare = parse_cpu_stat(
            "usage_usec 627898688\nuser_usec 466051967\nsystem_usec 161846720\nnice_usec 0\n",
        )
        .unwrap();
        assert_eq!(bare.nr_periods, 0);
        assert_eq!(bare.usage_ns, Some(627_898_688_000));
    }

    #[test]
    fn malformed_counters_are_errors_not_panics() {
        let err = parse_cpu_stat("nr_periods lots\n").unwrap_err();
        assert!(err.contains("nr_periods"), "{err}");
        assert!(parse_cpu_stat("nr_throttled -1\n").is_err());
        assert_eq!(parse_cpu_stat("lonely\n").unwrap(), CpuStat::default());
    }

    #[test]
    fn cpu_max_forms() {
        assert_eq!(parse_cpu_max("max 100000\n").unwrap(), None);
        assert_eq!(parse_cpu_max("max").unwrap(), None);
        assert_eq!(
            parse_cpu_max("50000 100000\n").unwrap(),
            Some(CpuQuota {
                quota_us: 50_000,
                period_us: 100_000
            })
        );
        assert_eq!(parse_cpu_max("25000").unwrap().unwrap().period_us, 100_000);
        assert!(parse_cpu_max("").is_err());
        assert!(parse_cpu_max("lots 100000").is_err());
        assert!(parse_cpu_max("max often").is_err());
    }

    #[test]
    fn v1_quota_minus_one_is_unlimited() {
        assert_eq!(parse_v1_quota("-1\n", "100000\n").unwrap(), None);
        let q = parse_v1_quota("10000\n", "100000\n").unwrap().unwrap();
        assert_eq!(q.cores(), 0.1);
        assert!(parse_v1_quota("x", "100000").is_err());
        assert_eq!(
            CpuQuota {
                quota_us: 1,
                period_us: 0
            }
            .cores(),
            0.0
        );
    }

    #[test]
    fn kubepods_at_the_top_or_under_a_cgroup_root() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(find_kubepods(t.path()), None);
        std::fs::create_dir_all(t.path().join("system.slice/containerd.service")).unwrap();
        std::fs::write(t.path().join("cpu.stat"), "").unwrap();
        assert_eq!(
            find_kubepods(t.path()),
            None,
            "files and other slices are not it"
        );
        std::fs::create_dir_all(t.path().join("kubelet.slice/kubepods.slice")).unwrap();
        assert_eq!(
            find_kubepods(t.path()).as_deref(),
            Some("/kubelet.slice/kubepods.slice")
        );
        std::fs::create_dir(t.path().join("kubepods")).unwrap();
        assert_eq!(find_kubepods(t.path()).as_deref(), Some("/kubepods"));
        assert_eq!(find_kubepods(&t.path().join("absent")), None);
    }

    #[test]
    fn kernel_versions_and_the_cfs_fix() {
        assert_eq!(parse_kernel_version("5.15.0-91-generic"), Some((5, 15, 0)));
        assert_eq!(
            parse_kernel_version("4.19.84-microsoft-standard\n"),
            Some((4, 19, 84))
        );
        assert_eq!(
            parse_kernel_version("3.10.0-1160.el7.x86_64"),
            Some((3, 10, 0))
        );
        assert_eq!(parse_kernel_version("6.1"), Some((6, 1, 0)));
        assert_eq!(parse_kernel_version("garbage"), None);
        let fixed = |r| has_cfs_bandwidth_fix(parse_kernel_version(r).unwrap());
        assert!(fixed("5.4.0"));
        assert!(fixed("6.18.44"));
        assert!(!fixed("5.3.18"));
        assert!(!fixed("4.14.153"));
        assert!(fixed("4.14.154"));
        assert!(!fixed("4.19.83"));
        assert!(fixed("4.19.84"));
        assert!(!fixed("4.20.17"));
        assert!(!fixed("3.10.0-1160.el7.x86_64"));
    }
}
