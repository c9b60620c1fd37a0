//! Processes as procfs shows them: the pids (`/proc/<n>`), when each started
//! (`/proc/<pid>/stat`), the cgroups it is in (`/proc/<pid>/cgroup`), and the boot
//! time and clock tick its start time counts in (`/proc/stat`, `sysconf(_SC_CLK_TCK)`).

use super::{read_dir, read_string, ReadError};
use crate::host::HostRoot;
use nix::unistd::{sysconf, SysconfVar};
use std::time::{Duration, SystemTime};

/// A thread-group leader, and the inode of its `/proc/<pid>` directory: procfs gives
/// each process its own, so a pid reused by a new process comes with a new inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcEntry {
    pub pid: u32,
    pub inode: u64,
}

/// Every numeric entry of procfs (thread-group leaders), with its inode (from the
/// directory listing, no read per process).
pub fn list_processes(root: &HostRoot) -> Result<Vec<ProcEntry>, ReadError> {
    use std::os::unix::fs::DirEntryExt;
    Ok(read_dir(&root.proc(&[]))?
        .filter_map(|e| {
            let e = e.ok()?;
            let pid = e.file_name().to_str()?.parse().ok()?;
            Some(ProcEntry {
                pid,
                inode: e.ino(),
            })
        })
        .collect())
}

/// What nodediag uses of `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStat {
    /// Field 22: when the process started, in clock ticks since boot.
    pub start_ticks: u64,
    /// PF_KTHREAD in field 9 (flags).
    pub kernel_thread: bool,
}

/// `PF_KTHREAD` of include/linux/sched.h, a bit of `/proc/<pid>/stat`'s flags.
pub(crate) const PF_KTHREAD: u64 = 0x0020_0000;

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields count from its last `)`.
pub fn parse_stat(text: &str) -> Result<ProcessStat, String> {
    let close = text.rfind(')').ok_or("no \")\" closing the command name")?;
    // Field 3 (state) is the first after the name: field 9 is the 7th, 22 the 20th.
    let mut fields = text[close + 1..].split_whitespace();
    let flags = fields.nth(6).ok_or("fewer than 22 fields")?;
    let field = fields.nth(12).ok_or("fewer than 22 fields")?;
    let flags: u64 = flags.parse().map_err(|e| format!("flags {flags:?}: {e}"))?;
    let start_ticks = field
        .parse()
        .map_err(|e| format!("start time {field:?}: {e}"))?;
    Ok(ProcessStat {
        start_ticks,
        kernel_thread: flags & PF_KTHREAD != 0,
    })
}

pub fn read_stat(root: &HostRoot, pid: u32) -> Result<ProcessStat, ReadError> {
    let path = root.proc(&[&pid.to_string(), "stat"]);
    parse_stat(&read_string(&path)?).map_err(|e| ReadError::invalid(&path, e))
}

/// `btime` of `/proc/stat`: boot time in seconds since the epoch.
pub fn parse_boot_time(stat: &str) -> Result<u64, String> {
    let value = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .ok_or("no btime line")?
        .trim();
    value.parse().map_err(|e| format!("btime {value:?}: {e}"))
}

/// Turns the start times of `/proc/<pid>/stat` into wall-clock times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartClock {
    pub boot: SystemTime,
    pub ticks_per_second: u64,
}

impl StartClock {
    pub fn read(root: &HostRoot) -> Result<Self, ReadError> {
        let path = root.proc(&["stat"]);
        let btime =
            parse_boot_time(&read_string(&path)?).map_err(|e| ReadError::invalid(&path, e))?;
        Ok(StartClock {
            boot: SystemTime::UNIX_EPOCH + Duration::from_secs(btime),
            ticks_per_second: clock_ticks_per_second(),
        })
    }

    pub fn started(&self, start_ticks: u64) -> SystemTime {
        self.boot + ticks_to_duration(start_ticks, self.ticks_per_second)
    }
}

/// USER_HZ, the unit of procfs times: 100 on every architecture but alpha, so that
/// is the answer when sysconf has none.
pub fn clock_ticks_per_second() -> u64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(v)) if v > 0 => v as u64,
        _ => 100,
    }
}

pub fn ticks_to_duration(ticks: u64, per_second: u64) -> Duration {
    let per_second = per_second.max(1);
    Duration::from_secs(ticks / per_second)
        + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second)
}

