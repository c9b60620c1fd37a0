//! Small formatting helpers every layer shares. Everything here is safe on any input:
//! strings come from kernel files, directory names and container ids, so cuts fall on
//! character boundaries.

/// At most `max` characters of `s`.
pub fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// A container or sandbox id as runtimes print it: the first 12 characters.
pub fn short_id(id: &str) -> &str {
    truncate(id, 12)
}

/// What an error message quotes of a file's content: a short prefix, so a 10 MB line
/// never travels into a report.
pub fn quote(s: &str) -> String {
    const QUOTED: usize = 64;
    let cut = truncate(s, QUOTED);
    if cut.len() < s.len() {
        format!("{cut:?}... ({} bytes)", s.len())
    } else {
        format!("{cut:?}")
    }
}

/// What a caught panic said, for the error it becomes.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    truncate(&text, 200).to_string()
}

/// Ratios and rates in evidence: four decimals are enough and keep JSON readable.
pub fn round4(v: f64) -> f64 {
    round(v, 4)
}

pub fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

/// `0.1`, `2`, `0.25`: CPU limits as a person writes them.
pub fn format_cores(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// 1536 -> "1.5KiB": sizes in the report, in powers of 1024.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let id = "é容器ä0123456789abcdef";
        assert_eq!(short_id(id), "é容器ä01234567");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(truncate("", 3), "");
        let long = "x".repeat(10_000);
        let q = quote(&long);
        assert!(q.len() < 100, "{q}");
        assert!(q.ends_with("(10000 bytes)"));
        assert_eq!(quote("12"), "\"12\"");
    }

    #[test]
    fn numbers_read_like_a_person_writes_them() {
        assert_eq!(format_cores(0.1), "0.1");
        assert_eq!(format_cores(2.0), "2");
        assert_eq!(round4(0.123456), 0.1235);
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(12), "12B");
    }
}
