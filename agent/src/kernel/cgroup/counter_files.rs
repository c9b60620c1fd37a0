//! A cgroup's counter files held open between rounds. Each round reads them again
//! from the start, one `pread` each: opening `cpu.stat` and `cpuacct.usage` by path
//! (a walk of six or seven kernfs directories), reading to end of file and closing
//! was most of the cgroup collector's cost at 500 pods. cgroupfs regenerates a file
//! on each read from offset 0, so the figures are as fresh as a new open's.

use super::files::parse_v1_usage;
use super::{parse_cpu_stat, CpuStat};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Larger than any `cpu.stat` (a dozen short lines); a file that fills it is read
/// again by path, whole.
const BUF: usize = 1024;

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
        let mut stat = parse_cpu_stat(&read_from_start(&self.stat)?).map_err(invalid)?;
        if let Some(f) = &self.usage {
            stat.usage_ns = Some(parse_v1_usage(&read_from_start(f)?).map_err(invalid)?);
        }
        Ok(stat)
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn read_from_start(f: &File) -> io::Result<String> {
    let mut buf = [0u8; BUF];
    let n = f.read_at(&mut buf, 0)?;
    if n == BUF {
        return Err(invalid(format!("more than {BUF} bytes")));
    }
    String::from_utf8(buf[..n].to_vec()).map_err(|e| invalid(e.to_string()))
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
    fn a_missing_file_does_not_open() {
        let t = tempfile::tempdir().unwrap();
        let e = CounterFiles::open(t.path(), None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
