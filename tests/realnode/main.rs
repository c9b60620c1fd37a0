//! nodediag on a real container-runtime node: a containerd of the test's own with CNI
//! bridge + host-local, pods run through CRI the way the kubelet runs them, and
//! nodediag's answers checked against them, first as a binary on the host, then as
//! the container image run with the DaemonSet's own spec. README, "The real-node
//! test", says what it covers and what it does not.

#[path = "../common/mod.rs"]
mod common;
mod cri;
mod image;
mod kubelet;
mod leftovers;
mod manifest;
mod node;

use common::{poll_until, skip, wait_for, Agent};
use kubelet::{run_pod, ContainerSpec, Pod, PodSpec};
use node::Node;
use serde_json::Value;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// The agents' sampling interval: every answer is due within two of them.
const INTERVAL: Duration = Duration::from_secs(1);
/// Added to two intervals for a loaded 2-core machine (HTTP polling, collection time).
const SLACK: Duration = Duration::from_secs(3);

struct Ctx {
    node: Node,
    agent: Agent,
    pid: u32,
    ns_a: String,
    ns_b: String,
    pods_made: std::cell::Cell<u32>,
    timings: std::cell::RefCell<Vec<(String, Duration)>>,
}

impl Ctx {
    fn spec(&self, namespace: &str, name: &str, containers: Vec<ContainerSpec>) -> PodSpec {
        let n = self.pods_made.get() + 1;
        self.pods_made.set(n);
        PodSpec {
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("{:08x}-7e57-4000-8000-{n:012x}", self.pid),
            // busybox as PID 1 ignores SIGTERM: the grace period is all waiting.
            grace_seconds: Some(1),
            containers,
            ..PodSpec::default()
        }
    }

    fn run(&self, spec: PodSpec) -> Pod {
        run_pod(&self.node, spec).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Waits for nodediag's answer, due within two intervals of `since`; records the time.
    fn answer<T>(&self, what: &str, since: Instant, cond: impl FnMut() -> Option<T>) -> T {
        self.answer_within(what, since, INTERVAL * 2 + SLACK, cond, String::new)
    }

    /// As [`Self::answer`], due within `budget`; a miss says `why` (what the agent
    /// showed instead).
    fn answer_within<T>(
        &self,
        what: &str,
        since: Instant,
        budget: Duration,
        mut cond: impl FnMut() -> Option<T>,
        why: impl FnOnce() -> String,
    ) -> T {
        let left = budget.saturating_sub(since.elapsed());
        let Some(v) = poll_until(left, &mut cond) else {
            panic!("no answer within {budget:?}: {what}. {}", why());
        };
        let took = since.elapsed();
        eprintln!("answer: {what}: {took:.2?}");
        self.timings.borrow_mut().push((what.to_string(), took));
        v
    }
}

/// The agent's HTTP API, whether it runs as a process of the test or in a container.
trait Api {
    fn get(&self, path: &str) -> (u16, String);

    fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }
}

impl Api for Agent {
    fn get(&self, path: &str) -> (u16, String) {
        Agent::get(self, path)
    }
}

/// An agent listening at `addr` on this host.
struct Remote {
    addr: String,
}

impl Api for Remote {
    fn get(&self, path: &str) -> (u16, String) {
        common::get_with(&format!("http://{}{path}", self.addr), None)
    }
}

