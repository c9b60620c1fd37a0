//! Cost of one cgroup collection with 300 containers (100 pods of 3), and of what
//! reads its samples afterwards (window math for the API, the rules' evaluation,
//! metrics) or keeps them (a sample recorded into a full window).
//!
//! `collect/tree`: a cgroup v1 tree of plain files (any machine).
//! `collect/cgroupfs`: the same pods as real cgroups in the host's v1 cpu and cpuacct
//! hierarchies, when run as root on a v1 host; removed afterwards.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use nodediag::collect::cgroup::CgroupCollector;
use nodediag::collect::{CgroupSample, Collector};
use nodediag::diagnose::cgroup::{rules, throttling, Thresholds};
use nodediag::diagnose::RuleContext;
use nodediag::host::HostRoot;
use nodediag::metrics::exposition::Format;
use nodediag::signals;
use nodediag::store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const PODS: usize = 100;
const CONTAINERS_PER_POD: usize = 3;

fn uid(i: usize) -> String {
    format!("5e1d0c9b-8a7f-4e6d-9c5b-{i:012x}")
}

fn cid(pod: usize, c: usize) -> String {
    format!("{:0>64}", format!("{pod:x}f{c:x}"))
}

/// Every pod and container path under a kubepods hierarchy root.
fn paths() -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for p in 0..PODS {
        let pod = format!("kubepods/burstable/pod{}", uid(p));
        out.push((pod.clone(), false));
        for c in 0..CONTAINERS_PER_POD {
            out.push((format!("{pod}/{}", cid(p, c)), true));
        }
    }
    out
}

fn file_tree(base: &Path) -> HostRoot {
    let w = |rel: &str, text: &str| {
        let p = base.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w(
        "proc/1/mountinfo",
        "30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n",
    );
    w("proc/sys/kernel/osrelease", "5.15.0\n");
    for (path, _) in paths() {
        let dir = format!("sys/fs/cgroup/cpu,cpuacct/{path}");
        w(&format!("{dir}/cpu.cfs_quota_us"), "50000\n");
        w(&format!("{dir}/cpu.cfs_period_us"), "100000\n");
        w(
            &format!("{dir}/cpu.stat"),
            "nr_periods 1200\nnr_throttled 300\nthrottled_time 4500000000\nnr_bursts 0\nburst_time 0\n",
        );
        w(&format!("{dir}/cpuacct.usage"), "30000000000\n");
    }
    for p in 0..PODS {
        w(
            &format!("rootfs/var/log/pods/bench_pod-{p}_{}/c/0.log", uid(p)),
            "",
        );
        for c in 0..CONTAINERS_PER_POD {
            w(
                &format!(
                    "rootfs/var/log/containers/pod-{p}_bench_c{c}-{}.log",
                    cid(p, c)
                ),
                "",
            );
        }
    }
    HostRoot {
        proc: base.join("proc"),
        sys: base.join("sys"),
        rootfs: base.join("rootfs"),
    }
}

/// Real cgroups in the host's v1 cpu (and cpuacct) hierarchies; removed on drop.
struct RealCgroups {
    dirs: Vec<PathBuf>,
}

impl RealCgroups {
    fn create() -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let cpu = PathBuf::from("/sys/fs/cgroup/cpu");
        if !cpu.join("cpu.cfs_quota_us").exists() || cpu.join("kubepods").exists() {
            return None;
        }
        let acct = PathBuf::from("/sys/fs/cgroup/cpuacct");
        let mut hierarchies = vec![cpu.clone()];
        if acct.join("cpuacct.usage").exists() {
            hierarchies.push(acct);
        }
        let mut dirs = Vec::new();
        for h in &hierarchies {
            for top in ["kubepods", "kubepods/burstable"] {
                dirs.push(h.join(top));
            }
            for (path, _) in paths() {
                dirs.push(h.join(path));
            }
        }
        let me = RealCgroups { dirs };
        for d in &me.dirs {
            std::fs::create_dir(d).ok()?;
        }
        for (path, _) in paths() {
            std::fs::write(cpu.join(&path).join("cpu.cfs_quota_us"), "50000").ok()?;
        }
        Some(me)
    }
}

