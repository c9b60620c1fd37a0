//! The kernel's floor under a collection round on this node: the reads whose number
//! grows with pods, made bare, at the agent's cadence, with nothing kept but the
//! descriptors. What nodediag spends above it is its own.
//!
//! - cgroup counters: one `pread` of `cpu.stat` (and, on cgroup v1, of
//!   `cpuacct.usage`) of every cgroup below the kubelet's, in the hierarchy the agent
//!   reads, files held open and left unparsed; on v1 with cpuacct, `cpu.stat` only of
//!   the cgroups with a CPU limit, as the agent reads them every round (the others'
//!   with their limits, when these are written);
//! - processes: listing `/proc`, every round;
//! - process namespaces: one `readlink` of `ns/net` a process, relative to procfs
//!   held open (the agent's own walk). The agent reads every process's link every
//!   5 minutes, and between only those of processes in their first minute: the
//!   floor takes the share of a round (a twentieth at 15 s);
//! - link counters: the agent's own dump of every link's 64-bit counters
//!   (`RTM_GETSTATS`; its parse is a few microseconds of the figure);
//! - process descriptors: one `readlink` of every open descriptor of every process,
//!   relative to its `fd` directory held open (how the inotify holders are counted,
//!   which the kernel keeps per user but does not export). The agent reads every
//!   process this way every `--inotify.interval` (5 minutes), not every round: the
//!   floor takes its share of a round too.
//!
//! The rounds between full reads read only new processes, whose number does not
//! grow with pods.
//!
//! Each round comes after a pause as long as the agent's interval, because that is
//! what a round pays. On the machine the README's figures come from, at 500 pods,
//! the cgroup reads cost 7.0 ms after a 15 s pause, 5.5 ms made again at once, and
//! 3.0 ms a round over 200 rounds without a pause (`--every 0`): caches gone cold
//! and a virtual CPU that was asleep. The figure after a pause is the one an agent
//! can reach; the one made again at once is printed beside it.
//!
//! `cargo bench --bench kernel_floor -- [--every SECS] [--rounds N]` (defaults 15
//! and 4; one unmeasured round first). Under `cargo test` it runs one round without
//! a pause, checking only that it read this machine's processes, links and
//! descriptors.

use nodediag::collect::netns::NETNS_REREAD;
use nodediag::collect::pressure::INOTIFY_INTERVAL;
use nodediag::host::HostRoot;
use nodediag::kernel::cgroup::{self, CpuHierarchy};
use nodediag::kernel::netlink::{NetlinkSocket, NETLINK_ROUTE};
use nodediag::kernel::netns::ProcDir;
use nodediag::kernel::process::{list_processes, ProcEntry};
use nodediag::kernel::thread_cpu::thread_cpu;
use nodediag::kernel::{inotify, mountinfo, rtnetlink};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

struct Args {
    every: Duration,
    rounds: u32,
    bench: bool,
}

fn args() -> Args {
    let mut a = Args {
        every: Duration::from_secs(15),
        rounds: 4,
        bench: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} needs a whole number"))
        };
        match arg.as_str() {
            "--bench" => a.bench = true,
            "--every" => a.every = Duration::from_secs(value("--every")),
            "--rounds" => a.rounds = value("--rounds").max(1) as u32,
            // What cargo passes a test binary (filters, --nocapture ...): not ours.
            _ => {}
        }
    }
    a
}

/// Every `cpu.stat` (and on v1 `cpuacct.usage`) of the kubelet's cgroups, in the
/// hierarchy the agent reads them from, opened: on v1 with cpuacct, `cpu.stat` only
/// where a limit is set.
fn cgroup_counter_files() -> Vec<File> {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let trees = match cgroup::cpu_hierarchy(&mountinfo::parse(&table)) {
        Some(CpuHierarchy::V1 { cpu, cpuacct }) => {
            let only_limited = cpuacct.is_some();
            std::iter::once((cpu, "cpu.stat", only_limited))
                .chain(cpuacct.map(|a| (a, "cpuacct.usage", false)))
                .collect()
        }
        Some(CpuHierarchy::V2 { unified }) => vec![(unified, "cpu.stat", false)],
        None => Vec::new(),
    };
    let mut files = Vec::new();
    for (mount, name, only_limited) in trees {
        let root = Path::new(&mount.mount_point);
        if let Some(kubepods) = cgroup::find_kubepods(root) {
            let dir = cgroup::cgroup_dir(root, &kubepods);
            open_below(&dir, name, only_limited, &mut files);
        }
    }
    files
}

fn open_below(dir: &Path, name: &str, only_limited: bool, files: &mut Vec<File>) {
    if !only_limited || cgroup::read_v1_quota(dir).is_ok_and(|q| q.is_some()) {
        files.extend(File::open(dir.join(name)).ok());
    }
    for child in cgroup::child_cgroups(dir) {
        open_below(&dir.join(child), name, only_limited, files);
    }
}