fn findings(agent: &dyn Api, id: &str) -> Vec<Value> {
    agent.get_json(&format!("/api/v1/findings?finding={id}"))["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn finding(agent: &dyn Api, id: &str, subject: &str) -> Option<Value> {
    findings(agent, id)
        .into_iter()
        .find(|f| f["subject"] == subject)
}

fn veths_of(agent: &dyn Api, pod: &Pod) -> Vec<Value> {
    agent.get_json(&format!(
        "/api/v1/veths?pod={}&namespace={}",
        pod.spec.name, pod.spec.namespace
    ))["veths"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// The veth of a pod, checked field by field against what the runtime says.
fn named_veth(agent: &dyn Api, node: &Node, pod: &Pod) -> Option<Value> {
    let v = veths_of(agent, pod).into_iter().next()?;
    let p = &v["pod"];
    if p["pod"] != pod.spec.name.as_str() || p["namespace"] != pod.spec.namespace.as_str() {
        return None;
    }
    assert_eq!(p["pod_uid"], pod.spec.uid.as_str(), "{v:#}");
    let qos = format!("{:?}", pod.spec.qos()).to_lowercase();
    assert_eq!(p["qos"], qos.as_str(), "{v:#}");
    let id = p["container_id"].as_str().unwrap_or_default();
    assert!(
        id == pod.sandbox_id || pod.containers.iter().any(|(_, c)| c == id),
        "container_id {id} is neither the sandbox nor a container of the pod: {v:#}"
    );
    assert_eq!(v["peer_state"], "live", "{v:#}");
    assert_eq!(v["peer_name"], "eth0", "{v:#}");
    assert_eq!(v["master"], node.bridge.as_str(), "{v:#}");
    let ip = pod.ip().unwrap();
    assert!(
        v["peer_addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().starts_with(&format!("{ip}/"))),
        "the runtime's pod IP {ip} is not on the peer: {v:#}"
    );
    let pin = file_name(&pod.netns_path().unwrap());
    assert!(
        v["peer_pins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| file_name(p.as_str().unwrap()) == pin),
        "pin {pin} not among the peer's pins: {v:#}"
    );
    Some(v)
}

/// Several pods in two namespaces: each veth and network namespace names its pod.
fn pods_are_named(cx: &Ctx) -> Vec<Pod> {
    let sleeper = || ContainerSpec {
        cpu_request_milli: 10,
        memory_request: 16 << 20,
        ..ContainerSpec::shell("app", "exec sleep 3600")
    };
    let pods: Vec<Pod> = [(&cx.ns_a, "web-0"), (&cx.ns_a, "web-1"), (&cx.ns_b, "db-0")]
        .into_iter()
        .map(|(ns, name)| cx.run(cx.spec(ns, name, vec![sleeper()])))
        .collect();
    let started = Instant::now();
    for pod in &pods {
        cx.answer(
            &format!(
                "veth and namespace of {}/{} named",
                pod.spec.namespace, pod.spec.name
            ),
            started,
            || {
                named_veth(&cx.agent, &cx.node, pod)?;
                let ns = cx.agent.get_json(&format!(
                    "/api/v1/netns?pod={}&namespace={}",
                    pod.spec.name, pod.spec.namespace
                ));
                let list = ns["namespaces"].as_array().unwrap().clone();
                assert_eq!(list.len(), 1, "{ns:#}");
                assert_eq!(list[0]["pod"]["pod_uid"], pod.spec.uid.as_str());
                // The pause process and the container's, once both are sampled.
                (list[0]["processes"] == 2).then_some(())
            },
        );
    }
    for (ns, want) in [(&cx.ns_a, 2), (&cx.ns_b, 1)] {
        let v = cx.agent.get_json(&format!("/api/v1/veths?namespace={ns}"));
        assert_eq!(v["veths"].as_array().unwrap().len(), want, "{v:#}");
    }
    pods
}

/// A container limited to a tenth of a core running a busy loop: cpu_throttled.
fn busy_container_is_throttled(cx: &Ctx) {
    let spec = cx.spec(
        &cx.ns_a,
        "spin-0",
        vec![ContainerSpec {
            cpu_request_milli: 50,
            cpu_limit_milli: 100,
            ..ContainerSpec::shell("spinner", "while :; do :; done")
        }],
    );
    let pod = cx.run(spec);
    let started = Instant::now();
    let subject = format!("{}/spin-0/spinner", cx.ns_a);
    // The ratio is a rise between two samples of the container spinning: the first
    // sight can come an interval after the start, the rise an interval later, and
    // the evaluation waits up to one more for the round's last collector.
    let f = cx.answer_within(
        "cpu_throttled of the busy container",
        started,
        INTERVAL * 3 + SLACK,
        || finding(&cx.agent, "cpu_throttled", &subject),
        || {
            let path = format!("/api/v1/throttling?namespace={}&pod=spin-0", cx.ns_a);
            format!("GET {path}: {:?}", cx.agent.get(&path))
        },
    );
    let e = &f["evidence"];
    let cid = pod.container_id("spinner");
    assert_eq!(e["container_id"], cid, "{f:#}");
    assert_eq!(e["pod_uid"], pod.spec.uid.as_str(), "{f:#}");
    assert_eq!(e["limit_cores"], 0.1, "{f:#}");
    assert_eq!(
        e["cgroup"],
        format!("/kubepods/burstable/pod{}/{cid}", pod.spec.uid),
        "{f:#}"
    );
    assert!(
        e["throttled_ratio"].as_f64().unwrap() >= e["threshold_ratio"].as_f64().unwrap(),
        "{f:#}"
    );
}

/// A container with a 32 MiB limit that needs 200 MB: the OOM killer, oom_kills.
fn oom_killed_container_is_named(cx: &Ctx) {
    let spec = cx.spec(
        &cx.ns_b,
        "cache-0",
        vec![ContainerSpec {
            memory_request: 16 << 20,
            memory_limit: 32 << 20,
            ..ContainerSpec::shell(
                "hog",
                "x=$(head -c 200000000 /dev/zero | tr '\\0' x); echo survived",
            )
        }],
    );
    let pod = cx.run(spec);
    let cid = pod.container_id("hog").to_string();
    let status = wait_for("the container to exit", Duration::from_secs(60), || {
        let s = cx.node.cri().container_status(&cid).ok()?.status?;
        (s.state == cri::CONTAINER_EXITED).then_some(s)
    });
    let killed = Instant::now();
    assert_eq!(status.reason, "OOMKilled", "{status:?}");
    assert_eq!(status.exit_code, 137, "{status:?}");
    let subject = format!("{}/cache-0", cx.ns_b);
    let f = cx.answer("oom_kills naming the pod", killed, || {
        finding(&cx.agent, "oom_kills", &subject)
    });
    let e = &f["evidence"];
    assert_eq!(e["container"], "hog", "{f:#}");
    assert_eq!(e["container_id"], cid.as_str(), "{f:#}");
    assert_eq!(e["pod_uid"], pod.spec.uid.as_str(), "{f:#}");
    assert_eq!(e["constraint"], "CONSTRAINT_MEMCG", "{f:#}");
}

/// The sandbox's processes die and no kubelet cleans up (no CNI DEL): the pin and
/// the veth stay, flagged netns_leaked and veth_orphaned naming the former pod.
fn dead_sandbox_leaks(cx: &Ctx) {
    let spec = cx.spec(
        &cx.ns_a,
        "leaky-0",
        vec![ContainerSpec::shell("app", "exec sleep 3600")],
    );
    let mut pod = cx.run(spec);
    let veth = wait_for("the pod to be seen", INTERVAL * 2 + SLACK, || {
        veths_of(&cx.agent, &pod).into_iter().next()
    })["name"]
        .as_str()
        .unwrap()
        .to_string();
    let pin = file_name(&pod.netns_path().unwrap());
    pod.kill_processes().unwrap();
    let killed = Instant::now();
    let former = format!("{}/leaky-0", cx.ns_a);
    let (leak, orphan) = cx.answer("netns_leaked and veth_orphaned", killed, || {
        Some((
            finding(&cx.agent, "netns_leaked", &pin)?,
            finding(&cx.agent, "veth_orphaned", &veth)?,
        ))
    });
    assert_eq!(leak["evidence"]["former_pod"], former.as_str(), "{leak:#}");
    assert_eq!(
        orphan["evidence"]["former_pod"],
        former.as_str(),
        "{orphan:#}"
    );
    assert_eq!(orphan["evidence"]["peer_state"], "empty", "{orphan:#}");
    // The kubelet comes back: StopPodSandbox runs CNI DEL and removes the pin.
    pod.remove().unwrap();
    let removed = Instant::now();
    cx.answer("the leak findings to clear", removed, || {
        (finding(&cx.agent, "netns_leaked", &pin).is_none()
            && finding(&cx.agent, "veth_orphaned", &veth).is_none())
        .then_some(())
    });
}

/// A pod removed cleanly leaves no series, veth or finding naming it.
fn removed_pod_leaves_nothing(cx: &Ctx) {
    let spec = cx.spec(
        &cx.ns_b,
        "gone-0",
        vec![ContainerSpec {
            cpu_limit_milli: 200,
            memory_limit: 64 << 20,
            cpu_request_milli: 10,
            ..ContainerSpec::shell("app", "exec sleep 3600")
        }],
    );
    let mut pod = cx.run(spec);
    let label = format!("pod=\"{}\"", pod.spec.name);
    let uid = pod.spec.uid.clone();
    let mentions = |agent: &dyn Api| -> Vec<String> {
        let mut found = Vec::new();
        let metrics = agent.get("/metrics").1;
        found.extend(
            metrics
                .lines()
                .filter(|l| l.contains(&label))
                .map(str::to_string),
        );
        for path in [
            "/api/v1/veths",
            "/api/v1/netns",
            "/api/v1/findings",
            "/api/v1/throttling",
        ] {
            if agent.get(path).1.contains(&uid) {
                found.push(path.to_string());
            }
        }
        found
    };
    let veth = wait_for("the pod's series and veth", INTERVAL * 2 + SLACK, || {
        let m = mentions(&cx.agent);
        (m.iter()
            .any(|l| l.starts_with("nodediag_cgroup_cpu_limit_cores"))
            && m.iter().any(|l| l.starts_with("nodediag_netns_veth_info")))
        .then(|| veths_of(&cx.agent, &pod).into_iter().next())
        .flatten()
    })["name"]
        .as_str()
        .unwrap()
        .to_string();
    pod.remove().unwrap();
    let removed = Instant::now();
    // A hybrid host's unified hierarchy too: runc leaves the pod's directory there.
    let kept = pod.spec.cgroup_dirs();
    assert!(
        kept.is_empty(),
        "the removed pod's cgroups are still there: {kept:?}"
    );
    // What still names it after two intervals, to tell which part lags.
    let late = std::cell::RefCell::new(None);
    cx.answer("nothing left naming the removed pod", removed, || {
        let m = mentions(&cx.agent);
        if removed.elapsed() > INTERVAL * 2 && late.borrow().is_none() && !m.is_empty() {
            *late.borrow_mut() = Some(m.clone());
        }
        m.is_empty().then_some(())
    });
    if let Some(m) = late.borrow().as_ref() {
        eprintln!("still named after two intervals: {m:?}");
    }
    let v = cx
        .agent
        .get_json(&format!("/api/v1/veths?interface={veth}"));
    assert!(v["veths"].as_array().unwrap().is_empty(), "{v:#}");
}

/// Real pods fill the host-local range: cni_ipam_exhausted, and the next pod fails
/// as it would on a node. The filling pods are returned, still running.
fn filled_range_is_exhausted(cx: &Ctx) -> Vec<Pod> {
    let net = cx.node.ipam_dir.join(&cx.node.name);
    let reserved = || {
        std::fs::read_dir(&net)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                    .count() as u32
            })
            .unwrap_or(0)
    };
    let mut fillers = Vec::new();
    while reserved() < node::IPAM_CAPACITY {
        let name = format!("filler-{}", fillers.len());
        fillers.push(cx.run(cx.spec(
            &cx.ns_b,
            &name,
            vec![ContainerSpec::shell("app", "exec sleep 3600")],
        )));
    }
    let full = Instant::now();
    let f = cx.answer("cni_ipam_exhausted", full, || {
        findings(&cx.agent, "cni_ipam_exhausted")
            .into_iter()
            .find(|f| f["evidence"]["data_dir"] == net.to_string_lossy().as_ref())
    });
    assert_eq!(f["severity"], "critical", "{f:#}");
    assert_eq!(f["evidence"]["allocated"], node::IPAM_CAPACITY, "{f:#}");
    assert_eq!(f["evidence"]["capacity"], node::IPAM_CAPACITY, "{f:#}");
    let more = cx.spec(
        &cx.ns_b,
        "one-too-many",
        vec![ContainerSpec::shell("app", "exec sleep 3600")],
    );
    let err = match run_pod(&cx.node, more) {
        Ok(_) => panic!("a pod started in a full range"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("no IP addresses available"), "{err}");
    fillers
}

fn bare_metal_agent(node: &Node) -> Agent {
    // Its own probe directory: the defaults (/var/lib/etcd, ...) appear during the
    // test as the DaemonSet's hostPath volumes, and are the container's to probe.
    let probe = node.dir.join("fsync-probe");
    std::fs::create_dir_all(&probe).unwrap();
    Agent::start(&[
        "--fsync.path",
        probe.to_str().unwrap(),
        "--interval",
        "1s",
        "--window",
        "5s",
        "--netns.leak-min-age",
        "0s",
        "--path.cni-conf",
        node.cni_conf_dir.to_str().unwrap(),
    ])
}

#[test]
fn nodediag_on_a_real_containerd_node() {
    if let Some(reason) = node::skip_reason() {
        skip(&reason);
        return;
    }
    let begun = Instant::now();
    let node = Node::start().unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("node up in {:.1?}", begun.elapsed());
    let agent = bare_metal_agent(&node);
    agent.wait_ready();
    let pid = std::process::id();
    let cx = Ctx {
        ns_a: format!("ndrn{pid}-shop"),
        ns_b: format!("ndrn{pid}-data"),
        node,
        agent,
        pid,
        pods_made: Default::default(),
        timings: Default::default(),
    };
    let mut failed = Vec::new();
    let mut scenario = |name: &str, f: &mut dyn FnMut()| {
        let t = Instant::now();
        eprintln!("== {name}");
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(()) => eprintln!("== {name}: ok in {:.1?}", t.elapsed()),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("== {name}: FAILED: {msg}");
                failed.push(name.to_string());
            }
        }
    };
    let mut named = Vec::new();
    scenario("pods are named", &mut || named = pods_are_named(&cx));
    scenario("a busy container is throttled", &mut || {
        busy_container_is_throttled(&cx)
    });
    scenario("an OOM-killed container is named", &mut || {
        oom_killed_container_is_named(&cx)
    });
    scenario("a dead sandbox leaks", &mut || dead_sandbox_leaks(&cx));
    scenario("a removed pod leaves nothing", &mut || {
        removed_pod_leaves_nothing(&cx)
    });
    let mut fillers = Vec::new();
    scenario("a filled range is exhausted", &mut || {
        fillers = filled_range_is_exhausted(&cx)
    });
    scenario("the image under the DaemonSet's spec", &mut || {
        image::daemonset_image_on_the_node(&cx, &named, &mut fillers)
    });
    drop(fillers);
    drop(named);
    eprintln!("answers (due within {:?}):", INTERVAL * 2 + SLACK);
    for (what, took) in cx.timings.borrow().iter() {
        eprintln!("  {took:>8.2?}  {what}");
    }
    eprintln!("real-node test took {:.1?}", begun.elapsed());
    assert!(failed.is_empty(), "failed scenarios: {failed:?}");
}
