//! Log records as the kernel frames them: `/dev/kmsg` (`prio,seq,usec,flags;message`,
//! one record per line) and the syslog(2) buffer (`<prio>[secs.usecs] message`).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Severity 0 (emerg) .. 7 (debug).
    pub level: u8,
    /// Sequence number; only `/dev/kmsg` has one.
    pub seq: Option<u64>,
    /// Microseconds since boot, when the record has a timestamp.
    pub monotonic_us: Option<u64>,
    pub message: String,
}

/// One `/dev/kmsg` record line. Continuation lines (` KEY=value`, the device
/// dictionary) and anything malformed are None.
pub fn parse_kmsg_record(line: &str) -> Option<LogRecord> {
    let (prefix, message) = line.split_once(';')?;
    let mut fields = prefix.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    let seq: u64 = fields.next()?.parse().ok()?;
    let usec: u64 = fields.next()?.parse().ok()?;
    Some(LogRecord {
        level: (prio & 7) as u8,
        seq: Some(seq),
        monotonic_us: Some(usec),
        message: unescape(message),
    })
}

/// `/dev/kmsg` escapes non-printable bytes as `\xNN`.
fn unescape(s: &str) -> String {
    if !s.contains("\\x") {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1] == b'x' {
            let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a byte stream into `/dev/kmsg` records (one per line; continuation lines
/// of the device dictionary start with a space and are skipped by the parser).
#[derive(Debug, Default)]
pub struct RecordSplitter {
    partial: Vec<u8>,
}

impl RecordSplitter {
    /// A record is at most ~8 KiB; a longer run without a newline is not kmsg.
    const MAX_PARTIAL: usize = 64 * 1024;

    pub fn push(&mut self, bytes: &[u8], mut each: impl FnMut(LogRecord)) {
        self.partial.extend_from_slice(bytes);
        while let Some(nl) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]);
            if let Some(r) = parse_kmsg_record(&line) {
                each(r);
            }
        }
        if self.partial.len() > Self::MAX_PARTIAL {
            self.partial.clear();
        }
    }
}

/// One line of the syslog(2) buffer: `<4>[  859.792241] message`; the timestamp is
/// missing when `printk.time` is off.
pub fn parse_syslog_line(line: &str) -> Option<LogRecord> {
    let rest = line.strip_prefix('<')?;
    let (prio, rest) = rest.split_once('>')?;
    let prio: u32 = prio.parse().ok()?;
    let (monotonic_us, message) = match rest.strip_prefix('[') {
        Some(r) => {
            let (ts, msg) = r.split_once(']')?;
            let (secs, frac) = ts.trim().split_once('.')?;
            let secs: u64 = secs.parse().ok()?;
            let usecs: u64 = frac.get(..6)?.parse().ok()?;
            (
                Some(secs * 1_000_000 + usecs),
                msg.strip_prefix(' ').unwrap_or(msg),
            )
        }
        None => (None, rest),
    };
    Some(LogRecord {
        level: (prio & 7) as u8,
        seq: None,
        monotonic_us,
        message: message.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_records_and_continuations() {
        let r = parse_kmsg_record(
            "4,359,859792241,-;nf_conntrack: nf_conntrack: table full in netns 4026532177, dropping packet",
        )
        .unwrap();
        assert_eq!(r.level, 4);
        assert_eq!(r.seq, Some(359));
        assert_eq!(r.monotonic_us, Some(859792241));
        assert!(r.message.starts_with("nf_conntrack:"));
        // facility 3 (daemon) * 8 + level 6
        assert_eq!(
            parse_kmsg_record("30,1,2,-;systemd[1]: hi").unwrap().level,
            6
        );
        assert_eq!(parse_kmsg_record(" SUBSYSTEM=net"), None);
        assert_eq!(parse_kmsg_record(" DEVICE=+net:eth0"), None);
        assert_eq!(parse_kmsg_record("x,1,2,-;msg"), None);
        assert_eq!(
            parse_kmsg_record("6,2,3,-;a\\x0ab").unwrap().message,
            "a\nb"
        );
        assert_eq!(
            parse_kmsg_record("6,2,3,-;end\\x").unwrap().message,
            "end\\x"
        );
    }

    #[test]
    fn records_split_across_reads_are_reassembled() {
        let mut s = RecordSplitter::default();
        let mut got = Vec::new();
        s.push(b"4,1,10,-;unregister_netdevice: waiting for lo", |r| {
            got.push(r)
        });
        assert!(got.is_empty());
        s.push(
            b" to become free. Usage count = 2\n SUBSYSTEM=net\n6,2,11,-;hello\n",
            |r| got.push(r),
        );
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].message,
            "unregister_netdevice: waiting for lo to become free. Usage count = 2"
        );
        assert_eq!(got[1].seq, Some(2));
    }

    #[test]
    fn a_stream_that_is_not_kmsg_is_dropped_not_hoarded() {
        let mut s = RecordSplitter::default();
        let mut got = Vec::new();
        s.push(&[b'x'; RecordSplitter::MAX_PARTIAL + 1], |r| got.push(r));
        assert!(s.partial.is_empty(), "the endless line was dropped");
        s.push(b"garbage\n\xff\xfe;\n6,3,12,-;after\n", |r| got.push(r));
        let messages: Vec<_> = got.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(messages, ["after"], "malformed lines are skipped");
    }

    #[test]
    fn syslog_lines_with_and_without_time() {
        let r = parse_syslog_line("<4>[  859.792241] nf_conntrack: table full, dropping packet")
            .unwrap();
        assert_eq!(r.level, 4);
        assert_eq!(r.monotonic_us, Some(859_792_241));
        assert_eq!(r.message, "nf_conntrack: table full, dropping packet");
        let r = parse_syslog_line("<3>Out of memory: Killed process 1 (x)").unwrap();
        assert_eq!(r.monotonic_us, None);
        assert_eq!(parse_syslog_line("no prefix"), None);
        assert_eq!(parse_syslog_line("<x>[ 1.000000] bad prio"), None);
        assert_eq!(parse_syslog_line("<4>[ 1.00] short fraction"), None);
        assert_eq!(parse_syslog_line("<4>[ 1.000000 unclosed"), None);
    }
}