fn read_counters(files: &[File]) -> usize {
    let mut buf = [0u8; 512];
    files
        .iter()
        .filter(|f| f.read_at(&mut buf, 0).is_ok())
        .count()
}

/// The agent's own full walk: each namespace link read relative to procfs held open.
fn read_process_namespaces(dir: &ProcDir, procs: &[ProcEntry]) -> usize {
    procs.iter().filter(|p| dir.netns_of(p.pid).is_ok()).count()
}

/// Every open descriptor of every other process, each link read once, as the
/// inotify count reads them.
fn read_process_descriptors(root: &HostRoot) -> usize {
    let Ok(procs) = list_processes(root) else {
        return 0;
    };
    let mut read = 0;
    // Not this process's own, as the agent skips its own: both hold the counter files.
    for p in procs.into_iter().filter(|p| p.pid != std::process::id()) {
        let fd_dir = root.proc(&[&p.pid.to_string(), "fd"]);
        let _ = inotify::each_fd_link(&fd_dir, |_, _| read += 1);
    }
    read
}

/// What one part of a round read, and the CPU it took after the pause and made
/// again at once.
#[derive(Default)]
struct Part {
    count: usize,
    after_pause: Duration,
    again: Duration,
}

impl Part {
    fn measure(&mut self, mut read: impl FnMut() -> usize, measured: bool) {
        let t0 = thread_cpu();
        self.count = read();
        let t1 = thread_cpu();
        read();
        let t2 = thread_cpu();
        if measured {
            self.after_pause += t1 - t0;
            self.again += t2 - t1;
        }
    }
}

fn ms(d: Duration, rounds: u32) -> f64 {
    d.as_secs_f64() * 1000.0 / f64::from(rounds)
}

fn main() {
    let args = args();
    let counters = cgroup_counter_files();
    let root = HostRoot::default();
    let mut route = NetlinkSocket::open(NETLINK_ROUTE).expect("a route netlink socket");
    let proc_dir = ProcDir::open(&root).expect("procfs");
    let [mut cgroups, mut listing, mut procs, mut links, mut fds]: [Part; 5] = Default::default();
    let (rounds, every) = if args.bench {
        (args.rounds, args.every)
    } else {
        (1, Duration::ZERO)
    };
    // Under cargo test: one measured round, no pause.
    let first = u32::from(args.bench);
    for round in 0..first + rounds {
        std::thread::sleep(every);
        let measured = round >= first;
        cgroups.measure(|| read_counters(&counters), measured);
        let mut listed = Vec::new();
        listing.measure(
            || {
                listed = list_processes(&root).unwrap_or_default();
                listed.len()
            },
            measured,
        );
        procs.measure(|| read_process_namespaces(&proc_dir, &listed), measured);
        links.measure(
            || rtnetlink::dump_link_stats(&mut route).map_or(0, |l| l.len()),
            measured,
        );
        fds.measure(|| read_process_descriptors(&root), measured);
    }
    if !args.bench {
        assert!(procs.count > 0, "no process namespace was readable");
        assert!(links.count > 0, "no link answered RTM_GETSTATS");
        assert!(fds.count > 0, "no process descriptor was readable");
    }
    // Rounds per full read, as the agent makes them at this interval.
    let per = |interval: Duration| match every.as_secs() {
        0 => 1,
        secs => interval.as_secs().div_ceil(secs).max(1) as u32,
    };
    println!(
        "kernel floor, {rounds} round(s) {} s apart: CPU ms a round (the same reads made again at once)",
        every.as_secs()
    );
    let mut sum = Duration::ZERO;
    for (name, what, part) in [
        ("cgroup counters", "files", &cgroups),
        ("process listing", "processes", &listing),
        ("link counters", "links", &links),
    ] {
        println!(
            "  {name:<20} {:>6} {what:<10} {:>7.2} ({:.2})",
            part.count,
            ms(part.after_pause, rounds),
            ms(part.again, rounds)
        );
        sum += part.after_pause;
    }
    for (name, part, every) in [
        ("process namespaces", &procs, per(NETNS_REREAD)),
        ("process descriptors", &fds, per(INOTIFY_INTERVAL)),
    ] {
        println!(
            "  {name:<20} {:>6} {:<10} {:>7.2} ({:.2}), every {every} round(s): {:.2}",
            part.count,
            "links",
            ms(part.after_pause, rounds),
            ms(part.again, rounds),
            ms(part.after_pause, rounds * every)
        );
        sum += part.after_pause / every;
    }
    println!("  {:<38}{:>7.2}", "floor", ms(sum, rounds));
}
