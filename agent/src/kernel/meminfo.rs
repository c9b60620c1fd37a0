//! `/proc/meminfo`, and the kubelet's notion of available memory (capacity minus the
//! working set of the root memory cgroup), which is what its MemoryPressure
//! condition and eviction thresholds compare with.

use super::held_files::HeldFiles;
use super::ReadError;
use crate::host::HostRoot;
use serde::Serialize;
use std::collections::HashMap;

/// The fields nodediag uses, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    /// Absent before Linux 3.14.
    pub available: Option<u64>,
    pub inactive_file: Option<u64>,
}

/// Parses `Name:   1234 kB` lines; values without a unit (HugePages_*) are counts and
/// are skipped. A file without MemTotal is malformed.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, String> {
    let mut fields: HashMap<&str, u64> = HashMap::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(value), Some("kB")) = (parts.next(), parts.next()) else {
            continue;
        };
        if let Ok(v) = value.parse::<u64>() {
            fields.insert(name.trim(), v.saturating_mul(1024));
        }
    }
    let total = *fields.get("MemTotal").ok_or("no MemTotal line")?;
    Ok(MemInfo {
        total,
        free: fields.get("MemFree").copied().unwrap_or(0),
        available: fields.get("MemAvailable").copied(),
        inactive_file: fields.get("Inactive(file)").copied(),
    })
}

pub fn read_meminfo(root: &HostRoot, held: &mut HeldFiles) -> Result<MemInfo, ReadError> {
    let path = root.proc(&["meminfo"]);
    let text = held.read_string(&path)?;
    parse_meminfo(&text).map_err(|e| ReadError {
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KubeletAvailableSource {
    /// cgroup v1 root: `memory.usage_in_bytes` - `total_inactive_file`, as cAdvisor.
    CgroupV1Root,
    /// cgroup v2 (no usage file at the root): MemTotal - MemFree is the usage.
    Meminfo,
}

/// `memory.available` as the kubelet computes it: capacity - working set, where the
/// working set is usage minus inactive file pages (reclaimable page cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KubeletAvailable {
    pub bytes: u64,
    pub source: KubeletAvailableSource,
}

/// From the v1 root memory cgroup where it exists (as the kubelet does), else from
/// meminfo. A root cgroup whose files exist but do not read is an error, not a quiet
/// fall back to the other figure.
pub fn kubelet_available(
    root: &HostRoot,
    mem: &MemInfo,
    held: &mut HeldFiles,
) -> Result<Option<KubeletAvailable>, ReadError> {
    let memcg = |f: &str| root.sys(&["fs", "cgroup", "memory", f]);
    let usage = held.read_u64_if_present(&memcg("memory.usage_in_bytes"))?;
    let stat_path = memcg("memory.stat");
    let stat = held.read_if_present(&stat_path)?;
    if let (Some(usage), Some(stat)) = (usage, stat) {
        let inactive = stat_value(&stat, "total_inactive_file").ok_or_else(|| {
            ReadError::invalid(&stat_path, "no total_inactive_file line with a number")
        })?;
        return Ok(Some(kubelet_from(
            mem.total,
            usage,
            inactive,
            KubeletAvailableSource::CgroupV1Root,
        )));
    }
    Ok(mem.inactive_file.map(|inactive| {
        kubelet_from(
            mem.total,
            mem.total.saturating_sub(mem.free),
            inactive,
            KubeletAvailableSource::Meminfo,
        )
    }))
}

fn kubelet_from(
    total: u64,
    usage: u64,
    inactive: u64,
    source: KubeletAvailableSource,
) -> KubeletAvailable {
    let working_set = usage.saturating_sub(inactive);
    KubeletAvailable {
        bytes: total.saturating_sub(working_set),
        source,
    }
}

/// A `name value` line of a cgroup `memory.stat`.
pub fn stat_value(stat: &str, name: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODERN: &str = "MemTotal:       24684084 kB\nMemFree:        15829924 kB\nMemAvailable:   23748072 kB\nBuffers:           23356 kB\nInactive(file):  6193032 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n";

    #[test]
    fn fields_are_in_bytes() {
        let m = parse_meminfo(MODERN).unwrap();
        assert_eq!(m.total, 24684084 * 1024);
        assert_eq!(m.available, Some(23748072 * 1024));
        assert_eq!(m.inactive_file, Some(6193032 * 1024));
    }

    #[test]
    fn kernels_before_3_14_have_no_memavailable() {
        let m = parse_meminfo("MemTotal: 1000 kB\nMemFree: 10 kB\nBuffers: 1 kB\n").unwrap();
        assert_eq!(m.available, None);
        assert_eq!(m.free, 10 * 1024);
    }

    #[test]
    fn malformed_files_are_an_error_not_a_panic() {
        assert!(parse_meminfo("").is_err());
        assert!(parse_meminfo("MemTotal: lots kB\n").is_err());
        assert!(parse_meminfo("garbage\n:::\nMemTotal: 5 kB\n").is_ok());
    }

    #[test]
    fn kubelet_available_from_the_v1_root_cgroup_else_from_meminfo() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot {
            proc: dir.path().join("proc"),
            sys: dir.path().join("sys"),
            rootfs: dir.path().into(),
        };
        let mem = parse_meminfo(MODERN).unwrap();
        // cgroup v2 (or no memory controller): MemTotal - (MemTotal - MemFree - Inactive(file))
        let v2 = kubelet_available(&root, &mem, &mut HeldFiles::default())
            .unwrap()
            .unwrap();
        assert_eq!(v2.source, KubeletAvailableSource::Meminfo);
        assert_eq!(v2.bytes, (15829924 + 6193032) * 1024);
        let cg = dir.path().join("sys/fs/cgroup/memory");
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::write(cg.join("memory.usage_in_bytes"), "9000000000\n").unwrap();
        std::fs::write(
            cg.join("memory.stat"),
            "cache 1\ntotal_inactive_file 2000000000\n",
        )
        .unwrap();
        let v1 = kubelet_available(&root, &mem, &mut HeldFiles::default())
            .unwrap()
            .unwrap();
        assert_eq!(v1.source, KubeletAvailableSource::CgroupV1Root);
        assert_eq!(v1.bytes, 24684084 * 1024 - 7_000_000_000);
        std::fs::write(cg.join("memory.stat"), "cache 1\n").unwrap();
        let err = kubelet_available(&root, &mem, &mut HeldFiles::default()).unwrap_err();
        assert_eq!(
            err.path,
            cg.join("memory.stat"),
            "no quiet fall back to meminfo"
        );
        std::fs::write(cg.join("memory.usage_in_bytes"), "lots\n").unwrap();
        let err = kubelet_available(&root, &mem, &mut HeldFiles::default()).unwrap_err();
        assert_eq!(err.path, cg.join("memory.usage_in_bytes"));
    }

    #[test]
    fn kubelet_available_subtracts_the_working_set() {
        // capacity 1000, usage 900 of which 300 inactive file: working set 600.
        let k = kubelet_from(1000, 900, 300, KubeletAvailableSource::CgroupV1Root);
        assert_eq!(k.bytes, 400);
        assert_eq!(
            stat_value("cache 5\ntotal_inactive_file 77\n", "total_inactive_file"),
            Some(77)
        );
        assert_eq!(
            stat_value("inactive_file 77\n", "total_inactive_file"),
            None
        );
    }
}
