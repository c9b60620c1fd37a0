//! What the pressure and kmsg collectors cost: a full pressure sample of this host
//! (the /proc walk for inotify dominates), the inotify walk alone and a round
//! between two of them, and matching kernel log records as the follower thread does.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use nodediag::collect::kmsg::Journal;
use nodediag::collect::pressure::{PressureCollector, INOTIFY_INTERVAL};
use nodediag::collect::Collector;
use nodediag::host::HostRoot;
use nodediag::kernel::inotify::InotifyCount;
use nodediag::kernel::kmsg::parse_kmsg_record;
use std::time::{Duration, SystemTime};

fn records() -> Vec<String> {
    let noise = [
        "6,{s},{t},-;IPv6: ADDRCONF(NETDEV_CHANGE): veth12ab34cd: link becomes ready",
        "6,{s},{t},-;cni0: port 3(veth12ab34cd) entered forwarding state",
        "4,{s},{t},-;nf_conntrack: nf_conntrack: table full, dropping packet",
        "6,{s},{t},-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/kubepods/burstable/pod0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9,task_memcg=/kubepods/burstable/pod0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9/4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d,task=app,pid=1874,uid=0",
        "3,{s},{t},-;Memory cgroup out of memory: Killed process 1874 (app) total-vm:40996kB, anon-rss:32000kB, file-rss:1608kB, shmem-rss:0kB, UID:0 pgtables:116kB oom_score_adj:0",
        "6,{s},{t},-;EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.",
        "0,{s},{t},-;unregister_netdevice: waiting for lo to become free. Usage count = 1",
        "6,{s},{t},-;eth0: renamed from veth9f8e7d6c",
    ];
    (0..1000)
        .map(|i| {
            noise[i % noise.len()]
                .replace("{s}", &i.to_string())
                .replace("{t}", &(1_000_000 + i * 1000).to_string())
        })
        .collect()
}

fn kernel_log(c: &mut Criterion) {
    let lines = records();
    let mut g = c.benchmark_group("kmsg");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("parse_and_match_1000_records", |b| {
        b.iter(|| {
            let mut j = Journal::default();
            let now = SystemTime::now();
            for l in &lines {
                if let Some(r) = parse_kmsg_record(l) {
                    j.ingest(r, now);
                }
            }
            black_box(j)
        })
    });
    g.finish();
}

fn host(c: &mut Criterion) {
    let root = HostRoot::default();
    let mut g = c.benchmark_group("pressure");
    g.sample_size(20);
    g.bench_function("inotify_scan_of_this_host", |b| {
        b.iter(|| black_box(nodediag::kernel::inotify::scan(&root).unwrap()))
    });
    // A round between full reads: only new processes and the holders' watches.
    let mut count = InotifyCount::new(1);
    count.count(&root, true).unwrap();
    g.bench_function("inotify_followed_round_of_this_host", |b| {
        b.iter(|| black_box(count.count(&root, false).unwrap()))
    });
    let mut collector =
        PressureCollector::new(root.clone(), Duration::from_secs(15), INOTIFY_INTERVAL);
    g.bench_function("collect_on_this_host", |b| {
        b.iter(|| black_box(collector.collect().unwrap()))
    });
    g.finish();
}

criterion_group!(benches, kernel_log, host);
criterion_main!(benches);
