//! `/proc/vmstat` counters.

/// The value of one `name value` line; None when this kernel does not have it
/// (`oom_kill` appeared in 4.13).
pub fn vmstat_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == name).then(|| it.next()?.parse().ok())?
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
}
