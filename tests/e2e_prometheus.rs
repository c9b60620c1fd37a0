//! End to end with a real Prometheus (Debian's 2.42), nodediag and Prometheus both
//! running in a fresh network namespace, Prometheus scraping every second:
//!
//! - a full conntrack table, Prometheus evaluating dashboards/alerts.yaml over
//!   OpenMetrics scrapes: NodediagConntrack fires for conntrack_table_full and
//!   conntrack_drops, and every PromQL expression of dashboards/nodediag.json runs;
//! - the fsync probe on a loop-mounted ext4, Prometheus with native histograms
//!   (so scraping protobuf, gzip-compressed, through a tap that checks the wire):
//!   `histogram_quantile` over the native histogram agrees with the probe's own
//!   percentiles to the bucket.
//!
//! Needs root, nft, fallocate, mkfs.ext4, losetup and Debian's `prometheus` package
//! (tests/run.sh installs them).

mod common;

use common::conntrack::{have, is_root, ConntrackMax, Netns};
use common::{in_netns, skip, wait_for, Agent};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROMETHEUS: &str = "/usr/bin/prometheus";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// What went over the wire between Prometheus and the agent.
#[derive(Debug, Default, Clone)]
struct Wire {
    /// Each request's head, as Prometheus sent it.
    requests: Vec<String>,
    /// The head of each connection's first response.
    first_responses: Vec<String>,
    /// Every byte of every response, heads included.
    response_bytes: u64,
}

/// A relay in a network namespace between Prometheus and the agent, noting what
/// goes through it: Prometheus's own metrics only give sizes after decompressing.
/// Its threads end with the test process.
struct WireTap {
    addr: String,
    wire: Arc<Mutex<Wire>>,
}

impl WireTap {
    fn start(netns: &str, upstream: &str) -> WireTap {
        let wire = Arc::new(Mutex::new(Wire::default()));
        let (netns, upstream, seen) = (netns.to_string(), upstream.to_string(), wire.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Threads spawned from here are in the namespace too.
            common::enter_netns(&netns);
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind the tap");
            tx.send(listener.local_addr().unwrap()).unwrap();
            for client in listener.incoming().flatten() {
                let server = TcpStream::connect(&upstream).expect("connect to the agent");
                let (c2, s2, w2) = (
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    seen.clone(),
                );
                std::thread::spawn(move || relay_requests(c2, s2, &w2));
                let w = seen.clone();
                std::thread::spawn(move || relay_responses(server, client, &w));
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the tap listening");
        WireTap {
            addr: addr.to_string(),
            wire,
        }
    }

    fn seen(&self) -> Wire {
        self.wire.lock().unwrap().clone()
    }
}

/// Copies requests (heads only: Prometheus's GETs have no body), noting each head.
fn relay_requests(mut from: TcpStream, mut to: TcpStream, wire: &Mutex<Wire>) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = pending.drain(..end + 4).collect();
            wire.lock()
                .unwrap()
                .requests
                .push(String::from_utf8_lossy(&head).into());
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Copies responses, noting the first head and counting every byte.
fn relay_responses(mut from: TcpStream, mut to: TcpStream, wire: &Mutex<Wire>) {
    let mut first = Some(Vec::new());
    let mut buf = [0u8; 16384];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if let Some(head) = first.as_mut() {
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&head[..end]).into();
                wire.lock().unwrap().first_responses.push(text);
                first = None;
            }
        }
        wire.lock().unwrap().response_bytes += n as u64;
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// The value of header `name` in an HTTP head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A Prometheus server in a network namespace; killed on drop. Its data, config and
/// log live in a temporary directory removed after it.
struct Prometheus {
    child: Child,
    netns: String,
    base: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(netns: &str, target: &str) -> Prometheus {
        Self::start_with(netns, target, &[])
    }

