//! Cost of /metrics for a store holding a large node (500 pods, each a CPU-limited
//! cgroup with one container, and 500 interfaces, conntrack statistics, findings)
//! in each exposition format: encoding samples the exposition
//! has not seen (done once per round, ahead of the scrape), and a scrape between
//! rounds (what Prometheus waits for); text also in gzip, as Prometheus asks for it,
//! and there also a round whose links and limits are those of the last.
//! Neither does kernel I/O.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use nodediag::collect::cgroup::{CgroupVersion, ContainerCpu, CpuCgroup, PodCpu};
use nodediag::collect::nic::{Nic, NicClass};
use nodediag::collect::pods::Qos;
use nodediag::collect::{CgroupSample, ConntrackSample, NicSample};
use nodediag::diagnose::{Finding, Severity};
use nodediag::kernel::cgroup::{CpuQuota, CpuStat};
use nodediag::kernel::conntrack::ConntrackStats;
use nodediag::kernel::net_class::{Duplex, NicCounters};
use nodediag::metrics::exposition::Format;
use nodediag::signals;
use nodediag::store::Store;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One round's samples of the large node.
struct Round {
    nic: Arc<NicSample>,
    conntrack: Arc<ConntrackSample>,
    cgroup: Arc<CgroupSample>,
}

impl Round {
    /// Recorded as a new collection of each collector.
    fn record(&self, store: &Store) {
        let now = SystemTime::now();
        store.record("nic", now, Duration::from_millis(3), Ok(self.nic.clone()));
        let conntrack = self.conntrack.clone();
        store.record("conntrack", now, Duration::from_millis(1), Ok(conntrack));
        store.record(
            "cgroup",
            now,
            Duration::from_millis(9),
            Ok(self.cgroup.clone()),
        );
    }
}

fn large_node() -> (Store, Round) {
    let store = Store::new("bench-node".into(), Duration::from_secs(300));
    store.register("nic", Duration::from_secs(15));
    store.register("conntrack", Duration::from_secs(15));
    store.register("cgroup", Duration::from_secs(15));
    let interfaces = (0..500)
        .map(|i| Nic {
            name: if i < 4 {
                format!("eth{i}")
            } else {
                format!("veth{i:08x}")
            }
            .into(),
            class: if i < 4 {
                NicClass::Physical
            } else {
                NicClass::Virtual
            },
            kind: Some(if i < 4 { "ixgbe" } else { "veth" }.into()),
            admin_up: true,
            operstate: "up".into(),
            carrier: Some(true),
            speed_mbps: (i < 4).then_some(25_000),
            duplex: (i < 4).then_some(Duplex::Full),
            mtu: Some(1500),
            counters: NicCounters {
                rx_packets: Some(1_000_000 + i),
                tx_packets: Some(900_000 + i),
                rx_errors: Some(0),
                tx_errors: Some(0),
                rx_dropped: Some(i),
                tx_dropped: Some(0),
            },
            link_modes: None,
            link_modes_error: None,
        })
        .collect();
    let now = SystemTime::now();
    let round = Round {
        nic: Arc::new(NicSample {
            interfaces,
            unavailable: vec![],
        }),
        conntrack: Arc::new(ConntrackSample {
            entries: 120_000,
            max: 262_144,
            buckets: Some(65_536),
            stats: Some(ConntrackStats {
                found: Some(1),
                insert_failed: Some(3),
                drop: Some(0),
                ..Default::default()
            }),
            stats_source: None,
            peak: None,
            top: None,
            unavailable: vec![],
        }),
        cgroup: Arc::new(CgroupSample {
            version: CgroupVersion::V1,
            mount_point: "/sys/fs/cgroup/cpu,cpuacct".into(),
            kubepods: Some("/kubepods".into()),
            kernel_release: Some("6.1.0".into()),
            cfs_bandwidth_fix: Some(true),
            pods: (0..500u64).map(pod).collect(),
            unavailable: vec![],
            counters: Default::default(),
        }),
    };
    round.record(&store);
    store.set_findings(
        (0..20)
            .map(|i| {
                Finding::new(
                    &nodediag::diagnose::nic::ERRORS,
                    Severity::Warning,
                    format!("veth{i:08x}"),
                    "errors",
                    now,
                )
            })
            .collect(),
    );
    (store, round)
}

