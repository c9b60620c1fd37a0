//! What the agent binary holds beside its own memory. glibc's libm is not among it:
//! the one function nodediag took from it, `pow`, is built in (agent/src/memory.rs),
//! and loading libm for it left about 0.5 MiB resident. Nor are glibc's per-thread
//! caches of freed chunks, which kept about 3 MiB at `--interval 1s` on 500 pods,
//! nor an async worker per CPU of a big node.

mod common;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_binary_does_not_load_libm() {
    let bin = env!("CARGO_BIN_EXE_nodediag");
    let out = std::process::Command::new("ldd")
        .arg(bin)
        .output()
        .expect("running ldd (Debian's libc-bin)");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ldd {bin}: {listed}");
    assert!(
        listed.contains("libc.so"),
        "ldd {bin} lists no libc: {listed}"
    );
    assert!(
        !listed.contains("libm.so"),
        "{bin} loads libm: a function of it is imported that the binary does not build in (nm -D --undefined-only {bin}):\n{listed}"
    );
}

/// `serve` executes itself again with glibc's per-thread caches off: added to the
/// tunables the user gave, and not when the user set their size.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn serve_runs_without_thread_caches_unless_told_otherwise() {
    use common::{Agent, BIN};
    let args = healthy_fixture_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for (given, running) in [
        (None, "glibc.malloc.tcache_count=0"),
        (
            Some("glibc.malloc.arena_max=2"),
            "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0",
        ),
        (
            Some("glibc.malloc.tcache_count=7"),
            "glibc.malloc.tcache_count=7",
        ),
    ] {
        let mut cmd = std::process::Command::new(BIN);
        match given {
            Some(v) => cmd.env("GLIBC_TUNABLES", v),
            None => cmd.env_remove("GLIBC_TUNABLES"),
        };
        // Ready to serve, so past the exec: the same process, its new environment.
        let agent = Agent::start_with(cmd, &args, None);
        let environ = std::fs::read(format!("/proc/{}/environ", agent.pid())).unwrap();
        assert_eq!(
            tunables_of(&String::from_utf8_lossy(&environ)).as_deref(),
            Some(running),
            "GLIBC_TUNABLES given {given:?}"
        );
        assert!(
            !agent.logged("per-thread malloc caches stay on"),
            "the exec failed"
        );
    }
}

/// `serve` runs at most two async workers, fewer when the process may use fewer CPUs,
/// and as many as `TOKIO_WORKER_THREADS` asks for when it is set.
#[test]
fn serve_runs_at_most_two_async_workers_unless_told_otherwise() {
    use common::{Agent, BIN};
    let args = healthy_fixture_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (given, running) in [(None, cpus.min(2)), (Some("3"), 3)] {
        let mut cmd = std::process::Command::new(BIN);
        match given {
            Some(v) => cmd.env("TOKIO_WORKER_THREADS", v),
            None => cmd.env_remove("TOKIO_WORKER_THREADS"),
        };
        // The start-up line, which the start waits for, says how many run.
        let agent = Agent::start_with(cmd, &args, None);
        assert!(
            agent.logged(&format!("async_workers={running} ")),
            "TOKIO_WORKER_THREADS given {given:?}: expected async_workers={running} in the start-up line"
        );
    }
}

/// `serve`'s flags for the healthy fixture node, with no netlink: an agent that
/// reads its kernel files from the fixture and starts at once.
fn healthy_fixture_args() -> Vec<String> {
    let root = common::fixture("healthy");
    let p = |d: &str| root.join(d).to_string_lossy().into_owned();
    vec![
        "--no-netlink".to_string(),
        format!("--path.procfs={}", p("proc")),
        format!("--path.sysfs={}", p("sys")),
        format!("--path.rootfs={}", p("rootfs")),
    ]
}

/// The GLIBC_TUNABLES of a process's /proc/PID/environ. glibc parses the variable in
/// place, ending each tunable at its ':' with a NUL, so the tunables are the entry
/// and the pieces after it that name a tunable (an environment variable never starts
/// with `glibc.`): joined again with ':'.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tunables_of(environ: &str) -> Option<String> {
    let mut pieces = environ.split('\0');
    let first = pieces.find_map(|p| p.strip_prefix("GLIBC_TUNABLES="))?;
    let rest = pieces.take_while(|p| p.starts_with("glibc."));
    Some(
        std::iter::once(first)
            .chain(rest)
            .collect::<Vec<_>>()
            .join(":"),
    )
}
