//! netdev_unregister_stuck from the kernel log, and the kernel log lines attached as
//! evidence to findings other rules produce.

use super::{Finding, FindingDef, RuleContext, Severity, KERNEL_LOG_LINES};
use crate::collect::KmsgSample;
use crate::flags::parse_duration;
use crate::kernel::kmsg::{EventKind, KernelEvent};
use crate::store::Snapshot;
use std::collections::BTreeSet;
use std::time::Duration;

pub const NETDEV_UNREGISTER_STUCK: FindingDef = FindingDef {
    id: "netdev_unregister_stuck",
    remedy: "A kernel refcount leak on a network device: new network namespaces can hang; drain and reboot, upgrade the kernel.",
};
pub const FINDINGS: &[&FindingDef] = &[&NETDEV_UNREGISTER_STUCK];

#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
#[command(next_help_heading = "Kernel log")]
pub struct Thresholds {
    /// netdev_unregister_stuck after this many kernel log lines within
    /// --kmsg.unregister-window.
    #[arg(long = "kmsg.unregister-count", env = "NODEDIAG_KMSG_UNREGISTER_COUNT", default_value = "3", value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub unregister_count: u64,

    /// Window for --kmsg.unregister-count.
    #[arg(long = "kmsg.unregister-window", env = "NODEDIAG_KMSG_UNREGISTER_WINDOW", default_value = "20m", value_parser = parse_duration, value_name = "DURATION")]
    pub unregister_window: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        crate::flags::defaults()
    }
}

/// Findings whose evidence gains the matching kernel log lines, when both exist.
pub const KERNEL_LOG_EVIDENCE: &[(&str, EventKind)] = &[
    ("conntrack_drops", EventKind::ConntrackTableFull),
    ("conntrack_table_full", EventKind::ConntrackTableFull),
    ("filesystem_readonly", EventKind::FilesystemReadonly),
];

