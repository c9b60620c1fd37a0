//! Pressure stall information, `/proc/pressure/{cpu,memory,io}` (Linux 4.20+,
//! `CONFIG_PSI`, off with `psi=0`).

use serde::Serialize;

/// One line: the share of wall time some (or all) runnable tasks were stalled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PsiLine {
    /// Fractions 0..1 (the file says percent).
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Cumulative stall time in microseconds.
    pub total_us: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Psi {
    pub some: Option<PsiLine>,
    /// Absent for cpu before 5.13; at the system level it is always 0 for cpu since.
    pub full: Option<PsiLine>,
}

pub fn parse_psi(text: &str) -> Result<Psi, String> {
    let mut psi = Psi::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        let kind = parts.next().unwrap_or_default();
        let mut parsed = PsiLine::default();
        let mut seen = 0;
        for kv in parts {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("{line:?}: expected key=value, got {kv:?}"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{line:?}: {k}: {e}");
            match k {
                "avg10" | "avg60" | "avg300" => {
                    let pct: f64 = v.parse().map_err(|e| bad(&e))?;
                    let slot = match k {
                        "avg10" => &mut parsed.avg10,
                        "avg60" => &mut parsed.avg60,
                        _ => &mut parsed.avg300,
                    };
                    // Rounded so 95.35% is 0.9535, not 0.95349999.
                    *slot = (pct * 100.0).round() / 10_000.0;
                    seen += 1;
                }
                "total" => {
                    parsed.total_us = v.parse().map_err(|e| bad(&e))?;
                    seen += 1;
                }
                _ => {}
            }
        }
        if seen != 4 {
            return Err(format!("{line:?}: expected avg10, avg60, avg300 and total"));
        }
        match kind {
            "some" => psi.some = Some(parsed),
            "full" => psi.full = Some(parsed),
            other => return Err(format!("unknown line kind {other:?}")),
        }
    }
    if psi.some.is_none() {
        return Err("no \"some\" line".into());
    }
    Ok(psi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_files_have_some_and_full() {
        let p = parse_psi("some avg10=3.05 avg60=10.49 avg300=10.17 total=60049740\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
        let some = p.some.unwrap();
        assert!((some.avg60 - 0.1049).abs() < 1e-9);
        assert_eq!(some.total_us, 60049740);
        assert_eq!(p.full.unwrap().avg10, 0.0);
    }

    #[test]
    fn cpu_before_5_13_has_only_some() {
        let p = parse_psi("some avg10=55.00 avg60=61.20 avg300=40.00 total=123\n").unwrap();
        assert_eq!(p.full, None);
        assert!((p.some.unwrap().avg60 - 0.612).abs() < 1e-9);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(parse_psi("").is_err());
        assert!(parse_psi("some avg10=x avg60=1 avg300=1 total=1\n").is_err());
        assert!(parse_psi("some avg10=1 avg60=1\n").is_err());
        assert!(parse_psi("most avg10=1 avg60=1 avg300=1 total=1\n").is_err());
    }
}
