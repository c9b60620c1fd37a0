//! Shared helpers for integration tests: run the real binary, wait on conditions
//! with a deadline, talk HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod caps;
pub mod conntrack;
pub mod dns;
pub mod mount;
pub mod pki;
pub mod pod;
pub mod veth;
pub mod web;

pub const BIN: &str = env!("CARGO_BIN_EXE_nodediag");

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// A test whose prerequisite is missing (not root, no cgroup controller, a tool not
/// installed) returns after calling this. In CI, which runs as root on machines that
/// have all of them, a missing prerequisite is a failure, never a silent pass.
pub fn skip(reason: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "required in CI but missing: {reason} (tests/run.sh installs the tools)"
    );
    eprintln!("skipped: {reason}");
}

/// Polls `cond` until it returns Some or the deadline passes (then panics with `what`).
pub fn wait_for<T>(what: &str, timeout: Duration, cond: impl FnMut() -> Option<T>) -> T {
    poll_until(timeout, cond)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `cond` until it returns Some, or None once `timeout` has passed.
pub fn poll_until<T>(timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `nodediag serve` on a loopback port picked by the kernel; killed on drop.
pub struct Agent {
    child: Child,
    pub addr: String,
    /// The network namespace the agent listens in, when not the test's own.
    netns: Option<String>,
    /// Every line the agent has logged so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Agent {
    pub fn start(args: &[&str]) -> Agent {
        Self::start_with(Command::new(BIN), args, None)
    }

    /// Runs the agent with this open-file limit (soft, hard) from its start.
    pub fn start_with_nofile(soft: u64, hard: u64, args: &[&str]) -> Agent {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""
            ))
            .arg(BIN);
        Self::start_with(cmd, args, None)
    }

    /// Runs the agent inside a network namespace (`ip netns exec NS nodediag ...`).
    pub fn start_in_netns(netns: &str, args: &[&str]) -> Agent {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, BIN]);
        Self::start_with(cmd, args, Some(netns.to_string()))
    }

    /// Runs the agent inside a cgroup (v1 or v2 directory) from its first instruction,
    /// so everything it does (the fsync probe's writes) is accounted there.
    pub fn start_in_cgroup(cgroup: &Path, args: &[&str]) -> Agent {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "echo $$ > '{}/cgroup.procs' && exec \"$0\" \"$@\"",
                cgroup.display()
            ))
            .arg(BIN);
        Self::start_with(cmd, args, None)
    }

    /// Runs `cmd serve ...`: `cmd` is the agent binary, or a command that ends by
    /// running it (a namespace, a cgroup, fewer capabilities); `netns` is where it
    /// listens when not in the test's own network namespace.
    pub fn start_with(mut cmd: Command, args: &[&str], netns: Option<String>) -> Agent {
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--log-level", "info"]);
        // The notrack table belongs to one agent per network namespace: agents of
        // tests in the machine's own namespace leave it alone unless a test asks.
        if netns.is_none() && !args.iter().any(|a| a.starts_with("--web.notrack")) {
            cmd.arg("--web.notrack=false");
        }
        let mut child = cmd
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nodediag");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(rest) = line.split("listen=").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
                eprintln!("[nodediag] {line}");
                kept.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("nodediag did not report its listen address");
        Agent {
            child,
            addr,
            netns,
            log,
        }
    }

    /// Whether the agent has logged a line containing `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.logged_times(text) > 0
    }

    /// How many lines the agent has logged that contain `text`.
    pub fn logged_times(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// (status, body) of a GET; 4xx/5xx are returned, not errors.
    pub fn get(&self, path: &str) -> (u16, String) {
        match &self.netns {
            None => get_with(&self.url(path), None),
            Some(ns) => {
                let url = self.url(path);
                in_netns(ns, move || get_with(&url, None))
            }
        }
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Waits until every collector has sampled twice, so findings reflect them all.
    pub fn wait_settled(&self) {
        wait_for(
            "two samples of every collector",
            Duration::from_secs(30),
            || {
                let snap = self.get_json("/api/v1/snapshot");
                let all = snap["collectors"].as_object()?;
                all.values()
                    .all(|c| c["runs_total"].as_u64().unwrap_or(0) >= 2)
                    .then_some(())
            },
        );
    }

    pub fn wait_ready(&self) {
        wait_for("/readyz", Duration::from_secs(30), || {
            (self.get("/readyz").0 == 200).then_some(())
        });
    }

    /// Active finding ids (with subjects) from /api/v1/findings.
    pub fn findings(&self) -> Vec<(String, String)> {
        self.get_json("/api/v1/findings")["findings"]
            .as_array()
            .expect("findings array")
            .iter()
            .map(|f| {
                (
                    f["id"].as_str().unwrap_or_default().to_string(),
                    f["subject"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

/// Moves the calling thread into a named network namespace (`ip netns add NAME`).
pub fn enter_netns(name: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("open netns pin");
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a thread that entered the named network namespace and returns its
/// result. Sockets belong to the namespace of the thread that opens them, so this is
/// how a test talks to a server listening on a namespace's loopback.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let netns = netns.to_string();
    std::thread::spawn(move || {
        enter_netns(&netns);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

pub fn get_with(url: &str, accept: Option<&str>) -> (u16, String) {
    let mut req = ureq::get(url).timeout(Duration::from_secs(10));
    if let Some(a) = accept {
        req = req.set("Accept", a);
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

impl Agent {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait for the exit; true when it exited successfully within 20 s.
    pub fn terminate(&mut self) -> bool {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        wait_for("nodediag to exit", Duration::from_secs(20), || {
            self.child.try_wait().ok().flatten()
        })
        .success()
    }
}

/// `promtool check metrics` on a scrape: (it passed, what it said); None without
/// promtool.
fn promtool_lint(metrics: &str) -> Option<(bool, String)> {
    use std::io::Write;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        skip("promtool is not installed (apt-get install prometheus)");
        return None;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}

/// `promtool check metrics` on a text 0.0.4 scrape: clean.
pub fn promtool_check(metrics: &str) {
    if let Some((passed, said)) = promtool_lint(metrics) {
        assert!(passed, "promtool check metrics: {said}");
    }
}

/// `promtool check metrics` on an OpenMetrics scrape. promtool (2.42 and later) reads
/// it with the 0.0.4 parser, which takes a counter's OpenMetrics `# HELP x` (the
/// family, without `_total`) for another family than its `x_total` samples: so
/// "x_total no help text" is all it may say, and only for counters declared as `x`.
/// Anything else (a parse error, a naming or unit problem) fails.
pub fn promtool_check_openmetrics(metrics: &str) {
    let Some((passed, said)) = promtool_lint(metrics) else {
        return;
    };
    if passed {
        return;
    }
    let other: Vec<&str> = said
        .lines()
        .filter(|l| {
            let counter = l
                .strip_suffix(" no help text")
                .and_then(|n| n.strip_suffix("_total"));
            !counter.is_some_and(|c| metrics.contains(&format!("\n# TYPE {c} counter\n")))
        })
        .collect();
    assert!(
        other.is_empty(),
        "promtool check metrics on OpenMetrics: {}",
        other.join("\n")
    );
}

/// The value of one series (`name{labels}` exactly as exposed) in a text scrape.
pub fn series_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let value = l.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

/// The Prometheus Python client's OpenMetrics parser on a scrape: it checks what
/// `promtool check metrics` cannot (promtool 2.42 reads the 0.0.4 text format only,
/// and takes OpenMetrics' `# TYPE x counter` for a family apart from `x_total`): the
/// `# EOF`, counter and unit suffixes, histogram buckets and their `+Inf`.
pub fn openmetrics_check(metrics: &str) {
    use std::io::Write;
    const CHECK: &str = "import sys\n\
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
n = sum(1 for _ in parse(sys.stdin.read()))\n\
print(n, 'families')\n";
    let have = Command::new("python3")
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        skip("python3 with prometheus_client (pip install prometheus-client) checks OpenMetrics");
        return;
    }
    let mut child = Command::new("python3")
        .args(["-c", CHECK])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "OpenMetrics parser: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Agent {
    /// SIGTERM first, as the kubelet does, so the agent shuts down cleanly (the fsync
    /// probe removes its files); SIGKILL if it has not exited within 5 s.
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `nodediag check` and returns (exit code, stdout).
pub fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("check")
        .args(args)
        .output()
        .expect("run nodediag check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs a command that must succeed (test set-up such as `ip netns add`).
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An exclusive lock shared by every test process on the machine, held until drop.
/// For host-global state that tests change (a sysctl such as `nf_conntrack_max`):
/// `cargo test` runs test binaries one after another but the tests inside one
/// binary in parallel, and a developer may run two binaries at once. flock(2) locks
/// belong to the open file, so two opens in one process exclude each other too; the
/// kernel drops the lock if the holder dies.
pub struct CrossProcessLock {
    _file: std::fs::File,
}

impl CrossProcessLock {
    pub fn acquire(name: &str) -> CrossProcessLock {
        use std::os::fd::AsRawFd;
        let path = std::env::temp_dir().join(format!("nodediag-test-{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        loop {
            // SAFETY: flock on a descriptor we own; blocks until the lock is free.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::Interrupted,
                "flock {}: {err}",
                path.display()
            );
        }
        CrossProcessLock { _file: file }
    }
}
