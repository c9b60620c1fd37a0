//! Neighbour (ARP / NDP) tables: `/proc/net/stat/arp_cache` and `ndisc_cache`.
//! Columns are hexadecimal, one row per CPU; `entries` is the table-wide count
//! repeated on every row, the other columns are per-CPU counters.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NeighStats {
    pub entries: u64,
    /// Times the table was full and forced garbage collection freed nothing
    /// ("neighbour table overflow" in the kernel log). Parsed by name: None when a
    /// kernel does not have the column.
    pub table_fulls: Option<u64>,
}

pub fn parse_neigh_stat(text: &str) -> Result<NeighStats, String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty file")?
        .split_whitespace()
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let entries_col = col("entries").ok_or("no entries column")?;
    let fulls_col = col("table_fulls");
    let mut stats = NeighStats::default();
    let mut rows = 0;
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let values: Vec<&str> = line.split_whitespace().collect();
        if values.len() != header.len() {
            return Err(format!(
                "row {line:?} has {} columns, header {}",
                values.len(),
                header.len()
            ));
        }
        let hex = |i: usize| {
            u64::from_str_radix(values[i], 16).map_err(|e| format!("{:?}: {e}", values[i]))
        };
        stats.entries = hex(entries_col)?;
        if let Some(c) = fulls_col {
            stats.table_fulls = Some(stats.table_fulls.unwrap_or(0).saturating_add(hex(c)?));
        }
        rows += 1;
    }
    if rows == 0 {
        return Err("no per-CPU rows".into());
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "entries  allocs   destroys hash_grows lookups  hits     res_failed rcv_probes_mcast rcv_probes_ucast periodic_gc_runs forced_gc_runs unresolved_discards table_fulls";

    #[test]
    fn entries_are_not_summed_and_table_fulls_are() {
        let text = format!(
            "{HEADER}\n00000402 00000001 00000000 00000000   00000004 00000000 00000000   00000000         00000000         00000036         00000000       00000000            0000000a\n00000402 00000001 00000000 00000000   00000005 00000005 00000000   00000000         00000000         00000000         00000000       00000000            00000001\n"
        );
        let s = parse_neigh_stat(&text).unwrap();
        assert_eq!(s.entries, 0x402);
        assert_eq!(s.table_fulls, Some(11));
    }

    #[test]
    fn columns_are_found_by_name() {
        let s = parse_neigh_stat("table_fulls entries\n00000003 00000010\n").unwrap();
        assert_eq!(s.entries, 16);
        assert_eq!(s.table_fulls, Some(3));
        let old = parse_neigh_stat("entries allocs\n00000010 00000001\n").unwrap();
        assert_eq!(old.table_fulls, None);
    }

    #[test]
    fn malformed_files_are_errors() {
        assert!(parse_neigh_stat("").is_err());
        assert!(parse_neigh_stat("allocs\n1\n").is_err());
        assert!(parse_neigh_stat(&format!("{HEADER}\n")).is_err());
        assert!(parse_neigh_stat("entries allocs\nzz 1\n").is_err());
        assert!(parse_neigh_stat("entries allocs\n1\n").is_err());
    }
}
