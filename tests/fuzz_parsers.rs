//! Every parser of kernel data, fed arbitrary bytes, kernel-shaped text with overlong
//! lines and numbers, and netlink-shaped attribute soup: none may panic. A parser may
//! refuse its input (an error, None); it may not take the agent down.
//!
//! Cases per parser: 512 (about 10 s for the lot in a debug build), or
//! NODEDIAG_FUZZ_CASES; a failure prints the seed that reproduces it.

use nodediag::kernel::{self, cgroup, dns, kmsg};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("NODEDIAG_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

/// Words and separators the kernel's text files are made of.
const WORDS: &[&str] = &[
    " ",
    " ",
    "\t",
    "\n",
    "\n",
    ":",
    "=",
    "/",
    "-",
    ".",
    ",",
    "some",
    "full",
    "avg10=",
    "total=",
    "nr_periods",
    "nr_throttled",
    "throttled_usec",
    "max",
    "entries",
    "kB",
    "MemTotal:",
    "nameserver",
    "search",
    "options ndots:",
    "0x",
    "\\040",
    "é",
    "容",
    "kubepods",
    "pod",
    "cpu",
    "eth0",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "clusterDNS:",
];

/// A small deterministic generator: proptest draws the seed (and shrinks it), this
/// spends it cheaply, so thousands of long inputs cost milliseconds.
struct Xorshift(u64);
impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Kernel-shaped text: words, small and overlong numbers, hex, stray characters;
/// or raw bytes read lossily; or one overlong line; or a long run of one token.
fn kernel_text() -> impl Strategy<Value = String> {
    (any::<u64>(), 0u8..8, 0usize..400).prop_map(|(seed, shape, len)| {
        let mut r = Xorshift(seed | 1);
        let mut out = String::new();
        match shape {
            0 => {
                let bytes: Vec<u8> = (0..len * 4).map(|_| r.next() as u8).collect();
                out = String::from_utf8_lossy(&bytes).into_owned();
            }
            1 => {
                let c = char::from_u32((r.next() % 0x11_0000) as u32).unwrap_or('x');
                out = c.to_string().repeat(10_000 + len * 40);
            }
            2 => out = ["9", " 9", "1 ", "\n", "ff"][r.below(5)].repeat(len * 20),
            _ => {
                for _ in 0..len {
                    match r.below(10) {
                        0 => out.push_str(&r.next().to_string()),
                        1 => out.push_str(&format!("{}{}", r.next(), r.next())),
                        2 => out.push_str(&format!("-{}", r.next() % 100_000)),
                        3 => out.push_str(&format!("{:08x}", r.next() as u32)),
                        4 => out.push_str(&(r.next() % 1000).to_string()),
                        5 => out.push(char::from_u32((r.next() % 0x3000) as u32).unwrap_or('?')),
                        _ => out.push_str(WORDS[r.below(WORDS.len())]),
                    }
                }
            }
        }
        out
    })
}

/// Netlink attributes with lengths that lie, nested or not, plus plain noise.
fn netlink_bytes() -> impl Strategy<Value = Vec<u8>> {
    let attr = (
        any::<u16>(),
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(len, kind, body)| {
            let mut a = Vec::new();
            a.extend_from_slice(&len.to_ne_bytes());
            a.extend_from_slice(&kind.to_ne_bytes());
            a.extend_from_slice(&body);
            a
        });
    prop_oneof![
        2 => prop::collection::vec(attr, 0..20).prop_map(|a| a.concat()),
        1 => prop::collection::vec(any::<u8>(), 0..1024),
    ]
}

fn run_text<R>(name: &str, parse: impl Fn(&str) -> R) {
    let mut runner = TestRunner::new(Config::with_cases(cases()));
    runner
        .run(&kernel_text(), |s| {
            let _ = parse(&s);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

fn run_bytes<R>(name: &str, parse: impl Fn(&[u8]) -> R) {
    let mut runner = TestRunner::new(Config::with_cases(cases()));
    runner
        .run(&netlink_bytes(), |b| {
            let _ = parse(&b);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn text_parsers_never_panic() {
    run_text("psi", kernel::psi::parse_psi);
    run_text("meminfo", kernel::meminfo::parse_meminfo);
    run_text("vmstat", |s| kernel::vmstat::vmstat_value(s, "oom_kill"));
    run_text("loadavg", kernel::limits::parse_loadavg_tasks);
    run_text("file-nr", kernel::limits::parse_file_nr);
    run_text("nf_conntrack stat", kernel::conntrack::parse_proc_stats);
    run_text("neighbour stat", kernel::neigh::parse_neigh_stat);
    run_text("diskstats", kernel::diskstats::parse);
    run_text("mountinfo", kernel::mountinfo::parse);
    run_text("cpu.stat", cgroup::parse_cpu_stat);
    run_text("cpu.max", cgroup::parse_cpu_max);
    run_text("cfs quota and period", |s| {
        let mid = (0..=s.len() / 2)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        cgroup::parse_v1_quota(&s[..mid], &s[mid..])
    });
    run_text("osrelease", kernel::release::parse_version);
    run_text("/proc/PID/stat", kernel::process::parse_stat);
    run_text("/proc/stat btime", kernel::process::parse_boot_time);
    run_text("status Uid", kernel::inotify::parse_status_euid);
    run_text("route v4", kernel::route::parse_default_v4);
    run_text("route v6", kernel::route::parse_default_v6);
    run_text("sysfs flags", kernel::net_class::parse_flags);
    run_text("sysfs speed", kernel::net_class::parse_speed);
    run_text("sysfs duplex", kernel::net_class::parse_duplex);
    run_text("ns link", kernel::netns::parse_ns_link);
    run_text("CNI config", kernel::cni::parse_config);
    run_text("host-local reservation", kernel::cni::parse_reservation);
    run_text("kmsg record", kmsg::parse_kmsg_record);
    run_text("syslog line", kmsg::parse_syslog_line);
    run_text("kmsg matcher", |s| {
        let mut m = kmsg::Matcher::default();
        s.lines().filter_map(|l| m.feed(l)).count()
    });
    run_text("resolv.conf", dns::resolv_conf::parse);
    run_text("kubelet config", dns::kubelet::parse_config);
    run_text("kubelet flags file", dns::kubelet::parse_flags_file);
    run_text("kubelet args", |s| {
        dns::kubelet::parse_args(s.split_whitespace())
    });
    run_text(
        "pod cgroup path",
        nodediag::collect::pods::parse_cgroup_path,
    );
    run_text("pod log dir", nodediag::collect::pods::parse_pod_log_dir);
    run_text(
        "container log name",
        nodediag::collect::pods::parse_container_log_name,
    );
    run_text("search candidates", |s| {
        let search: Vec<String> = s.split_whitespace().map(String::from).collect();
        dns::search::candidates(s, &search, 5, false)
    });
}

#[test]
fn binary_parsers_never_panic() {
    run_bytes("rtnetlink link", kernel::rtnetlink::parse_link);
    run_bytes("rtnetlink addr", kernel::rtnetlink::parse_addr);
    run_bytes("rtnetlink nsid", kernel::rtnetlink::parse_nsid);
    run_bytes("ethtool link modes", kernel::ethtool::parse_link_modes);
    run_bytes("ctnetlink stats", |b| {
        let mut stats = kernel::conntrack::ConntrackStats::default();
        kernel::ctnetlink::add_cpu_message(&mut stats, b);
        stats
    });
    run_bytes("conntrack entry", kernel::conntrack_dump::parse_entry);
    run_bytes("netlink messages", |b| {
        kernel::netlink::messages(b)
            .filter_map(Result::ok)
            .map(|m| kernel::netlink::attrs(m.payload).count())
            .sum::<usize>()
    });
    run_bytes("DNS response", dns::wire::decode_response);
    run_bytes("kmsg record framing", |b| {
        let mut records = 0;
        kmsg::RecordSplitter::default().push(b, |_| records += 1);
        records
    });
}
