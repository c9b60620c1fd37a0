//! Recognising events in the kernel's own wording, across the kernel versions that
//! word them differently.

use super::{KernelEvent, OomKill};

/// Recognises events in consecutive messages. Stateful because an OOM kill spans
/// several records: the cgroup comes in one line, the victim in a later one.
#[derive(Debug, Default)]
pub struct Matcher {
    oom: Option<OomContext>,
}

#[derive(Debug, Default)]
struct OomContext {
    pid: Option<u32>,
    memory_cgroup: Option<String>,
    limit_cgroup: Option<String>,
    constraint: Option<String>,
}

impl Matcher {
    pub fn feed(&mut self, message: &str) -> Option<KernelEvent> {
        let msg = message.trim_end();
        // 4.19+: oom-kill:constraint=CONSTRAINT_MEMCG,...,oom_memcg=/a,task_memcg=/a/b,task=x,pid=1,uid=0
        if let Some(kv) = msg.strip_prefix("oom-kill:") {
            let field = |name: &str| {
                kv.split(',')
                    .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
                    .filter(|v| !v.is_empty() && *v != "(null)")
                    .map(str::to_string)
            };
            self.oom = Some(OomContext {
                pid: field("pid").and_then(|p| p.parse().ok()),
                memory_cgroup: field("task_memcg"),
                limit_cgroup: field("oom_memcg"),
                constraint: field("constraint"),
            });
            return None;
        }
        // Before 4.19: Task in /a/b killed as a result of limit of /a
        if let Some(rest) = msg.strip_prefix("Task in ") {
            if let Some((task, limit)) = rest.split_once(" killed as a result of limit of ") {
                self.oom = Some(OomContext {
                    pid: None,
                    memory_cgroup: Some(task.to_string()),
                    limit_cgroup: Some(limit.trim().to_string()),
                    constraint: Some("CONSTRAINT_MEMCG".into()),
                });
                return None;
            }
        }
        if let Some(idx) = msg.find("Killed process ") {
            let rest = &msg[idx + "Killed process ".len()..];
            let (pid, rest) = rest.split_once(' ')?;
            let pid: u32 = pid.parse().ok()?;
            let task = rest.strip_prefix('(')?;
            let task = &task[..task.rfind(')')?];
            let ctx = self.oom.take().filter(|c| c.pid.is_none_or(|p| p == pid));
            let ctx = ctx.unwrap_or_default();
            let constraint = ctx.constraint.or_else(|| {
                msg.starts_with("Memory cgroup out of memory")
                    .then(|| "CONSTRAINT_MEMCG".to_string())
            });
            return Some(KernelEvent::OomKill(OomKill {
                pid,
                task: task.to_string(),
                memory_cgroup: ctx.memory_cgroup,
                limit_cgroup: ctx.limit_cgroup,
                constraint,
            }));
        }
        // "nf_conntrack: table full, dropping packet", doubled prefix since 4.x,
        // "table full in netns 4026532177, dropping packet" on recent kernels.
        if let Some(idx) = msg.find("nf_conntrack: table full") {
            if msg.contains("dropping packet") {
                let netns = msg[idx..]
                    .split_once(" in netns ")
                    .and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
                return Some(KernelEvent::ConntrackTableFull { netns });
            }
        }
        if let Some(idx) = msg.find("unregister_netdevice: waiting for ") {
            let rest = &msg[idx + "unregister_netdevice: waiting for ".len()..];
            let (device, after) = rest.split_once(" to become free")?;
            let usage_count = after
                .split_once("Usage count = ")
                .and_then(|(_, n)| n.trim().parse().ok());
            return Some(KernelEvent::NetdevUnregisterStuck {
                device: device.to_string(),
                usage_count,
            });
        }
        filesystem_readonly(msg)
    }
}