/// `/proc/<pid>/cgroup` as read; [`CgroupFile::entries`] parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFile(pub String);

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controllers:path`. cgroup v2 is
/// the line `0::path`, with no controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupEntry<'a> {
    pub hierarchy: u32,
    /// Comma-separated (`cpu,cpuacct`, `name=systemd`); empty for v2.
    pub controllers: &'a str,
    pub path: &'a str,
}

impl CgroupEntry<'_> {
    pub fn controllers(&self) -> impl Iterator<Item = &str> {
        self.controllers.split(',').filter(|c| !c.is_empty())
    }
}

impl CgroupFile {
    /// The well-formed lines; others are skipped. The path may itself hold `:`.
    pub fn entries(&self) -> impl Iterator<Item = CgroupEntry<'_>> {
        self.0.lines().filter_map(|line| {
            let mut it = line.splitn(3, ':');
            let (id, controllers, path) = (it.next()?, it.next()?, it.next()?);
            Some(CgroupEntry {
                hierarchy: id.parse().ok()?,
                controllers,
                path,
            })
        })
    }
}

pub fn read_cgroups(root: &HostRoot, pid: u32) -> Result<CgroupFile, ReadError> {
    read_string(&root.proc(&[&pid.to_string(), "cgroup"])).map(CgroupFile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "4242 (we ird) (n) S 1 4242 4242 0 -1 4194560 120 0 0 0 1 2 0 0 20 0 1 0 987654 8155136 200 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Ok(ProcessStat {
                start_ticks: 987654,
                kernel_thread: false
            })
        );
        let kthreadd = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 3 0 0 20 0 1 0 1 0 0";
        assert_eq!(
            parse_stat(kthreadd),
            Ok(ProcessStat {
                start_ticks: 1,
                kernel_thread: true
            })
        );
        assert!(
            parse_stat("1 (init) S 0")
                .unwrap_err()
                .contains("fewer than 22"),
            "truncated"
        );
        assert!(parse_stat("garbage").unwrap_err().contains("\")\""));
        let bad = "1 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 -5 0 0";
        assert!(parse_stat(bad).unwrap_err().contains("\"-5\""));
        assert!(parse_stat("").is_err());
    }

    #[test]
    fn boot_time_is_read_from_proc_stat() {
        let stat = "cpu  1 2 3 4\nintr 5\nctxt 99\nbtime 1700000000\nprocesses 7\n";
        assert_eq!(parse_boot_time(stat), Ok(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1 2\n"), Err("no btime line".into()));
        assert!(parse_boot_time("btime soon\n")
            .unwrap_err()
            .contains("soon"));
    }

    #[test]
    fn clock_ticks_become_durations() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
        assert_eq!(ticks_to_duration(0, 100), Duration::ZERO);
        assert_eq!(
            ticks_to_duration(7, 0),
            Duration::from_secs(7),
            "no tick is no panic"
        );
        let clock = StartClock {
            boot: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            ticks_per_second: 100,
        };
        assert_eq!(
            clock.started(150),
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_001_500)
        );
    }

    #[test]
    fn cgroup_lines_of_both_versions() {
        let f = CgroupFile(
            "12:pids:/kubepods/burstable/podx/abc\n\
             2:cpu,cpuacct:/a:b\n\
             1:name=systemd:/\n\
             0::/system.slice/sshd.service\n"
                .into(),
        );
        let e: Vec<_> = f.entries().collect();
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].hierarchy, 12);
        assert_eq!(e[0].path, "/kubepods/burstable/podx/abc");
        assert_eq!(e[1].controllers().collect::<Vec<_>>(), ["cpu", "cpuacct"]);
        assert_eq!(e[1].path, "/a:b", "a path may hold a colon");
        assert_eq!(e[2].controllers().collect::<Vec<_>>(), ["name=systemd"]);
        assert_eq!(e[3].controllers().count(), 0, "v2 has no controllers");
    }

    #[test]
    fn malformed_cgroup_lines_are_skipped() {
        let f = CgroupFile(
            "garbage without colons\nx:cpu:/a\n:cpu:/b\n3:memory\n\n4:pids:/ok\n".into(),
        );
        let paths: Vec<_> = f.entries().map(|e| e.path).collect();
        assert_eq!(paths, ["/ok"]);
        assert_eq!(CgroupFile(String::new()).entries().count(), 0);
    }

    #[test]
    fn this_process_reads_back() {
        let root = HostRoot::default();
        let me = std::process::id();
        assert!(list_processes(&root).unwrap().iter().any(|p| p.pid == me));
        let clock = StartClock::read(&root).unwrap();
        let started = clock.started(read_stat(&root, me).unwrap().start_ticks);
        let now = SystemTime::now();
        assert!(
            started <= now + Duration::from_secs(1),
            "{started:?} after {now:?}"
        );
        assert!(clock.boot < started);
        assert!(read_cgroups(&root, me).unwrap().entries().count() > 0);
    }

    #[test]
    fn read_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot {
            proc: dir.path().to_path_buf(),
            ..HostRoot::default()
        };
        let e = read_stat(&root, 42).unwrap_err();
        assert_eq!(e.path, dir.path().join("42/stat"));
        assert!(e.is_not_found());
        std::fs::write(dir.path().join("stat"), "cpu 1\n").unwrap();
        let e = StartClock::read(&root).unwrap_err();
        assert_eq!(e.path, dir.path().join("stat"));
        assert!(e.to_string().contains("no btime line"), "{e}");
    }
}
