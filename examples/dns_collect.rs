//! Runs the dns collector's rounds back to back, as the agent would every interval,
//! and prints what each cost as JSON (benches/dns_collect_scale.sh).
//!
//! usage: dns_collect [--rootfs DIR] [--procfs DIR] [--server IP[:PORT]]
//!                    [--pod-namespace NS] [--pods N] [--interval SECS] [--rounds N]
//!
//! Per round: wall time and CPU (all threads of the process, the probes' included),
//! the part spent finding the pod namespaces (one walk of procfs), pods found and
//! probed, queries and failures. Defaults are the agent's: 3 pods a round, a 15 s
//! interval (so a 7.5 s budget).

use nodediag::collect::dns::{targets, DnsCollector, DnsConfig, DEFAULT_ABSENT_NAME};
use nodediag::collect::Collector;
use nodediag::host::HostRoot;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Args {
    root: HostRoot,
    server: Option<SocketAddr>,
    namespaces: Vec<String>,
    pods: usize,
    interval: Duration,
    rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        root: HostRoot::default(),
        server: None,
        namespaces: Vec::new(),
        pods: 3,
        interval: Duration::from_secs(15),
        rounds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--rootfs" => a.root.rootfs = value()?.into(),
            "--procfs" => a.root.proc = value()?.into(),
            "--server" => {
                let v = value()?;
                a.server = Some(
                    v.parse()
                        .or_else(|_| v.parse().map(|ip| SocketAddr::new(ip, 53)))
                        .map_err(|_| format!("--server {v}: not an IP[:PORT]"))?,
                );
            }
            "--pod-namespace" => a.namespaces.push(value()?),
            "--pods" => a.pods = value()?.parse().map_err(|e| format!("--pods: {e}"))?,
            "--interval" => {
                a.interval = Duration::from_secs_f64(
                    value()?.parse().map_err(|e| format!("--interval: {e}"))?,
                )
            }
            "--rounds" => a.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            _ => return Err(format!("unknown argument {arg}")),
        }
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dns_collect: {e}");
            return ExitCode::from(2);
        }
    };
    let mut collector = DnsCollector::new(
        args.root.clone(),
        DnsConfig {
            server: args.server,
            names: vec![],
            absent_name: DEFAULT_ABSENT_NAME.into(),
            pods: args.pods,
            timeout: Duration::from_secs(5),
            pod_namespaces: args.namespaces.clone(),
            host: true,
            interval: args.interval,
        },
    );
    let mut rounds = Vec::new();
    let (mut walls, mut cpus, mut scans, mut scan_cpus) = (vec![], vec![], vec![], vec![]);
    let mut probed_total = std::collections::BTreeSet::new();
    // The enumeration's own turns through the pods, as a collector keeps them.
    let mut rotation = targets::Rotation::default();
    for _ in 0..args.rounds {
        // The enumeration alone, as the round does it first.
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let _ = targets::pod_namespaces(&args.root, &args.namespaces, &mut rotation, args.pods);
        scans.push(t0.elapsed().as_secs_f64() * 1e3);
        scan_cpus.push((cpu_seconds() - cpu0) * 1e3);

        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let result = collector.collect();
        let wall = t0.elapsed().as_secs_f64() * 1e3;
        let cpu = (cpu_seconds() - cpu0) * 1e3;
        walls.push(wall);
        cpus.push(cpu);
        match result {
            Ok(s) => {
                let (sent, failed) = s.probes.iter().fold((0, 0), |(n, f), p| {
                    (n + p.queries.judged(), f + p.queries.failed())
                });
                let pods: Vec<&str> = s.pods_probed().map(|p| &*p.target).collect();
                probed_total.extend(pods.iter().map(|p| p.to_string()));
                rounds.push(serde_json::json!({
                    "wall_ms": wall, "cpu_ms": cpu, "pod_namespaces": s.pod_namespaces,
                    "pods_probed": pods.len(), "queries": sent, "failed": failed,
                    "unavailable": s.unavailable.len(),
                    "errors": s.probes.iter().filter_map(|p| p.error.clone()).collect::<Vec<_>>(),
                    "failures": s.probes.iter().flat_map(|p| {
                        p.lookups.iter().flat_map(move |l| l.failures.iter().map(move |f| format!("{}: {f}", p.target)))
                    }).take(4).collect::<Vec<_>>(),
                    "softnet_dropped": s.softnet_dropped,
                }));
            }
            Err(e) => rounds.push(serde_json::json!({ "wall_ms": wall, "error": e.to_string() })),
        }
    }
    let out = serde_json::json!({
        "rounds": rounds.len(),
        "pods_per_round": args.pods,
        "distinct_pods_probed": probed_total.len(),
        "median": {
            "wall_ms": median(walls),
            "cpu_ms": median(cpus),
            "scan_wall_ms": median(scans),
            "scan_cpu_ms": median(scan_cpus),
        },
        "each": rounds,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
    ExitCode::SUCCESS
}
