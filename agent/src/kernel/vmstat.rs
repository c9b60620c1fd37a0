//! `/proc/vmstat` counters.

/// The value of one `name value` line; None when this kernel does not have it
/// (`oom_kill` appeared in 4.13).
pub fn vmstat_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == name).then(|| it.next()?.parse().ok())?
    })
}

/// A file of `name value` lines, as every kernel writes it: false for what is not
/// vmstat at all (a corrupt or substituted file).
pub fn looks_like_vmstat(text: &str) -> bool {
    text.lines().any(|l| {
        let mut it = l.split_whitespace();
        let (Some(name), Some(value), None) = (it.next(), it.next(), it.next()) else {
            return false;
        };
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && value.parse::<u64>().is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_oom_kill_and_misses_it_on_old_kernels() {
        let text = "nr_free_pages 3957481\noom_kill 7\nnuma_hit 1\n";
        assert_eq!(vmstat_value(text, "oom_kill"), Some(7));
        assert_eq!(vmstat_value("nr_free_pages 1\n", "oom_kill"), None);
        assert_eq!(vmstat_value("oom_kill x\n", "oom_kill"), None);
        assert_eq!(vmstat_value("oom_kill_x 3\n", "oom_kill"), None);
    }

    #[test]
    fn vmstat_is_recognised_by_its_lines() {
        assert!(looks_like_vmstat("nr_free_pages 3957481\nnuma_hit 1\n"));
        assert!(!looks_like_vmstat("x!#@ not a number\n"));
        assert!(!looks_like_vmstat(""));
        assert!(!looks_like_vmstat("-5\n"));
    }
}
