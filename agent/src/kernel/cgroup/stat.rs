//! `cpu.stat`, the bandwidth and usage counters of one cgroup, v1 and v2.

/// Bandwidth counters of one cgroup, in the same units for v1 and v2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CpuStat {
    /// Enforcement periods that had runnable tasks; 0 without a quota.
    pub nr_periods: u64,
    /// Periods in which the cgroup ran out of quota.
    pub nr_throttled: u64,
    /// Total time its tasks waited throttled, nanoseconds (v1 `throttled_time`,
    /// v2 `throttled_usec` * 1000).
    pub throttled_ns: u64,
    /// CPU time used, nanoseconds: v2 `usage_usec` here, v1 from `cpuacct.usage`.
    pub usage_ns: Option<u64>,
}

/// Parses `cpu.stat` of either version by key: v1 has `nr_periods nr_throttled
/// throttled_time` (ns; newer kernels add `nr_bursts burst_time`), v2 has
/// `usage_usec user_usec system_usec` and, with the cpu controller enabled,
/// `nr_periods nr_throttled throttled_usec` (6.x adds `nr_bursts burst_usec` and
/// `core_sched.force_idle_usec`). Keys nodediag does not use are ignored; missing
/// bandwidth keys read as 0 (no quota was ever enforced).
pub fn parse_cpu_stat(text: &str) -> Result<CpuStat, String> {
    let mut s = CpuStat::default();
    // ASCII whitespace only, as the kernel writes it: a thousand of these a round,
    // and the Unicode-aware split decodes every character.
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (it.next(), it.next()) else {
            continue;
        };
        let slot: &mut dyn FnMut(u64) = match key {
            "nr_periods" => &mut |v| s.nr_periods = v,
            "nr_throttled" => &mut |v| s.nr_throttled = v,
            "throttled_time" => &mut |v| s.throttled_ns = v,
            "throttled_usec" => &mut |v| s.throttled_ns = v.saturating_mul(1000),
            "usage_usec" => &mut |v| s.usage_ns = Some(v.saturating_mul(1000)),
            _ => continue,
        };
        let v: u64 = value
            .parse()
            .map_err(|e| format!("{key} {value:?} is not a counter: {e}"))?;
        slot(v);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_cpu_stat_old_and_new_kernels() {
        // 4.x: three keys.
        let old =
            parse_cpu_stat("nr_periods 4242\nnr_throttled 1200\nthrottled_time 98765432100\n")
                .unwrap();
        assert_eq!(
            old,
            CpuStat {
                nr_periods: 4242,
                nr_throttled: 1200,
                throttled_ns: 98_765_432_100,
                usage_ns: None
            }
        );
        // 5.14+ adds burst accounting.
        let new = parse_cpu_stat(
            "nr_periods 10\nnr_throttled 9\nthrottled_time 812000000\nnr_bursts 0\nburst_time 0\n",
        )
        .unwrap();
        assert_eq!(new.nr_throttled, 9);
        assert_eq!(new.throttled_ns, 812_000_000);
    }

    #[test]
    fn v2_cpu_stat_with_and_without_the_cpu_controller() {
        let full = "usage_usec 8123456\nuser_usec 6000000\nsystem_usec 2123456\n\
core_sched.force_idle_usec 0\nnr_periods 300\nnr_throttled 75\nthrottled_usec 4500000\n\
nr_bursts 0\nburst_usec 0\n";
        assert_eq!(
            parse_cpu_stat(full).unwrap(),
            CpuStat {
                nr_periods: 300,
                nr_throttled: 75,
                throttled_ns: 4_500_000_000,
                usage_ns: Some(8_123_456_000)
            }
        );
        let bare = parse_cpu_stat(
            "usage_usec 627898688\nuser_usec 466051967\nsystem_usec 161846720\nnice_usec 0\n",
        )
        .unwrap();
        assert_eq!(bare.nr_periods, 0);
        assert_eq!(bare.usage_ns, Some(627_898_688_000));
    }

    #[test]
    fn malformed_counters_are_errors_not_panics() {
        let err = parse_cpu_stat("nr_periods lots\n").unwrap_err();
        assert!(err.contains("nr_periods"), "{err}");
        assert!(parse_cpu_stat("nr_throttled -1\n").is_err());
        assert_eq!(parse_cpu_stat("lonely\n").unwrap(), CpuStat::default());
    }
}
