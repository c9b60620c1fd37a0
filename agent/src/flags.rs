//! Value parsers shared by every flag definition (durations, ratios, sizes), so a bad
//! value is refused the same way whichever signal's flag it is.

use clap::{Args, FromArgMatches};
use std::time::Duration;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 15s, 5m, 500ms)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// A duration where zero means "at once" (a minimum age, not an interval).
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 0s, 30s, 5m)"))
}

pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{v} is not a fraction between 0 and 1 (e.g. 0.8)"));
    }
    Ok(v)
}

/// Bytes with an optional unit: 512, 64k, 16MiB, 1G (binary), 500MB (decimal).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 16MiB, 512k or 1G"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "KiB" => 1 << 10,
        "m" | "M" | "MiB" => 1 << 20,
        "g" | "G" | "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (B, KiB, MiB, GiB, kB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))
}

/// A flag group at its defaults, as an empty command line gives it: for tests, benches
/// and the `Default` of threshold structs, so a default is written once, in its flag.
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults").no_binary_name(true));
    let matches = command
        .try_get_matches_from(Vec::<String>::new())
        .expect("every flag has a default");
    T::from_arg_matches(&matches).expect("defaults parse")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_bad_ones_say_why() {
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("64k").unwrap(), 65536);
        assert_eq!(parse_bytes("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_bytes("500MB").unwrap(), 500_000_000);
        assert!(parse_bytes("12 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("99999999999G")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn durations_and_ratios_say_what_they_expect() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert!(parse_duration("0s")
            .unwrap_err()
            .contains("greater than zero"));
        assert_eq!(parse_duration_or_zero("0").unwrap(), Duration::ZERO);
        assert!(parse_duration_or_zero("soon")
            .unwrap_err()
            .contains("e.g. 0s"));
        assert!(parse_ratio("3").unwrap_err().contains("between 0 and 1"));
        assert_eq!(parse_ratio("0.8").unwrap(), 0.8);
    }
}
