//! Cost of /metrics for a store holding a large node (500 interfaces, conntrack
//! statistics, findings) in each exposition format: encoding samples the exposition
//! has not seen (done once per round, ahead of the scrape), and a scrape between
//! rounds (what Prometheus waits for); text also in gzip, as Prometheus asks for it.
//! Neither does kernel I/O.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nodediag::collect::nic::{Nic, NicClass};
use nodediag::collect::{ConntrackSample, NicSample};
use nodediag::diagnose::{Finding, Severity};
use nodediag::kernel::conntrack::ConntrackStats;
use nodediag::kernel::net_class::{Duplex, NicCounters};
use nodediag::metrics::exposition::Format;
use nodediag::signals;
use nodediag::store::Store;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn large_node() -> Store {
    let store = Store::new("bench-node".into(), Duration::from_secs(300));
    store.register("nic", Duration::from_secs(15));
    store.register("conntrack", Duration::from_secs(15));
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
    store.record(
        "nic",
        now,
        Duration::from_millis(3),
        Ok(Arc::new(NicSample {
            interfaces,
            unavailable: vec![],
        })),
    );
    store.record(
        "conntrack",
        now,
        Duration::from_millis(1),
        Ok(Arc::new(ConntrackSample {
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
        })),
    );
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
    store
}

fn encode(c: &mut Criterion) {
    let store = Arc::new(large_node());
    let exposition = signals::metrics_exposition(store.clone());
    let size = exposition.encode(Format::Text).expect("encodes").len();
    let mut group = c.benchmark_group("metrics_encode_500_interfaces");
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
    group.bench_function("text_0.0.4_gzip/scrape", |b| {
        b.iter(|| exposition.scrape(Format::Text, true))
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
