//! oom_kills: the `oom_kill` counter of /proc/vmstat rising, and the victims the
//! kernel log names, grouped by pod (or memory cgroup) so the finding says whose
//! limit to raise.

use super::window::{increase, span, within};
use super::{Finding, FindingDef, RuleContext, Severity};
use crate::collect::kmsg::LoggedEvent;
use crate::collect::{KmsgSample, PressureSample};
use crate::kernel::kmsg::{EventKind, KernelEvent, OomKill};
use crate::store::Snapshot;
use std::collections::BTreeMap;
use std::time::SystemTime;

pub const OOM_KILLS: FindingDef = FindingDef {
    id: "oom_kills",
    remedy: "Raise the memory limit of the killed container or fix its memory use; a node-wide kill (constraint CONSTRAINT_NONE) means the node is overcommitted: compare memory requests with allocatable, set kube-reserved.",
};

pub fn rules(snapshot: &Snapshot, ctx: &RuleContext, out: &mut Vec<Finding>) {
    let history = snapshot.history::<PressureSample>();
    let recent = within(&history, ctx.window);
    let counted = increase(recent.iter().filter_map(|(_, s)| s.oom_kills));
    let seconds = span(recent).as_secs();

    let mut victims: BTreeMap<String, Vec<(&LoggedEvent, &OomKill)>> = BTreeMap::new();
    let mut log_at = None;
    if let Some((at, log)) = snapshot.latest::<KmsgSample>() {
        log_at = Some(at);
        for e in log.of_kind(EventKind::OomKill) {
            if !in_window(e.seen_at, at, ctx) {
                continue;
            }
            if let KernelEvent::OomKill(k) = &e.event {
                victims.entry(subject(e, k)).or_default().push((e, k));
            }
        }
    }
    let at = [recent.last().map(|(t, _)| *t), log_at]
        .into_iter()
        .flatten()
        .max();
    let Some(at) = at else { return };

    if victims.is_empty() {
        if counted > 0 {
            out.push(
                Finding::new(
                    &OOM_KILLS,
                    Severity::Warning,
                    "host",
                    format!(
                        "the kernel OOM-killed {counted} processes in the last {seconds}s ({})",
                        if log_at.is_some() {
                            "the kernel log has not named the victims"
                        } else {
                            "victims unknown: the kernel log is not followed"
                        }
                    ),
                    at,
                )
                .with("oom_kills_in_window", counted)
                .with("window_seconds", seconds),
            );
        }
        return;
    }
    for (subject, kills) in victims {
        let (last_event, last) = kills[kills.len() - 1];
        let pod = last_event.pod.as_ref();
        let named =
            pod.and_then(|p| Some(format!("{}/{}", p.namespace.as_ref()?, p.pod.as_ref()?)));
        let who = match (named, pod.and_then(|p| p.container.clone())) {
            (Some(pod), Some(c)) => format!("container {c} of pod {pod}"),
            (Some(pod), None) => format!("pod {pod}"),
            _ => format!("cgroup {subject}"),
        };
        let why = match last.constraint.as_deref() {
            Some("CONSTRAINT_MEMCG") => "hit its memory limit",
            Some("CONSTRAINT_NONE") => "was killed because the node ran out of memory",
            _ => "was OOM-killed",
        };
        let mut f = Finding::new(
            &OOM_KILLS,
            Severity::Warning,
            subject.clone(),
            format!(
                "{who} {why}: {} kill{} in the window, last {} (pid {})",
                kills.len(),
                if kills.len() == 1 { "" } else { "s" },
                last.task,
                last.pid
            ),
            at,
        )
        .with("kills_in_window", kills.len())
        .with("task", last.task.clone())
        .with("pid", last.pid)
        .with(
            "kernel_log",
            kills
                .iter()
                .rev()
                .take(super::KERNEL_LOG_LINES)
                .map(|(e, _)| e.line.clone())
                .collect::<Vec<_>>(),
        );
        if counted > 0 {
            f = f.with("oom_kills_in_window", counted);
        }
        for (key, v) in [
            ("memory_cgroup", last.memory_cgroup.as_deref()),
            ("limit_cgroup", last.limit_cgroup.as_deref()),
            ("constraint", last.constraint.as_deref()),
            ("pod_uid", pod.map(|p| &*p.pod_uid)),
            ("namespace", pod.and_then(|p| p.namespace.as_deref())),
            ("pod", pod.and_then(|p| p.pod.as_deref())),
            ("container", pod.and_then(|p| p.container.as_deref())),
            ("container_id", pod.and_then(|p| p.container_id.as_deref())),
        ] {
            if let Some(v) = v {
                f = f.with(key, v);
            }
        }
        out.push(f);
    }
}

/// namespace/pod when the kubelet's directories name it, else `pod <uid>`, else the
/// memory cgroup, else `host`.
fn subject(e: &LoggedEvent, k: &OomKill) -> String {
    if let Some(p) = &e.pod {
        return p.name();
    }
    k.memory_cgroup.clone().unwrap_or_else(|| "host".into())
}

pub(super) fn in_window(seen: SystemTime, at: SystemTime, ctx: &RuleContext) -> bool {
    at.duration_since(seen)
        .map_or(true, |age| age <= ctx.window)
}
