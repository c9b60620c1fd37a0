//! For tests that change the machine they run on (mounts): whether they can, and
//! running the tool that does it.

/// Whether this process may mount. Outside CI a test without it skips; CI runs the
/// suite as root, so there it is a failure.
pub fn as_root(what: &str) -> bool {
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| super::inotify::parse_status_euid(&s));
    if euid != Some(0) {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root: {what}");
        eprintln!("skipped: {what} needs root");
    }
    euid == Some(0)
}

/// Runs a command line, which must succeed.
pub fn run(args: &[&str]) {
    let s = std::process::Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(s.success(), "{args:?}: {s}");
}
