//! Real-kernel set-up shared by the conntrack tests: a throw-away network
//! namespace, a lowered `nf_conntrack_max`, and a table filled with UDP flows.

use super::{sh, skip, CrossProcessLock};
use std::process::Command;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a tool is on PATH. In CI a missing tool is a broken image, not a skip.
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("CI").is_some() {
        panic!("{tool} is required in CI (tests/run.sh installs it)");
    }
    found
}

/// A network namespace removed on drop, whatever the test did.
pub struct Netns(pub String);

impl Netns {
    /// `nd-TAG-PID`, with loopback up; None (and a "skipped" line) when not root.
    pub fn new(tag: &str) -> Option<Netns> {
        if !is_root() {
            skip("needs root to create network namespaces");
            return None;
        }
        let name = format!("nd-{tag}-{}", std::process::id());
        sh("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        sh("ip", &["-n", &ns.0, "link", "set", "lo", "up"]);
        Some(ns)
    }

    pub fn exec(&self, cmd: &[&str]) -> String {
        let mut args = vec!["netns", "exec", &self.0];
        args.extend_from_slice(cmd);
        sh("ip", &args)
    }

    /// Makes conntrack track the namespace's UDP (it only tracks a namespace's
    /// packets once a rule there needs it) and leaves TCP untracked, so the test's
    /// own HTTP traffic never needs a place in a table the test fills up.
    pub fn track_udp_only(&self) {
        self.exec(&["nft", "add", "table", "inet", "nodediag_test"]);
        self.exec(&[
            "nft",
            "add chain inet nodediag_test out { type filter hook output priority 0 ; }",
        ]);
        self.exec(&[
            "nft",
            "add",
            "rule",
            "inet",
            "nodediag_test",
            "out",
            "ct",
            "state",
            "new",
            "accept",
        ]);
        for hook in ["output", "prerouting"] {
            self.exec(&[
                "nft",
                &format!("add chain inet nodediag_test raw_{hook} {{ type filter hook {hook} priority -300 ; }}"),
            ]);
            self.exec(&[
                "nft",
                "add",
                "rule",
                "inet",
                "nodediag_test",
                &format!("raw_{hook}"),
                "meta",
                "l4proto",
                "tcp",
                "notrack",
            ]);
        }
    }

    /// Makes conntrack track everything in the namespace, TCP included, as on a node
    /// with kube-proxy: one rule using conntrack registers its hooks there.
    pub fn track_all(&self) {
        self.exec(&["nft", "add", "table", "inet", "nodediag_test"]);
        self.exec(&[
            "nft",
            "add chain inet nodediag_test out { type filter hook output priority 0 ; }",
        ]);
        self.exec(&[
            "nft",
            "add",
            "rule",
            "inet",
            "nodediag_test",
            "out",
            "ct",
            "state",
            "new",
            "accept",
        ]);
    }

    /// The namespace's `nf_conntrack_count`.
    pub fn conntrack_count(&self) -> u64 {
        self.exec(&["cat", "/proc/sys/net/netfilter/nf_conntrack_count"])
            .trim()
            .parse()
            .expect("nf_conntrack_count is a number")
    }

    /// Sends one UDP packet to each of `flows` closed loopback ports: one new
    /// conntrack entry each, until the table is full and conntrack drops the rest.
    pub fn send_udp_flows(&self, flows: u16) {
        let script = format!(
            "for p in $(seq 20000 {}); do echo x 2>/dev/null >/dev/udp/127.0.0.1/$p || true; done",
            20000 + flows - 1
        );
        self.exec(&["bash", "-c", &script]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

const MAX_PATH: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

/// Lowers the global `nf_conntrack_max` and restores it on drop, holding a
/// cross-process lock meanwhile so two tests never lower and restore it over each
/// other. The limit applies to each namespace's own count, so the host's table is
/// only affected if it already holds more entries than the temporary limit.
///
/// The value to restore is also written to a journal beside the lock: a test
/// process killed while holding the limit low (a timeout, ^C) cannot restore it,
/// so the next holder does, before anything else reads the limit.
pub struct ConntrackMax {
    old: String,
    _lock: CrossProcessLock,
}

impl ConntrackMax {
    pub fn set(v: u64) -> ConntrackMax {
        let lock = Self::unchanged();
        let old = std::fs::read_to_string(MAX_PATH).expect("nf_conntrack_max");
        std::fs::write(journal(), old.trim()).expect("journal nf_conntrack_max");
        std::fs::write(MAX_PATH, v.to_string()).expect("lower nf_conntrack_max");
        ConntrackMax { old, _lock: lock }
    }

    /// The lock alone, for tests that need the limit left as the host has it while
    /// they run; a limit left low by a killed run is restored first.
    pub fn unchanged() -> CrossProcessLock {
        let lock = CrossProcessLock::acquire("nf_conntrack_max");
        if let Ok(saved) = std::fs::read_to_string(journal()) {
            std::fs::write(MAX_PATH, saved.trim()).expect("restore nf_conntrack_max");
            let _ = std::fs::remove_file(journal());
        }
        lock
    }
}

fn journal() -> std::path::PathBuf {
    std::env::temp_dir().join("nodediag-test-nf_conntrack_max.saved")
}

impl Drop for ConntrackMax {
    fn drop(&mut self) {
        // drop() runs before the fields are dropped: restored, then unlocked.
        let _ = std::fs::write(MAX_PATH, self.old.trim());
        let _ = std::fs::remove_file(journal());
    }
}
