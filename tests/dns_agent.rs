//! The dns collector end to end on a real resolver: the agent runs in the node
//! namespace of tests/common/dns.rs (dnsmasq behind a kube-proxy-style DNAT, the
//! node's own conntrack in the path), finds the pod-like namespaces itself (a process
//! in each, in a pod cgroup, named by kubelet log directories under a temporary
//! --path.rootfs whose kubelet config gives the cluster DNS), and probes them from
//! the inside. Each test breaks the DNS path one way and waits for the finding.

mod common;

use common::conntrack::ConntrackMax;
use common::dns::{DnsLab, SERVER_IP, SERVICE_IP};
use common::{wait_for, Agent, BIN};
use serde_json::Value;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup/pids";

/// Held for reading by every test here and for writing by the one that lowers the
/// global nf_conntrack_max, which would drop the others' DNS flows in their node
/// namespaces meanwhile.
static CONNTRACK_LIMIT: std::sync::RwLock<()> = std::sync::RwLock::new(());
const SERVER: &str = "10.96.0.10";

/// How a pod's /etc/resolv.conf looks from inside.
enum Resolv {
    /// What the kubelet writes for ClusterFirst.
    Kubelet,
    /// This text instead.
    Text(&'static str),
    /// A FIFO: reading it would block, the collector must refuse it.
    Fifo,
}

struct PodProc {
    child: Option<Child>,
    cgroup: PathBuf,
}

/// Pod-like processes in the lab's pod namespaces, named through a temporary rootfs;
/// all removed on drop.
struct Pods {
    tag: String,
    /// The Kubernetes namespace of every pod here; the agent probes only these.
    namespace: String,
    rootfs: tempfile::TempDir,
    pods: Vec<PodProc>,
}

impl Drop for Pods {
    fn drop(&mut self) {
        for p in &mut self.pods {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::remove_dir(&p.cgroup);
            if let Some(pod) = p.cgroup.parent() {
                let _ = std::fs::remove_dir(pod);
            }
        }
        // Shared with other tests: removed only when empty.
        let _ = std::fs::remove_dir(Path::new(CGROUP_ROOT).join("kubepods/burstable"));
        let _ = std::fs::remove_dir(Path::new(CGROUP_ROOT).join("kubepods"));
    }
}

impl Pods {
    /// None when the cgroup v1 pids hierarchy the pods are placed in is missing.
    fn new(tag: u32) -> Option<Pods> {
        if !Path::new(CGROUP_ROOT).join("cgroup.procs").exists() {
            common::skip(&format!("no cgroup v1 pids controller at {CGROUP_ROOT}"));
            return None;
        }
        let pid = std::process::id();
        let rootfs = tempfile::tempdir().unwrap();
        let kubelet = rootfs.path().join("var/lib/kubelet");
        std::fs::create_dir_all(&kubelet).unwrap();
        std::fs::write(
            kubelet.join("config.yaml"),
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                 clusterDNS:\n- {SERVICE_IP}\nclusterDomain: cluster.local\n"
            ),
        )
        .unwrap();
        std::fs::create_dir_all(rootfs.path().join("var/log/containers")).unwrap();
        Some(Pods {
            tag: format!("{pid:x}d{tag}"),
            namespace: format!("dnstest-{pid}-{tag}"),
            rootfs,
            pods: Vec::new(),
        })
    }

    fn rootfs(&self) -> &str {
        self.rootfs.path().to_str().unwrap()
    }

    /// `namespace/web-i`, as the agent names the pod.
    fn name(&self, i: usize) -> String {
        format!("{}/web-{i}", self.namespace)
    }

