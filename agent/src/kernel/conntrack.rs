//! Conntrack table size (`/proc/sys/net/netfilter`) and the per-CPU statistics file
//! `/proc/net/stat/nf_conntrack`, whose columns differ between kernels.

use super::{read_string, read_u64, read_u64_if_present, ReadError};
use crate::host::HostRoot;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConntrackTable {
    pub entries: u64,
    pub max: u64,
    pub buckets: Option<u64>,
}

/// Per-CPU statistics summed over CPUs. A field is `None` when this kernel does not
/// report it (e.g. `clash_resolve` before 5.10, `chaintoolong` before 5.15).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConntrackStats {
    pub found: Option<u64>,
    pub invalid: Option<u64>,
    pub insert: Option<u64>,
    pub insert_failed: Option<u64>,
    pub drop: Option<u64>,
    pub early_drop: Option<u64>,
    pub error: Option<u64>,
    pub search_restart: Option<u64>,
    pub clash_resolve: Option<u64>,
    pub chaintoolong: Option<u64>,
}

impl ConntrackStats {
    /// (name, value) of every statistic, in a stable order, for metrics and reports.
    pub fn fields(&self) -> [(&'static str, Option<u64>); 10] {
        [
            ("found", self.found),
            ("invalid", self.invalid),
            ("insert", self.insert),
            ("insert_failed", self.insert_failed),
            ("drop", self.drop),
            ("early_drop", self.early_drop),
            ("error", self.error),
            ("search_restart", self.search_restart),
            ("clash_resolve", self.clash_resolve),
            ("chaintoolong", self.chaintoolong),
        ]
    }

    pub fn field_mut(&mut self, name: &str) -> Option<&mut Option<u64>> {
        Some(match name {
            "found" => &mut self.found,
            "invalid" => &mut self.invalid,
            "insert" => &mut self.insert,
            "insert_failed" => &mut self.insert_failed,
            "drop" => &mut self.drop,
            "early_drop" => &mut self.early_drop,
            "error" => &mut self.error,
            "search_restart" => &mut self.search_restart,
            "clash_resolve" => &mut self.clash_resolve,
            "chaintoolong" => &mut self.chaintoolong,
            _ => return None,
        })
    }

    /// Adds one CPU's value of a statistic.
    pub fn add(&mut self, name: &str, value: u64) {
        if let Some(slot) = self.field_mut(name) {
            *slot = Some(slot.unwrap_or(0).saturating_add(value));
        }
    }
}

/// Reads the table size (`buckets` apart, see `read_buckets`). `Err` with a not-found
/// error means conntrack is not loaded.
pub fn read_table(root: &HostRoot) -> Result<ConntrackTable, ReadError> {
    let dir = |name: &str| root.proc(&["sys", "net", "netfilter", name]);
    Ok(ConntrackTable {
        entries: read_u64(&dir("nf_conntrack_count"))?,
        max: read_u64(&dir("nf_conntrack_max"))?,
        buckets: None,
    })
}

/// The hash table's size, which old kernels do not show: None then.
pub fn read_buckets(root: &HostRoot) -> Result<Option<u64>, ReadError> {
    read_u64_if_present(&root.proc(&["sys", "net", "netfilter", "nf_conntrack_buckets"]))
}

pub fn read_proc_stats(root: &HostRoot) -> Result<ConntrackStats, ReadError> {
    let path = root.proc(&["net", "stat", "nf_conntrack"]);
    let text = read_string(&path)?;
    parse_proc_stats(&text).map_err(|msg| ReadError {
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, msg),
    })
}

/// Maps a column of `/proc/net/stat/nf_conntrack` to our statistic name. Columns the
/// kernel keeps only for compatibility (always 0) and `entries`, which is the global
/// count repeated on every CPU row and must never be summed, map to nothing.
fn column_name(header: &str) -> Option<&'static str> {
    Some(match header {
        "found" => "found",
        "invalid" => "invalid",
        "insert" => "insert",
        "insert_failed" => "insert_failed",
        "drop" => "drop",
        "early_drop" => "early_drop",
        "icmp_error" => "error",
        "search_restart" => "search_restart",
        "clashres" => "clash_resolve",
        "chainlength" => "chaintoolong",
        _ => return None,
    })
}

