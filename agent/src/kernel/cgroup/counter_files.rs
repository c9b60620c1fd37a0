//! A cgroup's counter files held open between rounds. Each round reads them again
//! from the start, one `pread` each: opening `cpu.stat` and `cpuacct.usage` by path
//! (a walk of six or seven kernfs directories), reading to end of file and closing
//! was most of the cgroup collector's cost at 500 pods. cgroupfs regenerates a file
//! on each read from offset 0, so the figures are as fresh as a new open's.
//!
//! A cgroup's limit files are held the same way, though read far less often (when
//! the limit may have changed): in a profile at 500 pods, re-reading every limit by
//! path once a minute was about an eighth of the collector's CPU.

use super::files::parse_v1_usage;
use super::{parse_cpu_max, parse_cpu_stat, parse_v1_quota, CpuQuota, CpuStat};
use crate::kernel::read_from_start;
use std::fs::File;
use std::io;
use std::path::Path;

#[derive(Debug)]
pub struct CounterFiles {
    stat: File,
    /// v1: `cpuacct.usage`, when the cpuacct hierarchy is known.
    usage: Option<File>,
}

impl CounterFiles {
    /// `cpuacct_dir`: the same cgroup in the v1 cpuacct hierarchy; None on v2,
    /// whose `cpu.stat` has the usage.
    pub fn open(cpu_dir: &Path, cpuacct_dir: Option<&Path>) -> io::Result<Self> {
        Ok(Self {
            stat: File::open(cpu_dir.join("cpu.stat"))?,
            usage: cpuacct_dir
                .map(|d| File::open(d.join("cpuacct.usage")))
                .transpose()?,
        })
    }

    /// How many descriptors these hold.
    pub fn descriptors(&self) -> usize {
        1 + usize::from(self.usage.is_some())
    }

    /// The counters now. Any error (the cgroup removed: ENODEV; a file larger than
    /// expected; data that does not parse) means: read by path instead, which says
    /// what is wrong.
    pub fn read(&self) -> io::Result<CpuStat> {
        let mut stat = read_from_start(&self.stat, parse_cpu_stat)?.map_err(invalid)?;
        stat.usage_ns = self.read_usage()?;
        Ok(stat)
    }

    /// v1's usage alone, without `cpu.stat`; None without a `cpuacct.usage` held.
    pub fn read_usage(&self) -> io::Result<Option<u64>> {
        self.usage
            .as_ref()
            .map(|f| read_from_start(f, parse_v1_usage)?.map_err(invalid))
            .transpose()
    }
}

/// A cgroup's CPU limit files, held open: v1's `cpu.cfs_quota_us` and
/// `cpu.cfs_period_us`, or v2's `cpu.max`.
#[derive(Debug)]
pub enum LimitFiles {
    V1 { quota: File, period: File },
    V2 { max: File },
}

impl LimitFiles {
    pub fn open_v1(cpu_dir: &Path) -> io::Result<Self> {
        Ok(Self::V1 {
            quota: File::open(cpu_dir.join("cpu.cfs_quota_us"))?,
            period: File::open(cpu_dir.join("cpu.cfs_period_us"))?,
        })
    }

    pub fn open_v2(dir: &Path) -> io::Result<Self> {
        Ok(Self::V2 {
            max: File::open(dir.join("cpu.max"))?,
        })
    }

    /// How many descriptors these hold.
    pub fn descriptors(&self) -> usize {
        match self {
            Self::V1 { .. } => 2,
            Self::V2 { .. } => 1,
        }
    }

    /// The limit now. Any error means: read by path instead, which says what is
    /// wrong.
    pub fn read(&self) -> io::Result<Option<CpuQuota>> {
        match self {
            Self::V1 { quota, period } => {
                read_from_start(quota, |q| read_from_start(period, |p| parse_v1_quota(q, p)))??
            }
            Self::V2 { max } => read_from_start(max, parse_cpu_max)?,
        }
        .map_err(invalid)
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_read_sees_the_file_as_it_is_now() {
        let t = tempfile::tempdir().unwrap();
        let (cpu, acct) = (t.path().join("cpu"), t.path().join("acct"));
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::create_dir_all(&acct).unwrap();
        let stat = |p: u64| format!("nr_periods {p}\nnr_throttled 1\nthrottled_time 5\n");
        std::fs::write(cpu.join("cpu.stat"), stat(10)).unwrap();
        std::fs::write(acct.join("cpuacct.usage"), "700\n").unwrap();
        let files = CounterFiles::open(&cpu, Some(&acct)).unwrap();
        assert_eq!(files.descriptors(), 2);
        let first = files.read().unwrap();
        assert_eq!((first.nr_periods, first.usage_ns), (10, Some(700)));
        // Rewritten in place, as the kernel regenerates it: the same descriptor
        // reads the new figures.
        std::fs::write(cpu.join("cpu.stat"), stat(12)).unwrap();
        std::fs::write(acct.join("cpuacct.usage"), "900\n").unwrap();
        let second = files.read().unwrap();
        assert_eq!((second.nr_periods, second.usage_ns), (12, Some(900)));
        std::fs::write(acct.join("cpuacct.usage"), "many\n").unwrap();
        let e = files.read().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("\"many\""), "{e}");
    }

    #[test]
    fn held_limits_follow_the_file_in_both_versions() {
        let t = tempfile::tempdir().unwrap();
        let at = |name: &str, text: &str| std::fs::write(t.path().join(name), text).unwrap();
        at("cpu.cfs_quota_us", "50000\n");
        at("cpu.cfs_period_us", "100000\n");
        at("cpu.max", "max 100000\n");
        let v1 = LimitFiles::open_v1(t.path()).unwrap();
        let v2 = LimitFiles::open_v2(t.path()).unwrap();
        assert_eq!((v1.descriptors(), v2.descriptors()), (2, 1));
        let cpus = |f: &LimitFiles| f.read().unwrap().map(|q| q.cores());
        assert_eq!(cpus(&v1), Some(0.5));
        assert_eq!(cpus(&v2), None);
        at("cpu.cfs_quota_us", "-1\n");
        at("cpu.max", "200000 100000\n");
        assert_eq!(cpus(&v1), None);
        assert_eq!(cpus(&v2), Some(2.0));
        at("cpu.max", "half 100000\n");
        assert_eq!(v2.read().unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_missing_file_does_not_open() {
        let t = tempfile::tempdir().unwrap();
        let e = CounterFiles::open(t.path(), None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