    /// With extra command-line flags (`--enable-feature=...`).
    fn start_with(netns: &str, target: &str, flags: &[&str]) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("alerts.yaml"), rules_without_for()).expect("rules");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - alerts.yaml\n\
             scrape_configs:\n  - job_name: nodediag\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
        let port = free_port(netns);
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", netns, PROMETHEUS])
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            netns: netns.to_string(),
            base: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    /// (status, body) of GET path?params, from inside the namespace.
    fn get(&self, path: &str, params: &[(&str, &str)]) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        in_netns(&self.netns, move || {
            let mut req = ureq::get(&url).timeout(Duration::from_secs(10));
            for (k, v) in &params {
                req = req.query(k, v);
            }
            match req.call() {
                Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
                Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
                // Not listening yet, or gone: the caller's deadline decides.
                Err(e) => (0, e.to_string()),
            }
        })
    }

    /// The JSON of an API call that must succeed.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let (status, body) = self.get(path, params);
        assert_eq!(status, 200, "GET {path} {params:?}: {body}\n{}", self.log());
        let v: Value = serde_json::from_str(&body).expect("prometheus JSON");
        assert_eq!(v["status"], "success", "{path}: {body}");
        v
    }

    fn query(&self, expr: &str) -> Value {
        self.api("/api/v1/query", &[("query", expr)])["data"]["result"].clone()
    }

    /// An instant query evaluated at `time` (Unix seconds).
    fn query_at(&self, expr: &str, time: f64) -> Value {
        let time = format!("{time:.3}");
        self.api("/api/v1/query", &[("query", expr), ("time", &time)])["data"]["result"].clone()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("prometheus log:\n{}", self.log());
        }
    }
}

