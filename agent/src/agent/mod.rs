//! Wiring: the long-running agent (`serve`) and the one-shot check (`check`).

pub mod notrack;
mod refresh;
pub mod schedule;

use crate::collect::Enabled;
use crate::config::{AgentArgs, CheckArgs, OutputFormat, ServeArgs};
use crate::diagnose::{RuleSet, SinceTracker};
use crate::host::HostRoot;
use crate::http::Route;
use crate::report;
use crate::signals::{self, SIGNALS};
use crate::store::{Snapshot, Status, Store};
use anyhow::{bail, Context};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The store plus what re-evaluating findings needs.
pub struct Agent {
    pub store: Arc<Store>,
    rules: Vec<(&'static str, RuleSet)>,
    window: Duration,
    since: Mutex<SinceTracker>,
}

impl Agent {
    /// The agent and the collectors its flags enable.
    pub fn new(args: &AgentArgs) -> (Self, Vec<Enabled>) {
        let (agent, collectors, _) = Self::with_routes(args);
        (agent, collectors)
    }

    /// The agent, the collectors its flags enable, and the signals' endpoints.
    pub fn with_routes(args: &AgentArgs) -> (Self, Vec<Enabled>, Vec<Route>) {
        let built = args.signals.build(&args.collect_context());
        let store = Arc::new(Store::new(args.node_name(), args.window));
        store.register_rules(built.rules.iter().map(|(name, _)| *name));
        let agent = Self {
            store,
            rules: built.rules,
            window: args.window,
            since: Mutex::new(SinceTracker::default()),
        };
        (agent, built.collectors, built.routes)
    }

    /// Re-evaluates every rule on the store; cheap (pure functions over samples). A
    /// signal whose rules fail is reported as such; the others' findings stand.
    pub fn refresh_findings(&self) {
        let snap = self.store.snapshot();
        let evaluation = signals::evaluate(&snap, self.window, &self.rules);
        for (signal, error) in &evaluation.failures {
            let before = snap.rules.get(signal).and_then(|r| r.error.as_ref());
            if before != Some(error) {
                tracing::error!(signal, %error, "rules failed: this signal's findings are unknown");
            }
        }
        let findings = self
            .since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(evaluation.findings);
        self.store.set_evaluation(findings, &evaluation.failures);
        if snap.ready() {
            self.store.mark_judged();
        }
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
    let (agent, collectors, routes) = Agent::with_routes(&args.agent);
    let agent = Arc::new(agent);
    if collectors.is_empty() {
        bail!("every collector is disabled: nothing to do");
    }
    let web = crate::http::web_server::WebServer::prepare(&args.web)?;
    let listener = crate::http::web_server::WebServer::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        async_workers = tokio::runtime::Handle::current().metrics().num_workers(),
        node = %agent.store.read(|s| s.node.clone()),
        collectors = ?collectors.iter().map(|c| c.collector.name()).collect::<Vec<_>>(),
        web = %web.describe(),
        "nodediag serving"
    );
    let port = listener.local_addr()?.port();
    let exemption = notrack::install(args.web_notrack, port, &agent.store).await;
    let mut metrics = signals::metrics_exposition(agent.store.clone());
    web.register_metrics(&mut metrics);
    let metrics = Arc::new(metrics);
    let (rounds, refresher) = refresh::spawn(agent.clone(), metrics.clone());
    let mut tasks = schedule::spawn_all(
        agent.store.clone(),
        collectors,
        args.agent.collector_timeout,
        rounds,
    );
    tasks.push(refresher);
    let view = signals::http_view(routes, metrics);
    let app = crate::http::router(agent.store.clone(), view);
    let served = web.serve(listener, app, shutdown_signal()).await;
    tracing::info!("shutting down");
    // Removed however the server ended: an exemption without its agent is a port
    // nobody tracks.
    notrack::remove(exemption).await;
    served?;
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
    let needed: BTreeSet<&str> = SIGNALS
        .iter()
        .filter(|s| wanted.is_empty() || s.findings.iter().any(|d| wanted.contains(d.id)))
        .map(|s| s.name)
        .collect();
    let (agent, collectors) = Agent::new(&args.agent);
    let mut collectors: Vec<Enabled> = collectors
        .into_iter()
        .filter(|c| needed.contains(c.collector.name()))
        .collect();
    for c in &collectors {
        agent.store.register(c.collector.name(), c.interval);
    }
    // Two rounds inside the deadline: the first gets half of what the delay leaves,
    // the second the rest; a collector still busy when its round ends is hung.
    let started = Instant::now();
    let deadline = started + args.timeout;
    let first_round = started + args.timeout.saturating_sub(args.delay) / 2;
    collectors = sample_all(
        &agent.store,
        collectors,
        args.agent.collector_timeout,
        first_round,
    );
    std::thread::sleep(
        args.delay
            .min(deadline.saturating_duration_since(Instant::now())),
    );
    sample_all(
        &agent.store,
        collectors,
        args.agent.collector_timeout,
        deadline,
    );
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
        OutputFormat::Text => print!("{}", signals::render_report(&snap, SystemTime::now())),
        OutputFormat::Summary => println!("{}", report::summary_line(&snap)),
        OutputFormat::Json => {
            let v = serde_json::json!({
                "summary": report::summary_line(&snap),
                "node": snap.node,
                "exit_code": code,
                "findings": snap.findings,
                "collectors": snap.collectors,
                "rules": snap.rules,
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
    if snap.failed_rules().any(|(n, _)| needed.contains(n)) {
        return EXIT_UNKNOWN;
    }
    // A file that is there but did not read: its findings cannot be vouched for.
    if snap.unreadable_parts().any(|(n, _)| needed.contains(n)) {
        return EXIT_UNKNOWN;
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

/// One collection of each collector, in parallel threads, all bounded by `deadline`
/// (and each by `timeout`). A collector still busy then is marked hung and dropped:
/// its thread is left to finish on its own, and the process does not wait for it.
fn sample_all(
    store: &Store,
    collectors: Vec<Enabled>,
    timeout: Duration,
    deadline: Instant,
) -> Vec<Enabled> {
    let started = Instant::now();
    let deadline = deadline.min(started + timeout);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut running: Vec<(&'static str, SystemTime)> = Vec::new();
    for mut e in collectors {
        let tx = tx.clone();
        let name = e.collector.name();
        running.push((name, SystemTime::now()));
        std::thread::spawn(move || {
            let started = Instant::now();
            let result = schedule::collect_once(e.collector.as_mut());
            let _ = tx.send((e, result, started.elapsed()));
        });
    }
    drop(tx);
    let mut back = Vec::new();
    while !running.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((e, result, took)) = rx.recv_timeout(left) else {
            break;
        };
        let name = e.collector.name();
        if let Some(i) = running.iter().position(|(n, _)| *n == name) {
            let (_, at) = running.swap_remove(i);
            store.record(name, at, took, result);
        }
        back.push(e);
    }
    for (name, at) in running {
        store.mark_hung(name, at);
    }
    back
}