    /// Starts pod `i`'s process in the lab's pod namespace `i`, with its resolv.conf
    /// bind-mounted over /etc/resolv.conf in the process's own mount namespace (which
    /// `ip netns exec` makes, slave to the host's: nothing leaks out), in a pod
    /// cgroup, with the kubelet's log directories naming it.
    fn start(&mut self, lab: &DnsLab, i: usize, resolv: Resolv) {
        let file = match resolv {
            Resolv::Kubelet => lab.resolv_conf(i),
            Resolv::Text(t) => {
                std::fs::write(lab.resolv_conf(i), t).unwrap();
                lab.resolv_conf(i)
            }
            Resolv::Fifo => {
                let fifo = lab.dir.path().join(format!("pod{i}-fifo"));
                let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
                // SAFETY: mkfifo on a NUL-terminated path in our temporary directory.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
                fifo
            }
        };
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.pod_ns[i], "sh", "-c"])
            .arg("mount --bind \"$0\" /etc/resolv.conf && exec sleep 600")
            .arg(&file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the pod's process");
        let pid = child.id();
        let uid = format!("{:0>8}-d00d-4000-8000-{i:012x}", self.tag);
        let container = format!("{:0>64}", format!("{}c{i}", self.tag));
        let cgroup = Path::new(CGROUP_ROOT)
            .join("kubepods/burstable")
            .join(format!("pod{uid}"))
            .join(&container);
        let name = format!("web-{i}");
        self.pods.push(PodProc {
            child: Some(child),
            cgroup: cgroup.clone(),
        });
        // Once it runs sleep, the bind mount is in place.
        wait_for(
            "the pod's process to settle",
            Duration::from_secs(10),
            || {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                (comm.trim() == "sleep").then_some(())
            },
        );
        std::fs::create_dir_all(&cgroup).unwrap();
        std::fs::write(cgroup.join("cgroup.procs"), pid.to_string()).unwrap();
        let logs = self.rootfs.path().join("var/log");
        std::fs::create_dir_all(logs.join(format!("pods/{}_{name}_{uid}/app", self.namespace)))
            .unwrap();
        std::fs::write(
            logs.join(format!(
                "containers/{name}_{}_app-{container}.log",
                self.namespace
            )),
            "",
        )
        .unwrap();
    }

    /// The agent in the node namespace, probing these pods every `interval`.
    fn agent(&self, lab: &DnsLab, interval: &str, extra: &[&str]) -> Agent {
        let mut args = vec![
            "--path.rootfs",
            self.rootfs(),
            "--collector.dns.interval",
            interval,
            "--interval",
            "1s",
            "--dns.pod-namespace",
            &self.namespace,
            "--dns.pods",
            "4",
            "--no-collector.disk",
            "--no-collector.nic",
            "--no-collector.cgroup",
            "--no-collector.kmsg",
            "--no-collector.netns",
            "--no-collector.pressure",
        ];
        args.extend_from_slice(extra);
        let agent = Agent::start_in_netns(&lab.node_ns, &args);
        agent.wait_ready();
        agent
    }

    /// `nodediag check` in the node namespace with the same view of the node.
    fn check(&self, lab: &DnsLab, extra: &[&str]) -> (i32, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.node_ns, BIN, "check"])
            .args(["--path.rootfs", self.rootfs()])
            .args(["--dns.pod-namespace", &self.namespace, "--dns.pods", "4"])
            .args(extra)
            .output()
            .expect("run nodediag check");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

fn dns_findings(agent: &Agent) -> Vec<Value> {
    agent.get_json("/api/v1/findings")["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"].as_str().unwrap_or("").starts_with("dns_"))
        .cloned()
        .collect()
}

fn finding(agent: &Agent, id: &str) -> Option<Value> {
    dns_findings(agent).into_iter().find(|f| f["id"] == id)
}

/// The DNS view once it holds `rounds` rounds.
fn view_after(agent: &Agent, rounds: u64) -> Value {
    wait_for(
        &format!("{rounds} DNS rounds"),
        Duration::from_secs(60),
        || {
            let v = agent.get_json("/api/v1/dns");
            (v["rounds"].as_u64()? >= rounds).then_some(v)
        },
    )
}

fn target<'a>(view: &'a Value, name: &str) -> Option<&'a Value> {
    view["targets"]
        .as_array()?
        .iter()
        .find(|t| t["target"] == name)
}

fn lab_and_pods(tag: u32, label: &str, pods: usize) -> Option<(DnsLab, Pods)> {
    let lab = DnsLab::new(label, pods)?;
    let p = Pods::new(tag)?;
    Some((lab, p))
}

