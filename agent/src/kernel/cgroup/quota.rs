//! The CPU limit of one cgroup: v2 `cpu.max`, v1 `cpu.cfs_quota_us` with
//! `cpu.cfs_period_us`.

/// The CPU bandwidth limit of a cgroup: `quota_us` of CPU time per `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

impl CpuQuota {
    /// The limit in CPU cores (a Kubernetes `limits.cpu` of 500m is 0.5).
    pub fn cores(&self) -> f64 {
        if self.period_us == 0 {
            return 0.0;
        }
        self.quota_us as f64 / self.period_us as f64
    }
}

/// v2 `cpu.max`: `$MAX $PERIOD`, `max` meaning no limit. The period may be omitted
/// (it then stays at the kernel default of 100000 us).
pub fn parse_cpu_max(text: &str) -> Result<Option<CpuQuota>, String> {
    let mut it = text.split_whitespace();
    let max = it.next().ok_or("empty cpu.max")?;
    let period_us = match it.next() {
        Some(p) => p
            .parse()
            .map_err(|e| format!("period {p:?} is not a number: {e}"))?,
        None => 100_000,
    };
    if max == "max" {
        return Ok(None);
    }
    let quota_us = max
        .parse()
        .map_err(|e| format!("quota {max:?} is neither max nor a number: {e}"))?;
    Ok(Some(CpuQuota {
        quota_us,
        period_us,
    }))
}

/// v1 `cpu.cfs_quota_us` (-1 means no limit) with `cpu.cfs_period_us`.
pub fn parse_v1_quota(quota: &str, period: &str) -> Result<Option<CpuQuota>, String> {
    let q: i64 = quota
        .trim()
        .parse()
        .map_err(|e| format!("cfs_quota_us {:?}: {e}", quota.trim()))?;
    let period_us: u64 = period
        .trim()
        .parse()
        .map_err(|e| format!("cfs_period_us {:?}: {e}", period.trim()))?;
    Ok((q >= 0).then_some(CpuQuota {
        quota_us: q as u64,
        period_us,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_forms() {
        assert_eq!(parse_cpu_max("max 100000\n").unwrap(), None);
        assert_eq!(parse_cpu_max("max").unwrap(), None);
        assert_eq!(
            parse_cpu_max("50000 100000\n").unwrap(),
            Some(CpuQuota {
                quota_us: 50_000,
                period_us: 100_000
            })
        );
        assert_eq!(parse_cpu_max("25000").unwrap().unwrap().period_us, 100_000);
        assert!(parse_cpu_max("").is_err());
        assert!(parse_cpu_max("lots 100000").is_err());
        assert!(parse_cpu_max("max often").is_err());
    }

    #[test]
    fn v1_quota_minus_one_is_unlimited() {
        assert_eq!(parse_v1_quota("-1\n", "100000\n").unwrap(), None);
        let q = parse_v1_quota("10000\n", "100000\n").unwrap().unwrap();
        assert_eq!(q.cores(), 0.1);
        assert!(parse_v1_quota("x", "100000").is_err());
        assert!(parse_v1_quota("10000", "").is_err());
        assert_eq!(
            CpuQuota {
                quota_us: 1,
                period_us: 0
            }
            .cores(),
            0.0
        );
    }
}