/// ext2/3/4 `EXT4-fs (sda1): Remounting filesystem read-only`, XFS shutting down
/// (it has no read-only fallback: every write then fails with EIO), btrfs
/// `BTRFS info (device sda1): forced readonly`.
fn filesystem_readonly(msg: &str) -> Option<KernelEvent> {
    let paren = |s: &str| -> Option<(String, String)> {
        let (fs, rest) = s.split_once(" (")?;
        let (dev, _) = rest.split_once(')')?;
        let fs = fs.split_whitespace().next()?.trim_end_matches("-fs");
        let dev = dev.strip_prefix("device ").unwrap_or(dev);
        let dev = dev.split_whitespace().next()?;
        Some((fs.to_string(), dev.to_string()))
    };
    let hit = msg.contains("Remounting filesystem read-only")
        || (msg.starts_with("XFS (")
            && (msg.contains("Shutting down filesystem") || msg.contains("shut down")))
        || (msg.starts_with("BTRFS") && msg.contains("forced readonly"));
    if !hit {
        return None;
    }
    let (filesystem, device) = paren(msg)?;
    Some(KernelEvent::FilesystemReadonly { device, filesystem })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(lines: &[&str]) -> Vec<KernelEvent> {
        let mut m = Matcher::default();
        lines.iter().filter_map(|l| m.feed(l)).collect()
    }

    const CG: &str = "/kubepods/burstable/pod0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9";
    const CID: &str = "4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d";

    #[test]
    fn oom_kill_since_4_19_names_the_victim_cgroup() {
        // Abridged from a 5.15 kernel: the dump_header lines in between are ignored.
        let task = format!("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset={CID},mems_allowed=0,oom_memcg={CG},task_memcg={CG}/{CID},task=stress,pid=24131,uid=0");
        let ev = feed_all(&[
            "stress invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=939",
            "memory: usage 32768kB, limit 32768kB, failcnt 142",
            &task,
            "Memory cgroup out of memory: Killed process 24131 (stress) total-vm:110480kB, anon-rss:32272kB, file-rss:264kB, shmem-rss:0kB, UID:0 pgtables:112kB oom_score_adj:939",
            "oom_reaper: reaped process 24131 (stress), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
        ]);
        assert_eq!(
            ev,
            [KernelEvent::OomKill(OomKill {
                pid: 24131,
                task: "stress".into(),
                memory_cgroup: Some(format!("{CG}/{CID}")),
                limit_cgroup: Some(CG.into()),
                constraint: Some("CONSTRAINT_MEMCG".into()),
            })]
        );
    }

    #[test]
    fn oom_kill_before_4_19_takes_the_task_in_line() {
        // A 4.14 kernel: "Task in" comes first, then "Kill process", then "Killed process".
        let task_in = format!("Task in {CG}/{CID} killed as a result of limit of {CG}");
        let ev = feed_all(&[
            "java invoked oom-killer: gfp_mask=0x14000c0(GFP_KERNEL), nodemask=(null), order=0, oom_score_adj=968",
            &task_in,
            "memory: usage 524288kB, limit 524288kB, failcnt 3035",
            "Memory cgroup out of memory: Kill process 5511 (java) score 1962 or sacrifice child",
            "Killed process 5511 (java) total-vm:3875120kB, anon-rss:520712kB, file-rss:17780kB, shmem-rss:0kB",
        ]);
        let [KernelEvent::OomKill(k)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(k.pid, 5511);
        assert_eq!(k.task, "java");
        assert_eq!(
            k.memory_cgroup.as_deref(),
            Some(format!("{CG}/{CID}").as_str())
        );
        assert_eq!(k.limit_cgroup.as_deref(), Some(CG));
    }

    #[test]
    fn a_node_wide_oom_has_no_cgroup_limit() {
        let ev = feed_all(&[
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/system.slice/foo.service,task=foo,pid=77,uid=0",
            "Out of memory: Killed process 77 (foo) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0",
        ]);
        let [KernelEvent::OomKill(k)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(k.constraint.as_deref(), Some("CONSTRAINT_NONE"));
        assert_eq!(k.limit_cgroup, None);
        assert_eq!(
            k.memory_cgroup.as_deref(),
            Some("/system.slice/foo.service")
        );
    }

    #[test]
    fn a_stale_context_for_another_pid_is_not_used() {
        let ev = feed_all(&[
            "oom-kill:constraint=CONSTRAINT_MEMCG,task_memcg=/a,task=x,pid=1,uid=0",
            "Killed process 2 (y) total-vm:1kB",
        ]);
        let [KernelEvent::OomKill(k)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!((k.pid, k.memory_cgroup.clone()), (2, None));
    }

    #[test]
    fn conntrack_table_full_in_each_spelling() {
        for (line, netns) in [
            ("nf_conntrack: table full, dropping packet", None),
            (
                "nf_conntrack: nf_conntrack: table full, dropping packet",
                None,
            ),
            (
                "nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet",
                Some(4026532177),
            ),
        ] {
            assert_eq!(
                feed_all(&[line]),
                [KernelEvent::ConntrackTableFull { netns }],
                "{line}"
            );
        }
        assert!(feed_all(&[
            "nf_conntrack: default automatic helper assignment has been turned off"
        ])
        .is_empty());
    }

    #[test]
    fn unregister_netdevice_waiting() {
        assert_eq!(
            feed_all(&["unregister_netdevice: waiting for lo to become free. Usage count = 1"]),
            [KernelEvent::NetdevUnregisterStuck {
                device: "lo".into(),
                usage_count: Some(1)
            }]
        );
        // 5.17+ with a name that may contain dots, and no count on very old kernels.
        assert_eq!(
            feed_all(&["unregister_netdevice: waiting for eth0.100 to become free"]),
            [KernelEvent::NetdevUnregisterStuck {
                device: "eth0.100".into(),
                usage_count: None
            }]
        );
    }

    #[test]
    fn filesystems_going_read_only() {
        let ro = |dev: &str, fs: &str| KernelEvent::FilesystemReadonly {
            device: dev.into(),
            filesystem: fs.into(),
        };
        assert_eq!(
            feed_all(&["EXT4-fs (sda1): Remounting filesystem read-only"]),
            [ro("sda1", "EXT4")]
        );
        assert_eq!(
            feed_all(&[
                "XFS (dm-0): Corruption of in-memory data detected.  Shutting down filesystem"
            ]),
            [ro("dm-0", "XFS")]
        );
        assert_eq!(
            feed_all(&["XFS (nvme0n1p1): Log I/O error (0x6) detected at xlog_ioend_work+0x6e/0x70 [xfs] (fs/xfs/xfs_log.c:1378).  Shutting down filesystem."]),
            [ro("nvme0n1p1", "XFS")]
        );
        assert_eq!(
            feed_all(&["BTRFS info (device sdb1 state EA): forced readonly"]),
            [ro("sdb1", "BTRFS")]
        );
        assert!(
            feed_all(&["EXT4-fs (sda1): mounted filesystem with ordered data mode"]).is_empty()
        );
        assert!(feed_all(&["EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0"]).is_empty());
    }

    #[test]
    fn noise_and_garbage_match_nothing() {
        assert!(feed_all(&[
            "",
            "Killed process",
            "Killed process x (y)",
            "Killed process 1 y",
            "Task in /a",
            "oom-kill:"
        ])
        .is_empty());
    }
}