/// dashboards/alerts.yaml with every `for:` set to 0s, so an alert fires on the
/// first evaluation that sees its series: the test checks the expressions, labels
/// and annotations end to end, and the `for:` durations are covered by
/// dashboards/alerts_test.yaml.
fn rules_without_for() -> String {
    let src = std::fs::read_to_string(repo_file("dashboards/alerts.yaml")).expect("alerts.yaml");
    let mut out = String::from(
        "# Copy of dashboards/alerts.yaml for the end-to-end test: every `for:` is 0s.\n",
    );
    let mut rewritten = 0;
    for line in src.lines() {
        match line.split_once("for:") {
            Some((indent, _)) if indent.trim().is_empty() => {
                out.push_str(indent);
                out.push_str("for: 0s\n");
                rewritten += 1;
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(
        rewritten >= 6,
        "only {rewritten} `for:` lines in alerts.yaml"
    );
    out
}

/// A loopback port free in the namespace (bound, read, released: nothing else
/// runs in a fresh namespace to take it meanwhile).
fn free_port(netns: &str) -> u16 {
    in_netns(netns, || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    })
}

/// Alerts named `name` in state firing, as (finding, labels, annotations).
fn firing(prom: &Prometheus, name: &str) -> Vec<(String, Value, Value)> {
    let v = prom.api("/api/v1/alerts", &[]);
    v["data"]["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
        .map(|a| {
            let f = a["labels"]["finding"].as_str().unwrap_or("").to_string();
            (f, a["labels"].clone(), a["annotations"].clone())
        })
        .collect()
}

/// Grafana's template variables, replaced as Grafana would for "All nodes".
fn substitute(expr: &str) -> String {
    let out = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
        .replace("${node}", ".*")
        .replace("$node", ".*");
    assert!(!out.contains('$'), "unknown template variable in {expr}");
    out
}

/// (panel title, expressions) of every panel with queries.
fn dashboard_queries() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(repo_file("dashboards/nodediag.json")).expect("dashboard");
    let dash: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut panels: Vec<&Value> = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        panels.push(p);
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
    }
    panels
        .into_iter()
        .filter(|p| p["type"] != "row")
        .map(|p| {
            let title = p["title"].as_str().expect("title").to_string();
            let exprs = p["targets"]
                .as_array()
                .map(|ts| {
                    ts.iter()
                        .map(|t| t["expr"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default();
            (title, exprs)
        })
        .collect()
}

/// Panels whose data exists on this branch and in the test's namespace (no physical
/// NIC there, so no speed; the disk, cgroup and netns panels wait for their
/// collectors): each must show something.
const CORE_PANELS: &[&str] = &[
    "Active findings",
    "Findings by severity",
    "Findings over time",
    "Conntrack table usage",
    "Conntrack drops",
    "Conntrack insert failures",
    "NIC errors and drops",
    "NIC link state",
    "Collectors",
    "Collection duration",
    "Collector failures",
];

#[test]
fn a_full_conntrack_table_fires_the_alert_in_prometheus_and_the_dashboard_queries_work() {
    if !is_root() {
        skip("needs root (network namespaces, nf_conntrack_max)");
        return;
    }
    if !Path::new(PROMETHEUS).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{PROMETHEUS} is required in CI (tests/run.sh installs the prometheus package)"
        );
        skip(&format!(
            "{PROMETHEUS} not installed (apt-get install prometheus)"
        ));
        return;
    }
    if !have("nft") {
        skip("nft not installed");
        return;
    }
    // Dropped in reverse: Prometheus, the agent, nf_conntrack_max, the namespace.
    let Some(ns) = Netns::new("e2e") else { return };
    ns.track_udp_only();
    let _max = ConntrackMax::set(64);
    let agent = Agent::start_in_netns(&ns.0, &["--interval", "500ms"]);
    agent.wait_ready();
    let prom = Prometheus::start(&ns.0, &agent.addr);

    wait_for("prometheus ready", Duration::from_secs(60), || {
        (prom.get("/-/ready", &[]).0 == 200).then_some(())
    });
    wait_for(
        "prometheus to scrape nodediag and evaluate the rules",
        Duration::from_secs(30),
        || {
            let up = prom.query(r#"up{job="nodediag"} == 1"#);
            let rules = prom.api("/api/v1/rules", &[("type", "alert")]);
            let evaluated = rules["data"]["groups"].as_array()?.iter().any(|g| {
                // Never evaluated is Go's zero time, year 1.
                g["name"] == "nodediag"
                    && g["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001-"))
            });
            (!up.as_array()?.is_empty() && evaluated).then_some(())
        },
    );
    // Prometheus 2.42 without native histograms asks for OpenMetrics first.
    let negotiated = prom.query(r#"nodediag_scrapes_total{format="openmetrics"} > 0"#);
    assert!(
        !negotiated.as_array().unwrap().is_empty(),
        "no OpenMetrics scrape counted: {}",
        prom.query("nodediag_scrapes_total")
    );
    // Before the table fills: a healthy namespace, nothing firing.
    assert_eq!(
        prom.query(r#"nodediag_finding_active{finding=~"conntrack_.*"}"#),
        serde_json::json!([]),
        "conntrack findings before the table is full"
    );
    assert!(firing(&prom, "NodediagConntrack").is_empty());

    // 100 UDP flows with room for 64: the table fills and conntrack drops the rest.
    let started = Instant::now();
    ns.send_udp_flows(100);
    let alerts = wait_for(
        "NodediagConntrack firing for conntrack_table_full and conntrack_drops",
        Duration::from_secs(60),
        || {
            let a = firing(&prom, "NodediagConntrack");
            let has = |id: &str| a.iter().any(|(f, _, _)| f == id);
            (has("conntrack_table_full") && has("conntrack_drops")).then_some(a)
        },
    );
    eprintln!(
        "NodediagConntrack fired for conntrack_table_full and conntrack_drops {:.1?} after the test started sending the UDP flows",
        started.elapsed()
    );
    for (finding, labels, annotations) in &alerts {
        assert_eq!(labels["severity"], "critical", "{labels}");
        assert_eq!(labels["subject"], "host", "{labels}");
        assert_eq!(labels["instance"], agent.addr.as_str(), "{labels}");
        let runbook = annotations["runbook_url"].as_str().unwrap_or("");
        assert!(
            runbook.ends_with(&format!("README.md#{finding}")),
            "runbook_url {runbook}"
        );
        let description = annotations["description"].as_str().unwrap_or("");
        assert!(
            description.contains(&format!("reports finding {finding} for host")),
            "{description}"
        );
    }
    // nodediag itself is healthy: scraped, and its collectors sample. (Other family
    // alerts may fire: a fresh namespace has, for one, forwarding off.)
    let fired: Vec<String> = prom.api("/api/v1/alerts", &[])["data"]["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| a["labels"]["alertname"].as_str().unwrap_or("").to_string())
        .collect();
    for health in [
        "NodediagDown",
        "NodediagCollectorFailing",
        "NodediagCollectorStale",
    ] {
        assert!(
            !fired.iter().any(|n| n == health),
            "{health} fired: {fired:?}"
        );
    }

    // Every dashboard query parses and runs; the core panels show data.
    let panels = dashboard_queries();
    let mut empty = Vec::new();
    let mut queries = 0;
    for (title, exprs) in &panels {
        let mut rows = 0;
        for expr in exprs {
            let expr = substitute(expr);
            let (status, body) = prom.get("/api/v1/query", &[("query", expr.as_str())]);
            assert_eq!(status, 200, "panel {title:?}: {expr}: {body}");
            let v: Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(v["status"], "success", "panel {title:?}: {expr}: {body}");
            rows += v["data"]["result"].as_array().map_or(0, Vec::len);
            queries += 1;
        }
        if rows == 0 {
            empty.push(title.clone());
        }
    }
    for core in CORE_PANELS {
        assert!(
            panels.iter().any(|(t, _)| t == core),
            "core panel {core:?} is not on the dashboard"
        );
        assert!(
            !empty.contains(&core.to_string()),
            "core panel {core:?} returned no data"
        );
    }
    eprintln!(
        "{queries} dashboard queries of {} panels parsed and ran; no data yet (collectors not on this branch, or no physical NIC): {empty:?}",
        panels.len()
    );
}

/// Schema-3 native histogram bucket holding `v`: the `i` with 2^((i-1)/8) < v <= 2^(i/8).
fn native_bucket(v: f64) -> i32 {
    (v.log2() * 8.0).ceil() as i32
}

/// A file taking all but `leave` bytes of the filesystem's available space, so the
/// fsync probe (which wants --fsync.min-free) stops; removed on drop.
struct Filler(PathBuf);

impl Filler {
    fn take(dir: &str, leave: u64) -> Filler {
        let st = nix::sys::statvfs::statvfs(dir).expect("statvfs");
        let avail = st.blocks_available() * st.fragment_size();
        let path = Path::new(dir).join("nodediag-test-filler");
        let size = avail.saturating_sub(leave).to_string();
        let out = Command::new("fallocate")
            .args(["-l", &size, path.to_str().unwrap()])
            .output()
            .expect("fallocate");
        assert!(out.status.success(), "fallocate: {out:?}");
        Filler(path)
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The probe's state and count in the agent's newest sample, and its percentiles
/// over the window, for one directory.
fn probe_figures(agent: &Agent, dir: &str) -> Option<(String, u64, Value)> {
    let v = agent.get_json(&format!("/api/v1/disks?path={dir}"));
    let d = &v["dirs"][0];
    let probe = &d["probe"];
    Some((
        probe["state"].as_str()?.to_string(),
        probe["probes_total"].as_u64()?,
        d["fsync"].clone(),
    ))
}

/// The probe's own figures against what Prometheus makes of the native histogram:
/// the fsync probe writes into a loop-mounted ext4 for a stretch shorter than a
/// minute, held back before and after by filling the filesystem below
/// --fsync.min-free. Prometheus (--enable-feature=native-histograms, so it asks for
/// protobuf) scrapes the histogram at zero before the stretch and complete after it,
/// so `rate(...[1m])` at the end covers exactly the observations the agent's own
/// window holds, and `histogram_quantile` must land in the bucket of the agent's
/// exact percentile.
/// Prometheus asked for gzip in every scrape and got it: each connection's response
/// is gzip-encoded protobuf, and what went over the wire a scrape is well under the
/// body Prometheus read after decompressing (`scrape_body_size_bytes`): protobuf
/// packs less than text, about 2.3 to 1 for the 15 KB of this test's node.
fn gzip_on_the_wire(prom: &Prometheus, tap: &WireTap) {
    let body: f64 = wait_for("scrape_body_size_bytes", Duration::from_secs(30), || {
        let r = prom.query(r#"scrape_body_size_bytes{job="nodediag"}"#);
        r.as_array()?.first()?["value"][1].as_str()?.parse().ok()
    });
    let wire = tap.seen();
    assert!(!wire.requests.is_empty() && !wire.first_responses.is_empty());
    for request in &wire.requests {
        let asked = header(request, "accept-encoding").unwrap_or_default();
        assert!(asked.contains("gzip"), "{request}");
    }
    for response in &wire.first_responses {
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert_eq!(
            header(response, "content-encoding"),
            Some("gzip"),
            "{response}"
        );
        let kind = header(response, "content-type").unwrap_or_default();
        assert!(
            kind.starts_with("application/vnd.google.protobuf"),
            "{response}"
        );
    }
    let per_scrape = wire.response_bytes as f64 / wire.requests.len() as f64;
    eprintln!(
        "{} scrapes over {} connections: {per_scrape:.0} bytes a response on the wire, \
         {body:.0} bytes of protobuf after decompressing",
        wire.requests.len(),
        wire.first_responses.len()
    );
    assert!(
        per_scrape * 2.0 < body,
        "{per_scrape:.0} bytes a scrape for {body} bytes of body"
    );
}

#[test]
fn fsync_latency_as_a_native_histogram_over_protobuf_gives_the_probes_percentiles() {
    if !is_root() {
        skip("needs root (loop devices, mounts, network namespaces)");
        return;
    }
    if !Path::new(PROMETHEUS).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{PROMETHEUS} is required in CI (tests/run.sh installs the prometheus package)"
        );
        skip(&format!("{PROMETHEUS} not installed"));
        return;
    }
    if !have("fallocate") || !have("mkfs.ext4") || !have("losetup") {
        skip("fallocate, mkfs.ext4 and losetup are needed for the probed filesystem");
        return;
    }
    let disk = match common::mount::Mount::loop_ext4("256M") {
        Ok(m) => m,
        Err(e) => {
            skip(&format!("cannot make a loop-mounted ext4: {e}"));
            return;
        }
    };
    let dir = disk.path().to_string();
    const MIN_FREE: u64 = 64 << 20;
    let mut filler = Some(Filler::take(&dir, MIN_FREE / 2));
    let Some(ns) = Netns::new("e2enh") else {
        return;
    };
    let agent = Agent::start_in_netns(
        &ns.0,
        &[
            "--interval",
            "1s",
            // Longer than the test: the agent's percentiles cover every probe.
            "--window",
            "10m",
            "--no-collector.dns",
            "--fsync.path",
            &dir,
            "--disk.path",
            &dir,
            "--fsync.probes",
            "50",
            "--fsync.file-size",
            "1MiB",
            "--fsync.min-free",
            "64MiB",
        ],
    );
    wait_for(
        "the probe refused for lack of space",
        Duration::from_secs(30),
        || {
            let (state, n, _) = probe_figures(&agent, &dir)?;
            assert_eq!(n, 0, "probes before the space was freed");
            (state == "refused").then_some(())
        },
    );
    // Through a tap, to see what the agent sends: Prometheus asks for gzip.
    let tap = WireTap::start(&ns.0, &agent.addr);
    let prom = Prometheus::start_with(
        &ns.0,
        &tap.addr,
        &["--enable-feature=native-histograms,extra-scrape-metrics"],
    );
    wait_for("prometheus ready", Duration::from_secs(60), || {
        (prom.get("/-/ready", &[]).0 == 200).then_some(())
    });
    let selector = format!("nodediag_fsync_duration_seconds{{path=\"{dir}\"}}");
    // Stored as a native histogram (a "histogram", not a "value"): only the protobuf
    // exposition carries one, and Prometheus asked for it.
    wait_for(
        "a native fsync histogram at zero in prometheus",
        Duration::from_secs(30),
        || {
            let r = prom.query(&selector);
            let h = r.as_array()?.first()?.get("histogram")?.clone();
            (h[1]["count"] == "0").then_some(())
        },
    );
    let (_, text) = agent.get("/metrics");
    let protobuf_scrapes = text
        .lines()
        .find_map(|l| l.strip_prefix("nodediag_scrapes_total{format=\"protobuf\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(protobuf_scrapes > 0, "no protobuf scrape counted:\n{text}");

    // The stretch: free the space, let the probe run, fill it again.
    let started = unix_now();
    drop(filler.take());
    let probes = wait_for("500 probes", Duration::from_secs(40), || {
        let (_, n, _) = probe_figures(&agent, &dir)?;
        (n >= 500).then_some(n)
    });
    filler = Some(Filler::take(&dir, MIN_FREE / 2));
    let (total, figures) = wait_for("the probe refused again", Duration::from_secs(30), || {
        let (state, n, fig) = probe_figures(&agent, &dir)?;
        (state == "refused").then_some((n, fig))
    });
    assert!(total >= probes);
    assert_eq!(
        figures["probes"].as_u64(),
        Some(total),
        "the agent's window holds every probe: {figures}"
    );
    wait_for(
        "prometheus to scrape the last count",
        Duration::from_secs(30),
        || {
            let r = prom.query(&format!("histogram_count({selector})"));
            let v: f64 = r.as_array()?.first()?["value"][1].as_str()?.parse().ok()?;
            (v == total as f64).then_some(())
        },
    );
    let at = unix_now();
    assert!(
        at - started < 55.0,
        "the stretch took {:.0} s: a 1m rate would not reach back to the zero count",
        at - started
    );
    // The range holds the zero before the stretch and the total after it.
    let series = prom.query_at(&format!("{selector}[1m]"), at);
    let points = series[0]["histograms"]
        .as_array()
        .expect("histogram points");
    assert_eq!(points.first().unwrap()[1]["count"], "0", "{series}");
    assert_eq!(
        points.last().unwrap()[1]["count"],
        total.to_string().as_str(),
        "{series}"
    );

    for (q, agent_field) in [(0.5, "p50_seconds"), (0.99, "p99_seconds")] {
        let expr = format!("histogram_quantile({q}, rate({selector}[1m]))");
        let r = prom.query_at(&expr, at);
        let from_prometheus: f64 = r[0]["value"][1].as_str().unwrap().parse().unwrap();
        let own = figures[agent_field].as_f64().unwrap();
        let (bucket, own_bucket) = (native_bucket(from_prometheus), native_bucket(own));
        eprintln!(
            "{expr}: {:.3} ms; the agent's own {agent_field} over the same {total} probes: {:.3} ms \
             (bucket {own_bucket}: ({:.3}, {:.3}] ms; ratio {:.3})",
            from_prometheus * 1e3,
            own * 1e3,
            (f64::from(own_bucket - 1) / 8.0).exp2() * 1e3,
            (f64::from(own_bucket) / 8.0).exp2() * 1e3,
            from_prometheus / own
        );
        // When q × count is a whole number, Prometheus's rank sits exactly on a
        // bucket's cumulative count, and float rounding may take the next bucket.
        let rank = q * total as f64;
        let on_an_edge = (rank - rank.round()).abs() < 1e-6;
        assert!(
            bucket == own_bucket || (on_an_edge && bucket == own_bucket + 1),
            "{expr} = {from_prometheus} is in bucket {bucket}, the agent's {own} in {own_bucket}"
        );
    }
    gzip_on_the_wire(&prom, &tap);
    drop(filler);
}
