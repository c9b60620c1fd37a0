//! The kernel's floor under a collection round on this node: the reads whose number
//! grows with pods, made bare, at the agent's cadence, with no parsing and nothing
//! kept but the descriptors. What nodediag spends above it is its own.
//!
//! - cgroup counters: one `pread` of `cpu.stat` (and, on cgroup v1, of
//!   `cpuacct.usage`) of every cgroup under a `kubepods` directory, files held open;
//! - process namespaces: listing `/proc` and one `readlink` of `ns/net` a process;
//! - link counters: one `RTM_GETSTATS` dump of every link's 64-bit counters.
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
//! a pause, checking only that it read this machine's processes and links.

use nodediag::kernel::mountinfo;
use nodediag::kernel::thread_cpu::thread_cpu;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
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

/// Every `cpu.stat` and `cpuacct.usage` below a `kubepods` directory of the v1 cpu
/// and cpuacct hierarchies, or of the unified one where no v1 hierarchy has the cpu
/// controller (as the agent chooses), opened.
fn cgroup_counter_files() -> Vec<File> {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = mountinfo::parse(&table);
    let points = |keep: &dyn Fn(&mountinfo::Mount) -> bool| {
        let mut points: Vec<PathBuf> = Vec::new();
        for m in mounts.iter().filter(|m| keep(m)) {
            if !points.iter().any(|p| p == Path::new(&m.mount_point)) {
                points.push(m.mount_point.clone().into());
            }
        }
        points
    };
    let mut roots = points(&|m| {
        m.fstype == "cgroup" && (m.has_super_option("cpu") || m.has_super_option("cpuacct"))
    });
    if roots.is_empty() {
        roots = points(&|m| m.fstype == "cgroup2");
    }
    let mut files = Vec::new();
    for root in roots {
        collect_counters(&root, false, &mut files);
    }
    files
}

fn collect_counters(dir: &Path, in_pods: bool, files: &mut Vec<File>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_counters(&e.path(), in_pods || name.starts_with("kubepods"), files);
        } else if in_pods && (name == "cpu.stat" || name == "cpuacct.usage") {
            files.extend(File::open(e.path()).ok());
        }
    }
}

fn read_counters(files: &[File]) -> usize {
    let mut buf = [0u8; 512];
    files
        .iter()
        .filter(|f| f.read_at(&mut buf, 0).is_ok())
        .count()
}

fn read_process_namespaces() -> usize {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| e.file_name().as_encoded_bytes()[0].is_ascii_digit())
        .filter(|e| fs::read_link(e.path().join("ns/net")).is_ok())
        .count()
}

/// A route socket and a buffer for its dumps.
struct Route {
    fd: std::os::fd::OwnedFd,
    buf: Vec<u8>,
    seq: u32,
}

impl Route {
    fn open() -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: socket(2) returns a new descriptor or -1, checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: fd is a new descriptor no one else owns.
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
            buf: vec![0; 1 << 16],
            seq: 0,
        })
    }

    /// Dumps every link's IFLA_STATS_LINK_64; returns how many links answered.
    fn link_counters(&mut self) -> usize {
        use std::os::fd::AsRawFd;
        const RTM_GETSTATS: u16 = 94;
        const IFLA_STATS_LINK_64: u32 = 1;
        self.seq += 1;
        // nlmsghdr (16 bytes), then if_stats_msg (12): family, pads, ifindex, filter_mask.
        let mut req = [0u8; 28];
        req[0..4].copy_from_slice(&28u32.to_ne_bytes());
        req[4..6].copy_from_slice(&RTM_GETSTATS.to_ne_bytes());
        req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
        req[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        req[24..28].copy_from_slice(&(1u32 << (IFLA_STATS_LINK_64 - 1)).to_ne_bytes());
        let fd = self.fd.as_raw_fd();
        // SAFETY: req is a valid buffer of its length for the call.
        if unsafe { libc::send(fd, req.as_ptr().cast(), req.len(), 0) } < 0 {
            return 0;
        }
        let mut links = 0;
        loop {
            // SAFETY: buf is a valid, writable buffer of its length.
            let n = unsafe { libc::recv(fd, self.buf.as_mut_ptr().cast(), self.buf.len(), 0) };
            if n <= 0 {
                return links;
            }
            let mut at = 0;
            while at + 16 <= n as usize {
                let len = u32::from_ne_bytes(self.buf[at..at + 4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(self.buf[at + 4..at + 6].try_into().unwrap());
                if kind == libc::NLMSG_DONE as u16 || kind == libc::NLMSG_ERROR as u16 {
                    return links;
                }
                links += 1;
                at += len.max(16).next_multiple_of(4);
            }
        }
    }
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
    let mut route = Route::open().expect("a route netlink socket");
    let (mut cgroups, mut procs, mut links) = (Part::default(), Part::default(), Part::default());
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
        procs.measure(read_process_namespaces, measured);
        links.measure(|| route.link_counters(), measured);
    }
    if !args.bench {
        assert!(procs.count > 0, "no process namespace was readable");
        assert!(links.count > 0, "no link answered RTM_GETSTATS");
    }
    println!(
        "kernel floor, {rounds} round(s) {} s apart: CPU ms a round (the same reads made again at once)",
        every.as_secs()
    );
    let mut sum = Duration::ZERO;
    for (name, what, part) in [
        ("cgroup counters", "files", &cgroups),
        ("process namespaces", "processes", &procs),
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
    println!("  {:<38}{:>7.2}", "floor", ms(sum, rounds));
}
