//! One conntrack dump of the calling network namespace folded into the top lists,
//! through the agent's own path (`TopDumper`, as `GET /api/v1/conntrack/top` and
//! the collector run it: the table's count read, the dump, the counts, then the
//! ranking with an owner map), with what it cost: wall time, CPU time
//! (user and system: the kernel's side of the dump is system time of this process)
//! and peak RSS, as one JSON line. For benches/conntrack_dump.sh.
//!
//! usage: conntrack_top [MAX_ENTRIES] [MAX_MS] [PODS]
//!
//! PODS: how many pod addresses (10.244.x.y, as conntrack_fill makes them) the
//! owner map names, so the cost of the owner look-up is in the figures.

use nodediag::collect::conntrack_dumper::{TopBudget, TopDumper, Trigger};
use nodediag::collect::conntrack_top::Owners;
use nodediag::host::HostRoot;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn usage() -> libc::rusage {
    // SAFETY: getrusage fills the zeroed struct we own.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    }
}

fn cpu_seconds(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let max_entries = arg(1, 1_000_000);
    let max_ms = arg(2, 10_000);
    let pods = arg(3, 200);
    let owners: Owners = (0..pods)
        .map(|pod| {
            let ip = IpAddr::V4(Ipv4Addr::new(
                10,
                244,
                (pod >> 8) as u8,
                (pod & 0xff) as u8 + 1,
            ));
            (ip, format!("bench/pod-{pod}"))
        })
        .collect();
    let before = usage();
    let started = Instant::now();
    let budget = TopBudget {
        max_entries,
        timeout: Duration::from_millis(max_ms),
    };
    let dumper = TopDumper::new(HostRoot::default(), true, budget);
    let dump = match dumper.fetch(Trigger::Request) {
        Ok(f) => f.dump,
        Err(e) => {
            eprintln!("conntrack_top: dump: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dumped = started.elapsed();
    let top = dump.rank(&owners, 10);
    let wall = started.elapsed();
    let after = usage();
    let first = |l: &nodediag::collect::conntrack_top::TopList| {
        l.rows
            .first()
            .map(|r| format!("{} {:.1}%", r.key, r.share * 100.0))
    };
    let line = serde_json::json!({
        "entries": dump.entries_seen,
        "table_entries": dump.table_entries,
        "cut": dump.cut,
        "dump_seconds": dumped.as_secs_f64(),
        "wall_seconds": wall.as_secs_f64(),
        "user_seconds": cpu_seconds(after.ru_utime) - cpu_seconds(before.ru_utime),
        "system_seconds": cpu_seconds(after.ru_stime) - cpu_seconds(before.ru_stime),
        "max_rss_kib_before": before.ru_maxrss,
        "max_rss_kib": after.ru_maxrss,
        "distinct_sources": top.sources.distinct,
        "distinct_destinations": top.destinations.distinct,
        "top_owner": first(&top.owners),
        "top_destination": first(&top.destinations),
    });
    println!("{line}");
    ExitCode::SUCCESS
}