pub fn rules(snapshot: &Snapshot, t: &Thresholds, _ctx: &RuleContext, out: &mut Vec<Finding>) {
    let Some((at, log)) = snapshot.latest::<KmsgSample>() else {
        return;
    };
    let window = t.unregister_window;
    let recent: Vec<_> = log
        .of_kind(EventKind::NetdevUnregisterStuck)
        .filter(|e| {
            at.duration_since(e.seen_at)
                .map_or(true, |age| age <= window)
        })
        .collect();
    if (recent.len() as u64) < t.unregister_count {
        return;
    }
    let mut devices = BTreeSet::new();
    let mut max_usage = None;
    for e in &recent {
        if let KernelEvent::NetdevUnregisterStuck {
            device,
            usage_count,
        } = &e.event
        {
            devices.insert(device.clone());
            max_usage = max_usage.max(*usage_count);
        }
    }
    let mut f = Finding::new(
        &NETDEV_UNREGISTER_STUCK,
        Severity::Warning,
        "host",
        format!(
            "the kernel waited {} times in {} min for {} to become free: a leaked reference blocks network namespace teardown",
            recent.len(),
            window.as_secs() / 60,
            devices.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
        at,
    )
    .with("messages_in_window", recent.len())
    .with("window_seconds", window.as_secs())
    .with("threshold_count", t.unregister_count)
    .with("devices", devices.into_iter().collect::<Vec<_>>())
    .with("kernel_log", last_lines(recent.iter().copied()));
    if let Some(u) = max_usage {
        f = f.with("max_usage_count", u);
    }
    out.push(f);
}

/// Adds `kernel_log` (the latest matching lines within the window) to the findings
/// listed in KERNEL_LOG_EVIDENCE, whichever rule produced them.
pub fn attach_evidence(snapshot: &Snapshot, ctx: &RuleContext, findings: &mut [Finding]) {
    let Some((at, log)) = snapshot.latest::<KmsgSample>() else {
        return;
    };
    for f in findings.iter_mut() {
        let Some((_, kind)) = KERNEL_LOG_EVIDENCE.iter().find(|(id, _)| *id == f.id) else {
            continue;
        };
        let lines = last_lines(
            log.of_kind(*kind)
                .filter(|e| super::oom::in_window(e.seen_at, at, ctx)),
        );
        if !lines.is_empty() {
            f.evidence.insert("kernel_log", lines.into());
        }
    }
}

fn last_lines<'a>(
    events: impl DoubleEndedIterator<Item = &'a crate::collect::kmsg::LoggedEvent>,
) -> Vec<String> {
    let mut lines: Vec<String> = events
        .rev()
        .take(KERNEL_LOG_LINES)
        .map(|e| e.line.clone())
        .collect();
    lines.reverse();
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::kmsg::{LogSource, LoggedEvent};
    use crate::collect::pods::{PodIdentity, Qos};
    use crate::diagnose::testing::evaluate_log_families;
    use crate::kernel::conntrack::ConntrackStats;
    use crate::kernel::kmsg::Matcher;
    use crate::store::Store;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    const T0: u64 = 1_000_000;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + s)
    }

    /// Kernel log lines seen at the given seconds.
    fn log(lines: &[(u64, &str)]) -> KmsgSample {
        let mut m = Matcher::default();
        let events = lines
            .iter()
            .filter_map(|(s, line)| {
                Some(LoggedEvent {
                    seen_at: at(*s),
                    monotonic_us: Some(*s * 1_000_000),
                    line: line.to_string(),
                    event: m.feed(line)?,
                    pod: None,
                    attributed: false,
                })
            })
            .collect();
        KmsgSample {
            source: LogSource::Kmsg,
            path: Some("/dev/kmsg".into()),
            events,
            totals: Default::default(),
            records_read: lines.len() as u64,
            unavailable: vec![],
        }
    }

    fn evaluate_at(now: u64, kmsg: Option<KmsgSample>, conntrack_drops: &[u64]) -> Vec<Finding> {
        let store = Store::new("n".into(), Duration::from_secs(300));
        if let Some(k) = kmsg {
            store.register("kmsg", Duration::from_secs(15));
            store.record("kmsg", at(now), Duration::ZERO, Ok(Arc::new(k)));
        }
        store.register("conntrack", Duration::from_secs(15));
        for (i, d) in conntrack_drops.iter().enumerate() {
            let s = crate::collect::ConntrackSample {
                entries: 10,
                max: 1000,
                buckets: None,
                stats: Some(ConntrackStats {
                    drop: Some(*d),
                    ..Default::default()
                }),
                stats_source: None,
                peak: None,
                top: None,
                unavailable: vec![],
            };
            store.record(
                "conntrack",
                at(now - 15 * (conntrack_drops.len() - 1 - i) as u64),
                Duration::ZERO,
                Ok(Arc::new(s)),
            );
        }
        evaluate_log_families(&store)
    }

    const STUCK: &str = "unregister_netdevice: waiting for lo to become free. Usage count = 1";

    #[test]
    fn unregister_stuck_needs_three_lines_within_twenty_minutes() {
        let two = log(&[(0, STUCK), (10, STUCK)]);
        assert!(evaluate_at(20, Some(two), &[]).is_empty());
        let three = log(&[(0, STUCK), (10, STUCK), (20, STUCK)]);
        let f = evaluate_at(20, Some(three.clone()), &[]);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].id, f[0].severity),
            ("netdev_unregister_stuck", Severity::Warning)
        );
        assert_eq!(f[0].evidence["messages_in_window"], 3);
        assert_eq!(f[0].evidence["devices"], serde_json::json!(["lo"]));
        assert_eq!(f[0].evidence["kernel_log"].as_array().unwrap().len(), 3);
        // 20 minutes after the first line it has left the window.
        assert!(evaluate_at(1201, Some(three), &[]).is_empty());
    }

    const FULL: &str = "nf_conntrack: nf_conntrack: table full, dropping packet";

    #[test]
    fn conntrack_drops_gain_the_kernel_log_lines() {
        let f = evaluate_at(300, Some(log(&[(100, FULL), (290, FULL)])), &[5, 9]);
        // Drops rising with "table full" lines also make the table full (see
        // diagnose::conntrack); both carry the lines.
        let ids: Vec<&str> = f.iter().map(|f| f.id).collect();
        assert_eq!(ids, ["conntrack_drops", "conntrack_table_full"]);
        for f in &f {
            assert_eq!(f.evidence["kernel_log"], serde_json::json!([FULL, FULL]));
        }
        // Lines older than the window are not evidence of today's drops.
        let f = evaluate_at(1000, Some(log(&[(100, FULL)])), &[5, 9]);
        assert_eq!(f[0].id, "conntrack_drops");
        assert!(!f[0].evidence.contains_key("kernel_log"));
        // Without drops the log lines alone make no finding of another rule.
        assert!(evaluate_at(300, Some(log(&[(290, FULL)])), &[5, 5]).is_empty());
        // And without the kmsg collector the finding stands as before.
        assert!(!evaluate_at(300, None, &[5, 9])[0]
            .evidence
            .contains_key("kernel_log"));
    }

    #[test]
    fn attachment_is_by_id_whatever_rule_made_the_finding() {
        let store = Store::new("n".into(), Duration::from_secs(300));
        store.register("kmsg", Duration::from_secs(15));
        let k = log(&[(10, "EXT4-fs (sda1): Remounting filesystem read-only")]);
        store.record("kmsg", at(20), Duration::ZERO, Ok(Arc::new(k)));
        let mut findings = vec![
            Finding::new(
                &crate::diagnose::disk::FILESYSTEM_READONLY,
                Severity::Critical,
                "/var/lib/kubelet",
                "ro",
                at(20),
            ),
            Finding::new(
                &crate::diagnose::nic::LINK_DOWN,
                Severity::Critical,
                "eth0",
                "down",
                at(20),
            ),
        ];
        attach_evidence(
            &store.snapshot(),
            &crate::diagnose::testing::ctx(),
            &mut findings,
        );
        assert_eq!(
            findings[0].evidence["kernel_log"],
            serde_json::json!(["EXT4-fs (sda1): Remounting filesystem read-only"])
        );
        assert!(findings[1].evidence.is_empty());
    }

    const UID: &str = "0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9";
    const CID: &str = "4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d";

    #[test]
    fn oom_kills_name_the_pod_and_container() {
        let cg = format!("/kubepods/burstable/pod{UID}");
        let line1 = format!("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg={cg},task_memcg={cg}/{CID},task=python3,pid=4242,uid=0");
        let line2 = "Memory cgroup out of memory: Killed process 4242 (python3) total-vm:300000kB, anon-rss:32000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:100kB oom_score_adj:0";
        let mut k = log(&[(10, &line1), (10, line2)]);
        k.events[0].pod = Some(
            PodIdentity {
                pod_uid: UID.into(),
                qos: Qos::Burstable,
                namespace: Some("shop".into()),
                pod: Some("cart-0".into()),
                container: Some("app".into()),
                container_id: Some(CID.into()),
            }
            .into(),
        );
        let f = evaluate_at(20, Some(k), &[]);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].id, f[0].subject.as_str()),
            ("oom_kills", "shop/cart-0")
        );
        assert!(
            f[0].summary
                .starts_with("container app of pod shop/cart-0 hit its memory limit"),
            "{}",
            f[0].summary
        );
        assert_eq!(f[0].evidence["memory_cgroup"], format!("{cg}/{CID}"));
        assert_eq!(f[0].evidence["container"], "app");
        assert_eq!(f[0].evidence["pid"], 4242);
        assert_eq!(f[0].evidence["kernel_log"], serde_json::json!([line2]));
    }

    #[test]
    fn oom_kills_without_a_pod_use_the_cgroup_and_without_a_log_the_counter() {
        let k = log(&[
            (10, "oom-kill:constraint=CONSTRAINT_MEMCG,task_memcg=/system.slice/x.service,task=x,pid=7,uid=0"),
            (10, "Memory cgroup out of memory: Killed process 7 (x) total-vm:1kB"),
        ]);
        let f = evaluate_at(20, Some(k), &[]);
        assert_eq!(f[0].subject, "/system.slice/x.service");

        let store = crate::diagnose::pressure::tests::store_with({
            let mut a = crate::diagnose::pressure::tests::healthy();
            a.oom_kills = Some(3);
            let mut b = a.clone();
            b.oom_kills = Some(5);
            vec![a, b]
        });
        let f = evaluate_log_families(&store);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].id, f[0].subject.as_str()), ("oom_kills", "host"));
        assert_eq!(f[0].evidence["oom_kills_in_window"], 2);
    }
}
