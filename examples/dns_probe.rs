//! Runs the DNS probe from inside network namespaces, a few at a time as the dns
//! collector will, and prints what it cost as JSON (benches/dns_probe_scale.sh).
//!
//! usage: dns_probe [--resolv-conf FILE] [--server IP:PORT] [--name NAME]...
//!                  [--per-try MS] [--at-once N] [--setns-only] NETNS...
//!
//! Every NETNS (a pin such as /run/netns/x, or /proc/PID/ns/net) is probed once,
//! N at a time in parallel (default 3), on probe threads kept between rounds as the
//! collector keeps them. `--setns-only` probes no name: the cost of the hand-over,
//! the kept thread's `setns` there and back, and the hand-back alone.

use nodediag::kernel::dns::exchange::QueryOutcome;
use nodediag::kernel::dns::probe::ProbeSpec;
use nodediag::kernel::dns::probe_threads::ProbeThreads;
use nodediag::kernel::dns::resolv_conf;
use nodediag::kernel::dns::search::Verdict;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Args {
    resolv_conf: String,
    server: Option<String>,
    names: Vec<String>,
    per_try: Duration,
    at_once: usize,
    setns_only: bool,
    netns: Vec<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        resolv_conf: "nameserver 10.96.0.10\n\
            search default.svc.cluster.local svc.cluster.local cluster.local\n\
            options ndots:5\n"
            .into(),
        server: None,
        names: Vec::new(),
        per_try: Duration::from_secs(1),
        at_once: 3,
        setns_only: false,
        netns: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--resolv-conf" => {
                let path = value()?;
                a.resolv_conf =
                    std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            }
            "--server" => a.server = Some(value()?),
            "--name" => a.names.push(value()?),
            "--per-try" => {
                a.per_try =
                    Duration::from_millis(value()?.parse().map_err(|e| format!("--per-try: {e}"))?)
            }
            "--at-once" => a.at_once = value()?.parse().map_err(|e| format!("--at-once: {e}"))?,
            "--setns-only" => a.setns_only = true,
            _ if arg.starts_with("--") => return Err(format!("unknown flag {arg}")),
            _ => a.netns.push(PathBuf::from(arg)),
        }
    }
    if a.netns.is_empty() {
        return Err("no namespace to probe".into());
    }
    if a.names.is_empty() && !a.setns_only {
        a.names = vec![
            "kubernetes.default.svc.cluster.local".into(),
            "nodediag-absent.invalid".into(),
        ];
    }
    Ok(a)
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dns_probe: {e}");
            return ExitCode::from(2);
        }
    };
    let conf = resolv_conf::parse(&args.resolv_conf);
    let server = match &args.server {
        Some(s) => s.parse().expect("--server IP:PORT"),
        None => (conf.effective_nameservers()[0], 53).into(),
    };
    let mut spec = ProbeSpec::like_glibc(
        server,
        args.names.clone(),
        conf.search.clone(),
        &conf.options,
    );
    spec.per_try = args.per_try;
    if args.setns_only {
        spec.names.clear();
    }
    let budget = args.per_try * 4 * spec.attempts.max(1) as u32 * spec.names.len().max(1) as u32;

    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut rounds_ms = Vec::new();
    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    let (mut queries, mut errors, mut ignored) = (0usize, Vec::new(), 0u32);
    // Where the timeouts fell: namespace, lookup, and the query's place in the probe.
    let mut timeouts = Vec::new();
    let threads = ProbeThreads::default();
    for chunk in args.netns.chunks(args.at_once.max(1)) {
        let t0 = Instant::now();
        let targets = chunk
            .iter()
            .map(|p| (Some(p.clone()), spec.clone()))
            .collect();
        for (result, netns) in threads.run_all(targets, t0 + budget).into_iter().zip(chunk) {
            match result {
                Ok(report) => {
                    ignored += report.ignored_replies;
                    let sent = report.lookups.iter().flat_map(|l| l.queries.iter());
                    for (i, q) in sent.enumerate() {
                        if q.outcome == QueryOutcome::Timeout {
                            timeouts.push(format!(
                                "{} query {i}: {} {}",
                                netns.display(),
                                q.qtype,
                                q.name
                            ));
                        }
                    }
                    for l in &report.lookups {
                        queries += l.queries.len();
                        let key = match &l.verdict {
                            Verdict::Error(_) => "error".to_string(),
                            v => format!("{v:?}").to_lowercase(),
                        };
                        *verdicts.entry(key).or_default() += 1;
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        rounds_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let mut sorted = rounds_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let n = args.netns.len() as f64;
    let out = serde_json::json!({
        "namespaces": args.netns.len(),
        "at_once": args.at_once,
        "rounds": rounds_ms.len(),
        "names_per_namespace": spec.names.len(),
        "queries": queries,
        "verdicts": verdicts,
        "errors": errors.iter().take(5).collect::<Vec<_>>(),
        "timeouts": timeouts.len(),
        "ignored_replies": ignored,
        "first_timeouts": timeouts.iter().take(10).collect::<Vec<_>>(),
        "round_ms": {
            "p50": percentile(&sorted, 0.5),
            "p99": percentile(&sorted, 0.99),
            "max": sorted.last().copied().unwrap_or(0.0),
        },
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_ms_per_namespace": cpu * 1e3 / n,
        "wall_ms_per_namespace": wall * 1e3 / n,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