#[test]
fn healthy_pods_are_probed_from_inside_and_bad_resolv_confs_are_named() {
    let _shared = CONNTRACK_LIMIT.read().unwrap_or_else(|e| e.into_inner());
    let Some((lab, mut pods)) = lab_and_pods(1, "agok", 4) else {
        return;
    };
    pods.start(&lab, 0, Resolv::Kubelet);
    pods.start(&lab, 1, Resolv::Kubelet);
    // glibc skips the two bad lines and keeps the rest; the probe does the same.
    pods.start(
        &lab,
        2,
        Resolv::Text(
            "nameserver kube-dns.kube-system\n\u{1}\u{ff}garbage\n\
             search dnstest.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5\n",
        ),
    );
    pods.start(&lab, 3, Resolv::Fifo);
    let agent = pods.agent(&lab, "4s", &[]);
    let v = view_after(&agent, 3);

    assert_eq!(v["status"]["state"], "ok", "{v:#}");
    assert_eq!(v["server"]["source"], "kubelet");
    assert_eq!(v["server"]["address"], format!("{SERVICE_IP}:53"));
    assert_eq!(v["server"]["cluster_domain"], "cluster.local");
    assert_eq!(v["pod_namespaces"], 4, "{v:#}");
    assert_eq!(
        v["names"],
        serde_json::json!([
            "kubernetes.default.svc.cluster.local",
            "nodediag-absent.invalid"
        ])
    );
    let server = &v["servers"][0];
    assert_eq!(server["server"], SERVER);
    assert_eq!(server["failed_queries"], 0, "{v:#}");
    assert_eq!(server["failed_lookups"], 0, "{v:#}");
    assert_eq!(server["pods_probed"], 3, "{v:#}");
    assert!(server["host_probes"].as_u64().unwrap() >= 3);
    for i in 0..3 {
        let t = target(&v, &pods.name(i)).unwrap_or_else(|| panic!("pod {i} probed: {v:#}"));
        assert_eq!(t["kind"], "pod");
        assert!(t["probes"].as_u64().unwrap() >= 3, "{t:#}");
        assert_eq!(t["resolver"]["ndots"], 5);
        // ndots:5: both names walk the three search domains, then as-is: 8 queries each.
        assert_eq!(t["queries_per_lookup"], 8.0, "{t:#}");
        assert!(t["lookup_p99_seconds"].as_f64().unwrap() > 0.0);
    }
    let host = target(&v, "host").unwrap();
    assert_eq!(host["resolver"]["search"][0], "default.svc.cluster.local");
    assert_eq!(host["failed_queries"], 0, "{host:#}");
    assert!(
        target(&v, &pods.name(3)).is_none(),
        "the FIFO pod is not probed"
    );

    // The two pods whose resolv.conf is odd are partial lines that name them.
    let unavailable = v["unavailable"].to_string();
    let skipped = format!("resolv.conf of {}", pods.name(2));
    let refused = format!("resolv.conf of {}", pods.name(3));
    assert!(unavailable.contains(&skipped), "{unavailable}");
    assert!(unavailable.contains("glibc skips line 1"), "{unavailable}");
    assert!(unavailable.contains(&refused), "{unavailable}");
    assert!(unavailable.contains("not a regular file"), "{unavailable}");
    assert!(
        dns_findings(&agent).is_empty(),
        "{:#?}",
        dns_findings(&agent)
    );

    // The queries came from inside the pods' namespaces, and the host's through the
    // node's own DNAT.
    let log = lab.dnsmasq_log();
    for from in ["10.55.0.2", "10.55.1.2", "10.55.2.2", "10.53.0.1"] {
        assert!(
            log.contains(&format!("from {from}")),
            "no query from {from}"
        );
    }
    assert!(!log.contains("from 10.55.3.2"), "the FIFO pod sent nothing");

    let (_, report) = agent.get("/");
    assert!(report.contains("\nDNS over the last"), "{report}");
    assert!(report.contains(&format!("  server {SERVER}: ")), "{report}");
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with("dns "))
        .unwrap_or_else(|| panic!("no dns collector line: {report}"));
    assert!(line.contains("ok"), "{line}");
    assert!(line.contains("the kubelet's clusterDNS"), "{line}");
    assert!(
        report
            .lines()
            .any(|l| l.contains("partial") && l.contains(&refused)),
        "{report}"
    );

    let (_, metrics) = agent.get("/metrics");
    let answered = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "nodediag_dns_requests_total{{server=\"{SERVER}\",result=\"answer\"}}"
            ))
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(!answered.ends_with(" 0"), "{answered}");
    assert!(metrics.contains(&format!(
        "nodediag_dns_server_info{{server=\"{SERVER}\",source=\"kubelet\"}} 1"
    )));
    assert!(metrics.contains("nodediag_dns_lookup_duration_seconds_bucket{"));
    assert!(!metrics.contains("pod=\""), "no per-pod DNS series");
    common::promtool_check(&metrics);

    // The API filters and refuses what it does not know.
    let one = agent.get_json("/api/v1/dns?pod=web-0");
    assert_eq!(one["targets"].as_array().unwrap().len(), 1, "{one:#}");
    let (status, body) = agent.get("/api/v1/dns?bogus=1");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown query parameter"), "{body}");
    assert_eq!(agent.get("/api/v1/dns?server=192.0.2.1").0, 404);
}

