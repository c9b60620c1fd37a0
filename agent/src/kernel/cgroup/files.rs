//! Reading one cgroup's CPU files, v1 and v2; every error names the file.

use super::{parse_cpu_max, parse_cpu_stat, parse_v1_quota, CpuQuota, CpuStat};
use crate::kernel::{read_if_present, read_string, ReadError};
use crate::text::quote;
use std::io;
use std::path::Path;

fn bad_data(path: &Path, message: String) -> ReadError {
    ReadError {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, message),
    }
}

fn read_cpu_stat(path: &Path) -> Result<CpuStat, ReadError> {
    parse_cpu_stat(&read_string(path)?).map_err(|m| bad_data(path, m))
}

/// The counters of a v1 cgroup: `cpu.stat` in the cpu hierarchy, and `cpuacct.usage`
/// in `cpuacct_dir`, the same cgroup in the cpuacct hierarchy (the same directory
/// when co-mounted), when that hierarchy is known.
pub fn read_v1_counters(cpu_dir: &Path, cpuacct_dir: Option<&Path>) -> Result<CpuStat, ReadError> {
    let mut stat = read_cpu_stat(&cpu_dir.join("cpu.stat"))?;
    stat.usage_ns = read_v1_usage(cpuacct_dir)?;
    Ok(stat)
}

/// `cpuacct.usage` of a v1 cgroup in `cpuacct_dir`; None when the cpuacct hierarchy
/// is not known or the file is missing.
pub fn read_v1_usage(cpuacct_dir: Option<&Path>) -> Result<Option<u64>, ReadError> {
    let Some(dir) = cpuacct_dir else {
        return Ok(None);
    };
    let usage_path = dir.join("cpuacct.usage");
    read_if_present(&usage_path)?
        .map(|u| parse_v1_usage(&u).map_err(|m| bad_data(&usage_path, m)))
        .transpose()
}

/// `cpuacct.usage`: CPU time used, in nanoseconds.
pub fn parse_v1_usage(text: &str) -> Result<u64, String> {
    let t = text.trim();
    t.parse()
        .map_err(|e| format!("expected nanoseconds, got {}: {e}", quote(t)))
}

/// The limit of a v1 cgroup. A kernel without CONFIG_CFS_BANDWIDTH has no quota
/// files: no limit (and zero counters). A quota file that exists but does not read is an
/// error, not "no limit".
pub fn read_v1_quota(cpu_dir: &Path) -> Result<Option<CpuQuota>, ReadError> {
    let quota_path = cpu_dir.join("cpu.cfs_quota_us");
    match (
        read_if_present(&quota_path)?,
        read_if_present(&cpu_dir.join("cpu.cfs_period_us"))?,
    ) {
        (Some(q), Some(p)) => parse_v1_quota(&q, &p).map_err(|m| bad_data(&quota_path, m)),
        _ => Ok(None),
    }
}

/// The counters of a v2 cgroup, usage included: `cpu.stat`.
pub fn read_v2_counters(dir: &Path) -> Result<CpuStat, ReadError> {
    read_cpu_stat(&dir.join("cpu.stat"))
}

/// The limit of a v2 cgroup. `cpu.max` is missing where the parent has not enabled
/// the cpu controller for its children: no quota.
pub fn read_v2_quota(dir: &Path) -> Result<Option<CpuQuota>, ReadError> {
    let max_path = dir.join("cpu.max");
    match read_if_present(&max_path)? {
        Some(text) => parse_cpu_max(&text).map_err(|m| bad_data(&max_path, m)),
        None => Ok(None),
    }
}

/// The controllers a v2 cgroup offers (`cgroup.controllers` of the root).
pub fn v2_controllers(root: &Path) -> Result<Vec<String>, ReadError> {
    Ok(read_string(&root.join("cgroup.controllers"))?
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(t.path().join(name), text).unwrap();
        }
        t
    }

    #[test]
    fn v1_with_and_without_bandwidth_files() {
        let t = dir(&[
            (
                "cpu.stat",
                "nr_periods 5\nnr_throttled 2\nthrottled_time 7\n",
            ),
            ("cpu.cfs_quota_us", "50000\n"),
            ("cpu.cfs_period_us", "100000\n"),
            ("cpuacct.usage", "123456\n"),
        ]);
        assert_eq!(read_v1_quota(t.path()).unwrap().unwrap().cores(), 0.5);
        let stat = read_v1_counters(t.path(), Some(t.path())).unwrap();
        assert_eq!((stat.nr_throttled, stat.usage_ns), (2, Some(123_456)));
        let bare = dir(&[("cpu.stat", "nr_periods 0\n")]);
        let stat = read_v1_counters(bare.path(), None).unwrap();
        assert_eq!(
            (read_v1_quota(bare.path()).unwrap(), stat.usage_ns),
            (None, None)
        );
    }

    #[test]
    fn errors_name_the_file_that_was_wrong() {
        let t = dir(&[("cpu.stat", "nr_periods 0\n"), ("cpuacct.usage", "lots\n")]);
        let e = read_v1_counters(t.path(), Some(t.path())).unwrap_err();
        assert_eq!(e.path, t.path().join("cpuacct.usage"));
        assert!(e.to_string().contains("expected nanoseconds"), "{e}");
        let t = dir(&[("cpu.stat", "usage_usec 1\n"), ("cpu.max", "lots 100000\n")]);
        assert_eq!(read_v2_counters(t.path()).unwrap().usage_ns, Some(1_000));
        let e = read_v2_quota(t.path()).unwrap_err();
        assert_eq!(e.path, t.path().join("cpu.max"));
        let t = dir(&[]);
        let e = read_v2_counters(t.path()).unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(e.path, t.path().join("cpu.stat"));
        assert!(v2_controllers(t.path()).unwrap_err().is_not_found());
    }
}