impl Drop for RealCgroups {
    fn drop(&mut self) {
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let root = file_tree(tmp.path());
    let mut collector = CgroupCollector::new(root, None);
    let sample = collector.collect().expect("a cgroup sample");
    assert_eq!(
        sample.containers().count(),
        PODS * CONTAINERS_PER_POD,
        "{:?}",
        sample.unavailable
    );
    let mut group = c.benchmark_group("collect");
    group.sample_size(20);
    group.bench_function("tree_300_containers", |b| {
        b.iter(|| collector.collect().unwrap())
    });
    if let Some(real) = RealCgroups::create() {
        let mut host = CgroupCollector::new(HostRoot::default(), None);
        let n = host
            .collect()
            .expect("a cgroup sample")
            .containers()
            .count();
        assert!(n >= PODS * CONTAINERS_PER_POD, "{n} containers");
        // Rounds after the first: counter files held open, limits known.
        group.bench_function("cgroupfs_300_containers", |b| {
            b.iter(|| host.collect().unwrap())
        });
        // A first round: every file opened by path, every limit read.
        group.bench_function("cgroupfs_300_containers_first_round", |b| {
            b.iter(|| {
                CgroupCollector::new(HostRoot::default(), None)
                    .collect()
                    .unwrap()
            })
        });
        drop(real);
    } else {
        eprintln!("collect/cgroupfs_300_containers skipped: needs root on a cgroup v1 host without kubepods");
    }
    group.finish();

    let t0 = SystemTime::now();
    let store = window(&sample, t0, |_| true);
    let snap = store.snapshot();
    c.bench_function("window/throttling_300_containers_21_samples", |b| {
        b.iter(|| throttling(&snap.history::<CgroupSample>(), snap.window))
    });
    let ctx = RuleContext {
        window: snap.window,
    };
    let thresholds = Thresholds::default();
    let mut out = Vec::new();
    c.bench_function(
        "window/rules_300_containers_21_samples_all_throttled",
        |b| {
            b.iter(|| {
                out.clear();
                rules(&snap, &thresholds, &ctx, &mut out)
            })
        },
    );
    assert_eq!(
        out.len(),
        PODS * CONTAINERS_PER_POD,
        "every container cpu_throttled"
    );
    // The rules follow through the window only cgroups throttled at some time.
    let few = window(&sample, t0, |i| i % 10 == 0).snapshot();
    c.bench_function(
        "window/rules_300_containers_21_samples_one_in_ten_throttled",
        |b| {
            b.iter(|| {
                out.clear();
                rules(&few, &thresholds, &ctx, &mut out)
            })
        },
    );
    assert_eq!(out.len(), PODS * CONTAINERS_PER_POD / 10);
    c.bench_function("metrics/render_300_containers", |b| {
        b.iter(|| signals::metrics_exposition(store.clone()).encode(Format::Text))
    });
    // A new sample into a full window: the one it replaces as the newest is cut down
    // to the counters the rules read of older samples.
    let mut next = 21u64;
    c.bench_function("window/record_300_containers", |b| {
        b.iter_batched(
            || Arc::new(sample.clone()),
            |s| {
                let at = t0 + Duration::from_secs(15 * next);
                next += 1;
                store.record("cgroup", at, Duration::ZERO, Ok(s));
            },
            BatchSize::SmallInput,
        )
    });
}

/// 21 samples of `sample`, a 5 minute window at the 15 s default interval. The
/// containers `throttled` picks (by their place in the sample) are throttled in
/// about a quarter of their periods; the others have never been.
fn window(sample: &CgroupSample, t0: SystemTime, throttled: impl Fn(usize) -> bool) -> Arc<Store> {
    let store = Arc::new(Store::new("bench".into(), Duration::from_secs(300)));
    store.register("cgroup", Duration::from_secs(15));
    let mut keys = Arc::from([]);
    for i in 0..21u64 {
        let mut s: CgroupSample = sample.clone();
        let containers = s.pods.iter_mut().flat_map(|p| p.containers.iter_mut());
        for (n, c) in containers.enumerate() {
            let stat = &mut c.cgroup.stat;
            stat.nr_periods += i * 150;
            if throttled(n) {
                stat.nr_throttled += i * 40;
            } else {
                (stat.nr_throttled, stat.throttled_ns) = (0, 0);
            }
        }
        // As the collector packs them, sharing the last round's keys.
        s.counters = s.pack_counters(&keys);
        keys = s.counters.keys().clone();
        store.record(
            "cgroup",
            t0 + Duration::from_secs(15 * i),
            Duration::ZERO,
            Ok(Arc::new(s)),
        );
    }
    store
}

criterion_group!(benches, bench);
criterion_main!(benches);