/// Parses the file by its header names: one header line, then one row of hex
/// values per CPU.
pub fn parse_proc_stats(text: &str) -> Result<ConntrackStats, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty file")?
        .split_whitespace()
        .collect();
    if !header.contains(&"entries") {
        return Err(format!("unexpected header: {}", header.join(" ")));
    }
    let mut stats = ConntrackStats::default();
    for name in header.iter().filter_map(|h| column_name(h)) {
        // A column the kernel has is reported even when every CPU says 0.
        stats.add(name, 0);
    }
    for (row, line) in lines.enumerate() {
        let values: Vec<&str> = line.split_whitespace().collect();
        if values.len() != header.len() {
            return Err(format!(
                "cpu row {row} has {} columns, header has {}",
                values.len(),
                header.len()
            ));
        }
        for (h, v) in header.iter().zip(values) {
            let Some(name) = column_name(h) else { continue };
            let value = u64::from_str_radix(v, 16)
                .map_err(|e| format!("cpu row {row}, column {h}: {v:?}: {e}"))?;
            stats.add(name, value);
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Kernel 6.x: clashres and chainlength replaced searched and delete_list.
    const KERNEL_6: &str = "\
entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
000000a0  00000002 00000010 00000000 00000003 00000000 00000000 00000001 00000000 00000004 00000005 00000001 00000002  00000000 00000000 00000000 00000007
000000a0  00000001 00000020 00000000 00000001 00000000 00000000 00000000 00000000 00000001 00000000 00000000 00000001  00000000 00000000 00000000 00000001
";

    // Kernel 4.x: 17 columns with searched and delete_list.
    const KERNEL_4: &str = "\
entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000010  00000000 0000000a 00000000 00000001 00000000 00000000 00000000 00000000 00000002 00000000 00000000 00000000  00000000 00000000 00000000 00000003
";

    // Kernel 3.x: 16 columns, no search_restart.
    const KERNEL_3: &str = "\
entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete
00000010  00000001 0000000a 00000005 00000001 00000000 00000004 00000004 00000005 00000000 00000009 00000000 00000000  00000000 00000000 00000000
";

    #[test]
    fn kernel_6_columns_are_summed_by_name_and_entries_is_not() {
        let s = parse_proc_stats(KERNEL_6).unwrap();
        assert_eq!(s.found, Some(0x30));
        assert_eq!(s.invalid, Some(4));
        assert_eq!(s.insert_failed, Some(5));
        assert_eq!(s.drop, Some(5));
        assert_eq!(s.early_drop, Some(1));
        assert_eq!(s.error, Some(3));
        assert_eq!(s.search_restart, Some(8));
        assert_eq!(s.clash_resolve, Some(3));
        assert_eq!(s.chaintoolong, Some(1));
        assert_eq!(s.insert, Some(0));
    }

    #[test]
    fn kernel_4_has_no_clash_resolve() {
        let s = parse_proc_stats(KERNEL_4).unwrap();
        assert_eq!(s.found, Some(10));
        assert_eq!(s.insert_failed, Some(2));
        assert_eq!(s.search_restart, Some(3));
        assert_eq!(s.clash_resolve, None);
        assert_eq!(s.chaintoolong, None);
    }

    #[test]
    fn kernel_3_has_sixteen_columns_and_no_search_restart() {
        let s = parse_proc_stats(KERNEL_3).unwrap();
        assert_eq!(s.drop, Some(9));
        assert_eq!(s.insert, Some(5));
        assert_eq!(s.search_restart, None);
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        assert!(parse_proc_stats("").is_err());
        assert!(parse_proc_stats("garbage header\n1 2\n").is_err());
        let short_row = "entries found drop\n00000001 00000002\n";
        assert!(parse_proc_stats(short_row).unwrap_err().contains("columns"));
        let bad_hex = "entries found drop\n00000001 zz 00000002\n";
        assert!(parse_proc_stats(bad_hex).unwrap_err().contains("found"));
    }
}
