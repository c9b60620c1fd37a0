//! The kernel log follower's counts.

use super::family::Families;
use crate::collect::KmsgSample;
use crate::kernel::kmsg::EventKind;
use crate::store::Snapshot;
use prometheus_client::encoding::DescriptorEncoder;
use std::fmt;

pub fn encode(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
    match snap.latest::<KmsgSample>() {
        Some((_, s)) => encode_kmsg(s, e),
        None => Ok(()),
    }
}

fn encode_kmsg(s: &KmsgSample, e: &mut DescriptorEncoder) -> fmt::Result {
    e.counter(
        "nodediag_kernel_log_events_total",
        "Kernel log (/dev/kmsg) lines nodediag matched since it started, by event.",
        EventKind::ALL.iter().map(|kind| {
            let v = s.totals.get(kind).copied().unwrap_or(0);
            ([("event", kind.as_str())], v)
        }),
    )?;
    e.counter_value(
        "nodediag_kernel_log_records_total",
        "Kernel log records nodediag read since it started.",
        s.records_read,
    )
}
