//! `/proc/net/softnet_stat`: per-CPU counters of the network receive path. Its second
//! column counts packets dropped because a CPU's input backlog (`netdev_max_backlog`)
//! was full: losses that look exactly like a conntrack race from a pod's side (a UDP
//! query that never gets its reply) but happen before conntrack sees the packet.
//!
//! One line per online CPU, hexadecimal columns: processed, dropped, time_squeeze,
//! then columns whose number grew over kernel versions. The file is global, not per
//! network namespace.

use super::{read_string, ReadError};
use crate::host::HostRoot;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SoftnetStat {
    /// CPU lines read.
    pub cpus: u32,
    /// Packets handled, summed over CPUs (wraps at 2^32 per CPU on every kernel).
    pub processed: u64,
    /// Packets dropped at a full input backlog, summed over CPUs.
    pub dropped: u64,
    /// NAPI polls that ran out of budget or time with work left.
    pub time_squeeze: u64,
}

pub fn parse(text: &str) -> Result<SoftnetStat, String> {
    let mut s = SoftnetStat {
        cpus: 0,
        processed: 0,
        dropped: 0,
        time_squeeze: 0,
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace().map(|f| {
            u64::from_str_radix(f, 16).map_err(|_| {
                format!(
                    "line {}: {} is not a hexadecimal counter",
                    i + 1,
                    crate::text::quote(f)
                )
            })
        });
        let mut next = || {
            fields
                .next()
                .unwrap_or_else(|| Err(format!("line {}: fewer than 3 columns", i + 1)))
        };
        s.processed += next()?;
        s.dropped += next()?;
        s.time_squeeze += next()?;
        s.cpus += 1;
    }
    if s.cpus == 0 {
        return Err("no CPU lines".into());
    }
    Ok(s)
}

pub fn read(root: &HostRoot) -> Result<SoftnetStat, ReadError> {
    let path = root.proc(&["net", "softnet_stat"]);
    parse(&read_string(&path)?).map_err(|e| ReadError::invalid(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_summed_over_cpus_in_hex() {
        // Kernel 6.x: 13 columns, the last two the backlog length and the CPU index.
        let text = "0000a0b1 00000002 0000000f 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n\
                    00000010 0000001e 00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001\n";
        let s = parse(text).unwrap();
        assert_eq!(s.cpus, 2);
        assert_eq!(s.processed, 0xa0b1 + 0x10);
        assert_eq!(s.dropped, 2 + 30);
        assert_eq!(s.time_squeeze, 16);
        // Kernels before 2.6.36 and 4.x have fewer trailing columns; three suffice.
        assert_eq!(parse("00000001 00000002 00000003\n").unwrap().dropped, 2);
    }

    #[test]
    fn malformed_files_say_which_line() {
        assert!(parse("").unwrap_err().contains("no CPU lines"));
        assert!(parse("00000001 zz 00000003\n")
            .unwrap_err()
            .contains("line 1: \"zz\""));
        assert!(parse("00000001 00000002\n")
            .unwrap_err()
            .contains("fewer than 3"));
    }

    #[test]
    fn this_host_has_one() {
        let s = read(&HostRoot::default()).unwrap();
        assert!(s.cpus >= 1);
        let e = read(&HostRoot {
            proc: "/nonexistent-nodediag".into(),
            ..HostRoot::default()
        })
        .unwrap_err();
        assert_eq!(
            e.path,
            std::path::Path::new("/nonexistent-nodediag/net/softnet_stat")
        );
    }
}
