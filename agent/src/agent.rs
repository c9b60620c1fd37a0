//! Wiring: the long-running agent (`serve`) and the one-shot check (`check`).

use crate::collect::{self, schedule, Enabled};
use crate::config::{AgentArgs, CheckArgs, OutputFormat, ServeArgs, Thresholds};
use crate::diagnose::{self, catalog, RuleContext, SinceTracker};
use crate::host::HostRoot;
use crate::report;
use crate::store::{Snapshot, Status, Store};
use anyhow::{bail, Context};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The store plus what re-evaluating findings needs.
pub struct Agent {
    pub store: Arc<Store>,
    thresholds: Thresholds,
    window: Duration,
    since: Mutex<SinceTracker>,
}

impl Agent {
    pub fn new(args: &AgentArgs) -> Self {
        Self {
            store: Arc::new(Store::new(args.node_name(), args.window)),
            thresholds: args.thresholds.clone(),
            window: args.window,
            since: Mutex::new(SinceTracker::default()),
        }
    }

    /// Re-evaluates every rule on the store; cheap (pure functions over samples).
    pub fn refresh_findings(&self) {
        let snap = self.store.snapshot();
        let ctx = RuleContext {
            thresholds: &self.thresholds,
            window: self.window,
        };
        let findings = diagnose::evaluate(&snap, &ctx);
        let findings = self
            .since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(findings);
        self.store.set_findings(findings);
    }
}

/// Refuses roots that do not exist, so a typo in --path.* is an error at start and
/// not a node that looks healthy.
pub fn check_roots(root: &HostRoot) -> anyhow::Result<()> {
    for (flag, path) in [
        ("--path.procfs", &root.proc),
        ("--path.sysfs", &root.sys),
        ("--path.rootfs", &root.rootfs),
    ] {
        if !path.is_dir() {
            bail!("{flag} {}: not a directory", path.display());
        }
    }
    Ok(())
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    check_roots(&args.agent.host_root())?;
    let agent = Arc::new(Agent::new(&args.agent));
    let collectors = collect::enabled(&args.agent);
    if collectors.is_empty() {
        bail!("every collector is disabled: nothing to do");
    }
    let web = crate::http::web_server::WebServer::prepare(&args.web)?;
    let listener = crate::http::web_server::WebServer::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        node = %agent.store.read(|s| s.node.clone()),
        collectors = ?collectors.iter().map(|c| c.collector.name()).collect::<Vec<_>>(),
        web = %web.describe(),
        "nodediag serving"
    );
    let refresher = agent.clone();
    let tasks = schedule::spawn_all(
        agent.store.clone(),
        collectors,
        args.agent.collector_timeout,
        Arc::new(move || refresher.refresh_findings()),
    );
    web.serve(
        listener,
        crate::http::router(agent.store.clone()),
        shutdown_signal(),
    )
    .await?;
    tracing::info!("shutting down");
    // Dropping the collectors releases what they hold on the host (the disk probe
    // removes its files), instead of leaving it to the runtime's teardown.
    for t in tasks {
        t.abort();
        let _ = t.await;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

/// Exit codes of the node-problem-detector custom plugin protocol.
pub const EXIT_OK: i32 = 0;
pub const EXIT_PROBLEM: i32 = 1;
pub const EXIT_UNKNOWN: i32 = 2;

/// Samples twice, `delay` apart (so rules on rising counters have a rate), evaluates,
/// prints the report and returns the exit code.
pub fn check(args: CheckArgs) -> i32 {
    if let Err(e) = check_roots(&args.agent.host_root()) {
        println!("UNKNOWN: {e:#}");
        return EXIT_UNKNOWN;
    }
    let wanted: BTreeSet<&str> = args.findings.iter().map(String::as_str).collect();
    let needed: BTreeSet<&str> = catalog::CATALOG
        .iter()
        .filter(|d| wanted.is_empty() || wanted.contains(d.id))
        .map(|d| d.collector)
        .collect();
    let mut collectors: Vec<Enabled> = collect::enabled(&args.agent)
        .into_iter()
        .filter(|c| needed.contains(c.collector.name()))
        .collect();
    let agent = Agent::new(&args.agent);
    for c in &collectors {
        agent.store.register(c.collector.name(), c.interval);
    }
    for round in 0..2 {
        if round == 1 {
            std::thread::sleep(args.delay);
        }
        collectors = sample_all(&agent.store, collectors, args.agent.collector_timeout);
    }
    agent.refresh_findings();
    let mut snap = agent.store.snapshot();
    if !wanted.is_empty() {
        let kept = snap
            .findings
            .iter()
            .filter(|f| wanted.contains(f.id))
            .cloned()
            .collect();
        snap.findings = Arc::new(kept);
    }
    let code = exit_code(&snap, &needed);
    match args.format {
        OutputFormat::Text => print!("{}", report::render(&snap, SystemTime::now())),
        OutputFormat::Summary => println!("{}", report::summary_line(&snap)),
        OutputFormat::Json => {
            let v = serde_json::json!({
                "summary": report::summary_line(&snap),
                "node": snap.node,
                "exit_code": code,
                "findings": snap.findings,
                "collectors": snap.collectors,
            });
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        }
    }
    code
}

/// 1 when a problem is found; 2 when a collector the checked findings need failed,
/// hung, or every one of them is unavailable; 0 otherwise.
fn exit_code(snap: &Snapshot, needed: &BTreeSet<&str>) -> i32 {
    if !snap.findings.is_empty() {
        return EXIT_PROBLEM;
    }
    let relevant: Vec<&Status> = snap
        .collectors
        .iter()
        .filter(|(n, _)| needed.contains(*n))
        .map(|(_, c)| &c.status)
        .collect();
    let broken = relevant.iter().any(|s| {
        matches!(
            s,
            Status::Error { .. } | Status::Hung { .. } | Status::Pending
        )
    });
    let none_ok = !relevant.iter().any(|s| **s == Status::Ok);
    if broken || none_ok {
        EXIT_UNKNOWN
    } else {
        EXIT_OK
    }
}

/// One collection of each collector, in parallel threads, each bounded by `timeout`.
/// A hung collector is dropped (its thread is left to finish on its own).
fn sample_all(store: &Store, collectors: Vec<Enabled>, timeout: Duration) -> Vec<Enabled> {
    let pending: Vec<_> = collectors
        .into_iter()
        .map(|mut e| {
            let (tx, rx) = std::sync::mpsc::channel();
            let name = e.collector.name();
            let at = SystemTime::now();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let result = schedule::collect_once(e.collector.as_mut());
                let _ = tx.send((e, result, started.elapsed()));
            });
            (name, at, rx)
        })
        .collect();
    let mut back = Vec::new();
    for (name, at, rx) in pending {
        match rx.recv_timeout(timeout) {
            Ok((e, result, took)) => {
                store.record(name, at, took, result);
                back.push(e);
            }
            Err(_) => store.mark_hung(name, at),
        }
    }
    back
}