#[test]
fn a_stopped_server_is_dns_failures_naming_the_pods_within_two_intervals() {
    let _shared = CONNTRACK_LIMIT.read().unwrap_or_else(|e| e.into_inner());
    let Some((mut lab, mut pods)) = lab_and_pods(2, "agstop", 2) else {
        return;
    };
    pods.start(&lab, 0, Resolv::Kubelet);
    pods.start(&lab, 1, Resolv::Kubelet);
    let interval = Duration::from_secs(3);
    let agent = pods.agent(&lab, "3s", &[]);
    view_after(&agent, 2);
    assert!(
        dns_findings(&agent).is_empty(),
        "{:#?}",
        dns_findings(&agent)
    );

    lab.stop_dnsmasq();
    let stopped = Instant::now();
    let f = wait_for(
        "dns_failures naming both pods",
        interval * 2 + Duration::from_secs(10),
        || {
            let f = finding(&agent, "dns_failures")?;
            let pods_named = f["evidence"]["pods"].as_array()?.len();
            (pods_named == 2).then_some(f)
        },
    );
    let took = stopped.elapsed();
    eprintln!(
        "dns_failures named both pods {took:.2?} after dnsmasq stopped (interval {interval:?})"
    );
    assert!(
        took < interval * 2 + Duration::from_secs(3),
        "took {took:?}"
    );
    assert_eq!(f["subject"], SERVER);
    assert_eq!(f["severity"], "critical", "{f:#}");
    let e = &f["evidence"];
    for i in 0..2 {
        assert!(e["pods"].to_string().contains(&pods.name(i)), "{e:#}");
    }
    assert_eq!(e["host_failed"], true, "{e:#}");
    // Nothing listens: the server's kernel answers with port unreachable, which the
    // node's conntrack un-NATs back to the pods (ECONNREFUSED); its ICMP rate limit
    // turns later queries into timeouts.
    let network = e["network_errors"].as_u64().unwrap();
    let timeouts = e["timeouts"].as_u64().unwrap();
    assert!(network + timeouts > 0, "{e:#}");
    assert!(
        e["examples"].to_string().contains("kubernetes.default"),
        "{e:#}"
    );
    assert!(f["remedy"].as_str().unwrap().contains("endpoints"));

    // nodediag check says so too (NPD's exit code 1), the summary line first.
    let (code, out) = pods.check(
        &lab,
        &["--finding", "dns_failures", "--check.delay", "200ms"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!("CRITICAL: dns_failures {SERVER}:")),
        "{out}"
    );
}

#[test]
fn a_slow_server_is_dns_slow_not_failures() {
    let _shared = CONNTRACK_LIMIT.read().unwrap_or_else(|e| e.into_inner());
    let Some((mut lab, mut pods)) = lab_and_pods(3, "agslow", 2) else {
        return;
    };
    pods.start(&lab, 0, Resolv::Kubelet);
    pods.start(&lab, 1, Resolv::Kubelet);
    // 150 ms a reply: ndots:5 makes each lookup four candidates one after another.
    let delay = Duration::from_millis(150);
    lab.slow_down(delay);
    let agent = pods.agent(&lab, "6s", &["--dns.slow", "400ms"]);
    let f = wait_for("dns_slow", Duration::from_secs(30), || {
        finding(&agent, "dns_slow")
    });
    assert_eq!(f["subject"], SERVER);
    assert_eq!(f["severity"], "warning");
    let e = &f["evidence"];
    assert!(e["lookup_p99_seconds"].as_f64().unwrap() >= 0.6, "{e:#}");
    assert!(e["query_p99_seconds"].as_f64().unwrap() >= 0.15, "{e:#}");
    assert_eq!(e["queries_per_lookup"], 8.0, "{e:#}");
    assert_eq!(e["threshold_seconds"], 0.4);
    assert!(
        e["slowest"][0].as_str().unwrap().contains("8 queries"),
        "{e:#}"
    );
    assert!(f["remedy"].as_str().unwrap().contains("ndots"));
    assert!(
        finding(&agent, "dns_failures").is_none(),
        "a slow answer within the try is no failure: {:#?}",
        dns_findings(&agent)
    );
}

