//! The report's kernel log section: the latest matching lines.

use crate::collect::kmsg::LogSource;
use crate::collect::KmsgSample;
use crate::store::Snapshot;
use crate::time::rfc3339;
use std::fmt::Write;
use std::time::SystemTime;

/// The collector line of the report.
pub fn summary(s: &KmsgSample) -> String {
    let totals: Vec<String> = s
        .totals
        .iter()
        .map(|(k, v)| format!("{} {v}", k.as_str()))
        .collect();
    format!(
        "following {} ({} records read); matched since start: {}",
        match s.source {
            LogSource::Kmsg => s.path.clone().unwrap_or_else(|| "/dev/kmsg".into()),
            LogSource::Syslog => "syslog(2)".into(),
        },
        s.records_read,
        totals.join(", ")
    )
}

/// Matching kernel log lines shown in the report.
const REPORT_LOG_LINES: usize = 10;

pub fn section(out: &mut String, snap: &Snapshot, _now: SystemTime) {
    let Some((_, s)) = snap.latest::<KmsgSample>() else {
        return;
    };
    let _ = writeln!(
        out,
        "\nkernel log (latest of {} matching lines):",
        s.events.len()
    );
    if s.events.is_empty() {
        out.push_str("  nothing matched since nodediag started\n");
    }
    for e in s.events.iter().rev().take(REPORT_LOG_LINES).rev() {
        let _ = writeln!(
            out,
            "  {}  {:<23}  {}",
            rfc3339(e.seen_at),
            e.event.kind().as_str(),
            e.line
        );
    }
}
