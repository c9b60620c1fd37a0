//! The report's kernel log section: the latest matching lines.

use crate::collect::KmsgSample;
use crate::store::Snapshot;
use crate::time::rfc3339;
use std::fmt::Write;

/// Matching kernel log lines shown in the report.
const REPORT_LOG_LINES: usize = 10;

pub(super) fn write_kernel_log(out: &mut String, snap: &Snapshot) {
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
