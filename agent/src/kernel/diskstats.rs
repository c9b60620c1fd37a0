//! Block device I/O counters from `/proc/diskstats`
//! (Documentation/admin-guide/iostats.rst).
//!
//! The number of fields grew with the kernel: 11 after the name until 4.18, 15 with
//! the discard fields (4.18), 17 with the flush fields (5.5). Older kernels printed
//! only 4 fields for partitions; such lines carry no latency and are skipped.

use super::{read_string, ReadError};
use crate::host::HostRoot;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiskStats {
    pub reads_completed: u64,
    pub read_time_ms: u64,
    pub writes_completed: u64,
    pub sectors_written: u64,
    pub write_time_ms: u64,
    pub in_progress: u64,
    /// Milliseconds the device had I/O in flight: utilisation over an interval.
    pub io_time_ms: u64,
    /// Flush requests completed and the time spent on them; kernel 5.5+.
    pub flushes_completed: Option<u64>,
    pub flush_time_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskLine {
    pub major: u32,
    pub minor: u32,
    pub name: String,
    pub stats: DiskStats,
}

pub fn path(root: &HostRoot) -> PathBuf {
    root.proc(&["diskstats"])
}

/// What `/proc/diskstats` held: the lines that parsed, and what was wrong with those
/// that did not (at most a few), so one bad line costs that device only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskStatsFile {
    pub lines: Vec<DiskLine>,
    pub bad_lines: Vec<String>,
    pub bad_count: usize,
}

/// Bad lines described in full; past these only their number is kept.
const BAD_LINES_KEPT: usize = 3;

/// Reads and parses `/proc/diskstats`.
pub fn read(root: &HostRoot) -> Result<DiskStatsFile, ReadError> {
    Ok(parse(&read_string(&path(root))?))
}

/// Parses the whole file. A line that is not numbers where numbers belong is
/// described (numbered, its text quoted short) and skipped; short partition lines of
/// old kernels are skipped silently.
pub fn parse(text: &str) -> DiskStatsFile {
    let mut out = DiskStatsFile::default();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(l)) => out.lines.push(l),
            Ok(None) => {}
            Err(what) => {
                out.bad_count += 1;
                if out.bad_lines.len() < BAD_LINES_KEPT {
                    out.bad_lines.push(format!(
                        "line {}: {what}: {}",
                        i + 1,
                        crate::text::quote(line)
                    ));
                }
            }
        }
    }
    out
}

fn parse_line(line: &str) -> Result<Option<DiskLine>, &'static str> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    if cols.is_empty() {
        return Ok(None);
    }
    if cols.len() < 3 {
        return Err("expected major, minor and a device name");
    }
    let major = cols[0].parse().map_err(|_| "major is not a number")?;
    let minor = cols[1].parse().map_err(|_| "minor is not a number")?;
    let fields: Vec<u64> = cols[3..]
        .iter()
        .map(|c| c.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| "a counter is not a number")?;
    if fields.len() < 11 {
        return Ok(None);
    }
    let flush = fields.len() >= 17;
    Ok(Some(DiskLine {
        major,
        minor,
        name: cols[2].to_string(),
        stats: DiskStats {
            reads_completed: fields[0],
            read_time_ms: fields[3],
            writes_completed: fields[4],
            sectors_written: fields[6],
            write_time_ms: fields[7],
            in_progress: fields[8],
            io_time_ms: fields[9],
            flushes_completed: flush.then(|| fields[15]),
            flush_time_ms: flush.then(|| fields[16]),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Kernel 6.x: 17 fields after the name.
    const WITH_FLUSH: &str = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 254       0 vda 65911 9325 6838850 72261 9980 61515 18818080 90060 0 14716 163809 6944 31 241776 1468 462 19
";
    // Kernel 4.19: discard fields, no flush fields.
    const WITH_DISCARD: &str =
        "   8       0 sda 1200 30 90000 800 5000 700 120000 6000 2 7000 6800 0 0 0 0\n";
    // Kernel 4.14: 11 fields; a 2.6-era short partition line.
    const OLD: &str = "   8       0 sda 1200 30 90000 800 5000 700 120000 6000 0 7000 6800
   8       1 sda1 1100 88000 4900 118000
";

    #[test]
    fn flush_fields_are_read_from_kernel_5_5() {
        let lines = parse(WITH_FLUSH).lines;
        assert_eq!(lines.len(), 2);
        let vda = &lines[1];
        assert_eq!((vda.major, vda.minor, vda.name.as_str()), (254, 0, "vda"));
        assert_eq!(vda.stats.writes_completed, 9980);
        assert_eq!(vda.stats.write_time_ms, 90060);
        assert_eq!(vda.stats.io_time_ms, 14716);
        assert_eq!(vda.stats.flushes_completed, Some(462));
        assert_eq!(vda.stats.flush_time_ms, Some(19));
    }

    #[test]
    fn older_formats_have_no_flush_fields() {
        let sda = &parse(WITH_DISCARD).lines[0];
        assert_eq!(sda.stats.writes_completed, 5000);
        assert_eq!(sda.stats.in_progress, 2);
        assert_eq!(sda.stats.flushes_completed, None);
        let old = parse(OLD).lines;
        assert_eq!(old.len(), 1, "the 4-field partition line is skipped");
        assert_eq!(old[0].stats.io_time_ms, 7000);
        assert_eq!(old[0].stats.flush_time_ms, None);
    }

    #[test]
    fn a_bad_line_costs_that_line_only_and_is_named() {
        let text = format!("8 0 sda 1 2 x 4 5 6 7 8 9 10 11\n8\n{WITH_DISCARD}");
        let f = parse(&text);
        assert_eq!(f.lines.len(), 1, "sda of the good line is kept");
        assert_eq!(f.bad_count, 2);
        assert!(
            f.bad_lines[0].starts_with("line 1: a counter is not a number"),
            "{f:?}"
        );
        assert!(
            f.bad_lines[1].starts_with("line 2: expected major"),
            "{f:?}"
        );
        let long = format!("8 0 sda {}\n", "9x".repeat(100_000));
        assert!(parse(&long).bad_lines[0].len() < 200, "quoted short");
        assert_eq!(parse("\n\n"), DiskStatsFile::default());
    }

    #[test]
    fn read_errors_name_the_file() {
        let t = tempfile::tempdir().unwrap();
        let root = HostRoot {
            proc: t.path().to_path_buf(),
            ..HostRoot::default()
        };
        assert!(read(&root).unwrap_err().is_not_found());
        std::fs::write(
            t.path().join("diskstats"),
            "8 0 sda x 1 2 3 4 5 6 7 8 9 10\n",
        )
        .unwrap();
        let f = read(&root).unwrap();
        assert!(f.lines.is_empty());
        assert!(f.bad_lines[0].contains("line 1"), "{f:?}");
        std::fs::write(t.path().join("diskstats"), OLD).unwrap();
        assert_eq!(read(&root).unwrap().lines.len(), 1);
    }
}
