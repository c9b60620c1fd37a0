//! What reading interfaces costs on a node with many pods: a private node of
//! NODEDIAG_BENCH_PODS (default 500) pod namespaces, each with a veth pair to the
//! node, an address and a process inside, built in this process's own network and
//! mount namespaces (so it needs root, and disappears with the process, also on
//! Ctrl-C). Compares:
//! - the NIC collector over rtnetlink (links kept between rounds, counters from
//!   RTM_GETSTATS) against reading every interface's sysfs directory
//!   (--no-netlink), and the dumps it is made of;
//! - looking inside every pod namespace, entering each from a helper thread (what a
//!   collection pays for each namespace that is new or changed).
//!
//! Times are CPU time (user and system) of the bench thread and of the helper threads
//! it joins, not wall time: on a machine shared with builds, wall time says more
//! about the neighbours than about the code.

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use nodediag::collect::nic::NicCollector;
use nodediag::collect::Collector;
use nodediag::host::HostRoot;
use nodediag::kernel::netlink::{NetlinkSocket, NETLINK_ROUTE};
use nodediag::kernel::netns;
use nodediag::kernel::{rtnetlink, thread_cpu};
use std::cell::Cell;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

thread_local! {
    /// Helper CPU charged to this thread so far.
    static HELPERS: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// CPU used by the measuring thread and the helper threads it joined.
fn cpu_so_far() -> Duration {
    HELPERS.with(|h| {
        h.set(h.get() + thread_cpu::take_charged());
        h.get() + thread_cpu::thread_cpu()
    })
}

struct CpuTime;

impl Measurement for CpuTime {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        cpu_so_far()
    }
    fn end(&self, start: Duration) -> Duration {
        cpu_so_far().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical >= 1e6 {
            (1e6, "ms CPU")
        } else {
            (1e3, "µs CPU")
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }
    fn scale_throughputs(&self, _: f64, _: &Throughput, _: &mut [f64]) -> &'static str {
        "ns CPU"
    }
    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns CPU"
    }
}

/// The node: this process's namespaces; the pods' processes die with it.
struct PrivateNode {
    pods: Vec<PathBuf>,
    _sleepers: Vec<Child>,
}

fn sh_batch(args: &[&str], script: &str) {
    let mut child = Command::new("ip")
        .args(args)
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("ip");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ip {args:?} -batch failed");
}

fn must(rc: libc::c_int, what: &str) {
    assert_eq!(rc, 0, "{what}: {}", std::io::Error::last_os_error());
}

impl PrivateNode {
    fn build(pods: usize) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("node_scale skipped: needs root (network namespaces)");
            return None;
        }
        // SAFETY: unshare and mount change only this process's view; the strings
        // are NUL-terminated literals.
        unsafe {
            must(
                libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS),
                "unshare",
            );
            must(
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ),
                "make / private",
            );
            // Pins (ip netns add) in a /run of our own, and a sysfs that shows this
            // namespace's interfaces.
            must(
                libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/run".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                ),
                "mount /run",
            );
            must(
                libc::mount(
                    c"sysfs".as_ptr(),
                    c"/sys".as_ptr(),
                    c"sysfs".as_ptr(),
                    0,
                    std::ptr::null(),
                ),
                "mount /sys",
            );
        }
        let mut links = String::from("link set lo up\n");
        for i in 0..pods {
            links += &format!(
                "netns add pod{i}\nlink add veth{i} type veth peer name eth0 netns pod{i}\nlink set veth{i} up\n"
            );
        }
        sh_batch(&[], &links);
        let mut sleepers = Vec::new();
        for i in 0..pods {
            let ns = format!("pod{i}");
            let n = i + 1;
            let addr = format!("10.{}.{}.{}/8", n / 65536, n / 256 % 256, n % 256);
            sh_batch(
                &["-n", &ns],
                &format!("link set lo up\nlink set eth0 up\naddr add {addr} dev eth0\n"),
            );
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &ns, "sleep", "100000"]);
            // SAFETY: prctl only, between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            sleepers.push(cmd.spawn().expect("ip netns exec"));
        }
        Some(PrivateNode {
            pods: (0..pods)
                .map(|i| PathBuf::from(format!("/run/netns/pod{i}")))
                .collect(),
            _sleepers: sleepers,
        })
    }
}

impl Drop for PrivateNode {
    fn drop(&mut self) {
        for c in &mut self._sleepers {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn bench(c: &mut Criterion<CpuTime>) {
    let pods: usize = std::env::var("NODEDIAG_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let Some(node) = PrivateNode::build(pods) else {
        return;
    };
    let root = HostRoot::default();

    let mut g = c.benchmark_group(format!("nic_{pods}_veths"));
    g.sample_size(20);
    let mut by_dump = NicCollector::new(root.clone(), true);
    let mut by_sysfs = NicCollector::new(root.clone(), false);
    let n = by_dump.collect().unwrap().interfaces.len();
    assert_eq!(n, by_sysfs.collect().unwrap().interfaces.len());
    assert!(n > pods, "{n} interfaces");
    // As each round after the first runs: links kept, counters dumped.
    g.bench_function("collect_netlink", |b| {
        b.iter(|| black_box(by_dump.collect().unwrap()))
    });
    // The first round: subscribing, then one full link dump.
    g.bench_function("collect_netlink_first", |b| {
        b.iter(|| black_box(NicCollector::new(root.clone(), true).collect().unwrap()))
    });
    g.bench_function("collect_sysfs", |b| {
        b.iter(|| black_box(by_sysfs.collect().unwrap()))
    });
    let mut sock = NetlinkSocket::open(NETLINK_ROUTE).unwrap();
    g.bench_function("link_dump", |b| {
        b.iter(|| black_box(rtnetlink::dump_links_on(&mut sock).unwrap()))
    });
    g.bench_function("link_dump_without_stats", |b| {
        b.iter(|| black_box(rtnetlink::dump_links_without_stats(&mut sock).unwrap()))
    });
    g.bench_function("stats_dump", |b| {
        b.iter(|| black_box(rtnetlink::dump_link_stats(&mut sock).unwrap()))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("netns_{pods}_pods"));
    g.sample_size(10);
    let host = PathBuf::from(netns::OWN);
    let targets: Vec<(PathBuf, u64)> = node
        .pods
        .iter()
        .map(|p| (p.clone(), std::fs::metadata(p).unwrap().ino()))
        .collect();
    let read = netns::enter_each(host.clone(), targets.clone()).unwrap();
    assert!(read.iter().all(|t| t.nsid.is_some() && t.view.is_ok()));
    // What a collection pays for each namespace it has not read yet or that changed.
    g.bench_function("enter_each", |b| {
        b.iter(|| black_box(netns::enter_each(host.clone(), targets.clone()).unwrap()))
    });
    g.finish();
    drop(node);
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(CpuTime);
    targets = bench
}
criterion_main!(benches);