#[test]
fn dropping_one_query_in_fifty_is_a_dns_failures_warning_with_its_ratio() {
    let _shared = CONNTRACK_LIMIT.read().unwrap_or_else(|e| e.into_inner());
    let Some((lab, mut pods)) = lab_and_pods(4, "agnth", 3) else {
        return;
    };
    for i in 0..3 {
        pods.start(&lab, i, Resolv::Kubelet);
    }
    // Only forwarded packets: the pods' queries, not the host's.
    lab.node_nft(&format!(
        "table ip nddns_loss {{\n\
           chain forward {{\n\
             type filter hook forward priority filter;\n\
             ip daddr {SERVER_IP} udp dport 53 numgen inc mod 50 0 drop\n\
           }}\n\
         }}\n"
    ));
    let agent = pods.agent(&lab, "4s", &[]);
    let f = wait_for("dns_failures", Duration::from_secs(40), || {
        finding(&agent, "dns_failures")
    });
    let e = &f["evidence"];
    eprintln!(
        "dns_failures: {} of {} queries failed (ratio {}), {} lookups failed",
        e["failed_queries"], e["queries"], e["failure_ratio"], e["failed_lookups"]
    );
    assert_eq!(f["severity"], "warning", "{f:#}");
    let ratio = e["failure_ratio"].as_f64().unwrap();
    assert!(ratio > 0.0 && ratio <= 0.05, "{e:#}");
    assert!(e["timeouts"].as_u64().unwrap() >= 1, "{e:#}");
    assert_eq!(e["network_errors"], 0);
    assert_eq!(
        e["host_failed"], false,
        "the host's queries are not forwarded"
    );
    assert!(!e["pods"].as_array().unwrap().is_empty());
    // A lost query of a pair is what makes glibc fall back to single-request.
    let v = agent.get_json("/api/v1/dns");
    assert!(v["servers"][0]["fallbacks"].as_u64().unwrap() >= 1, "{v:#}");
    let (_, metrics) = agent.get("/metrics");
    assert!(
        metrics.contains(&format!(
            "nodediag_dns_requests_total{{server=\"{SERVER}\",result=\"timeout\"}}"
        )),
        "{metrics}"
    );
}

#[test]
fn a_full_conntrack_table_ties_dns_failures_and_conntrack_drops_together() {
    let _alone = CONNTRACK_LIMIT.write().unwrap_or_else(|e| e.into_inner());
    let Some((lab, mut pods)) = lab_and_pods(5, "agct", 2) else {
        return;
    };
    pods.start(&lab, 0, Resolv::Kubelet);
    pods.start(&lab, 1, Resolv::Kubelet);
    // The conntrack collector runs too (every second), in the node namespace whose
    // table the DNS flows pass through.
    let agent = pods.agent(&lab, "2s", &[]);
    view_after(&agent, 2);
    assert!(
        dns_findings(&agent).is_empty(),
        "{:#?}",
        dns_findings(&agent)
    );

    // A limit below what a round leaves in the node's table (about 24 flows a round,
    // 30 s each): the DNS flows that follow are dropped, as on a node whose table is
    // full. Pods' and server's namespaces track nothing (no rules there).
    // The test's own HTTP to the agent (TCP on the node's loopback) must not need a
    // place in the table.
    lab.node_nft(
        "table inet nddns_raw {\n\
           chain pre { type filter hook prerouting priority -300; meta l4proto tcp notrack; }\n\
           chain out { type filter hook output priority -300; meta l4proto tcp notrack; }\n\
         }\n",
    );
    let lowered = ConntrackMax::set(32);
    let started = Instant::now();
    let (dns, conntrack) = wait_for(
        "dns_failures tied to conntrack drops",
        Duration::from_secs(30),
        || {
            let all = agent.get_json("/api/v1/findings")["findings"].clone();
            let find = |id: &str| all.as_array()?.iter().find(|f| f["id"] == id).cloned();
            let dns = find("dns_failures")?;
            let ct = find("conntrack_drops")?;
            (dns["evidence"]["conntrack_dropped_in_window"].as_u64()? > 0
                && ct["evidence"]["dns_failures_in_window"].as_u64()? > 0)
                .then_some((dns, ct))
        },
    );
    drop(lowered);
    eprintln!(
        "dns_failures and conntrack_drops linked {:.2?} after the limit was lowered",
        started.elapsed()
    );
    assert_eq!(dns["subject"], SERVER);
    let remedy = dns["remedy"].as_str().unwrap();
    assert!(remedy.contains("NodeLocal DNSCache"), "{remedy}");
    assert!(remedy.contains("single-request-reopen"), "{remedy}");
    assert!(
        dns["summary"]
            .as_str()
            .unwrap()
            .contains("conntrack failed in the same window"),
        "{dns:#}"
    );
    assert!(dns["evidence"]["timeouts"].as_u64().unwrap() > 0, "{dns:#}");
    assert_eq!(conntrack["subject"], "host");
    assert_eq!(
        conntrack["evidence"]["dns_servers_failing"],
        serde_json::json!([SERVER])
    );
    let v = agent.get_json("/api/v1/dns");
    assert!(
        v["correlation"]["conntrack_dropped"].as_u64().unwrap() > 0,
        "{v:#}"
    );
}