/// A burstable pod of a Deployment, its cgroup and its one container's limited.
fn pod(i: u64) -> PodCpu {
    let uid = format!("{i:08x}-9d8e-4f7a-b6c5-d4e3f2a1b0c9");
    let cgroup = |path: String, quota_us| CpuCgroup {
        path: path.into(),
        quota: Some(CpuQuota {
            quota_us,
            period_us: 100_000,
        }),
        stat: CpuStat {
            nr_periods: 10_000 + i,
            nr_throttled: i % 17,
            throttled_ns: (i % 17) * 3_000_000,
            usage_ns: Some(90_000_000_000 + i * 1_000_003),
        },
    };
    let id = format!("{i:016x}{:048x}", i * 7919);
    PodCpu {
        pod_uid: uid.as_str().into(),
        qos: Qos::Burstable,
        namespace: Some(format!("team-{}", i % 23).into()),
        pod: Some(format!("web-{}-7f9c5d8b4-{i:05}", i % 41).into()),
        cgroup: cgroup(format!("/kubepods/burstable/pod{uid}"), 50_000),
        containers: vec![ContainerCpu {
            container_id: id.as_str().into(),
            runtime: None,
            container: Some("app".into()),
            cgroup: cgroup(format!("/kubepods/burstable/pod{uid}/{id}"), 50_000),
        }],
    }
}

fn encode(c: &mut Criterion) {
    let (store, round) = large_node();
    let store = Arc::new(store);
    let exposition = signals::metrics_exposition(store.clone());
    let text = String::from_utf8(exposition.encode(Format::Text).expect("encodes")).unwrap();
    // The bench measures what it says only if every pod's series are in it.
    let pods = text
        .lines()
        .filter(|l| {
            l.starts_with("nodediag_cgroup_cpu_limit_cores{") && l.contains("container=\"app\"")
        })
        .count();
    assert_eq!(pods, 500, "one limit series per pod's container");
    let size = text.len();
    let mut group = c.benchmark_group("metrics_encode_500_pods");
    group.throughput(Throughput::Bytes(size as u64));
    for (name, format) in [
        ("text_0.0.4", Format::Text),
        ("openmetrics", Format::OpenMetrics),
        ("protobuf", Format::Protobuf),
    ] {
        // Samples the exposition has not encoded yet: what warming after a round
        // costs, or a scrape that comes first.
        group.bench_function(format!("{name}/new_samples"), |b| {
            b.iter(|| signals::metrics_exposition(store.clone()).encode(format))
        });
        // Samples encoded already: what a scrape costs between rounds.
        group.bench_function(format!("{name}/scrape"), |b| {
            b.iter(|| exposition.encode(format))
        });
    }
    // gzip: the signals compressed once per encoding, the rest at each scrape.
    group.bench_function("text_0.0.4_gzip/new_samples", |b| {
        b.iter(|| signals::metrics_exposition(store.clone()).scrape(Format::Text, true))
    });
    // A round in which no pod came, went or was resized and no link changed: the
    // counters encoded again, the limits and links kept.
    let kept = signals::metrics_exposition(store.clone());
    kept.scrape(Format::Text, true).unwrap();
    group.bench_function("text_0.0.4_gzip/next_round", |b| {
        b.iter_batched(
            || round.record(&store),
            |()| kept.scrape(Format::Text, true),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("text_0.0.4_gzip/scrape", |b| {
        b.iter(|| exposition.scrape(Format::Text, true))
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
