//! End to end with a real Prometheus: a full conntrack table in a fresh network
//! namespace, nodediag and Prometheus both running in it, Prometheus scraping every
//! second and evaluating dashboards/alerts.yaml. Asserts through Prometheus's HTTP
//! API that NodediagConntrack fires for conntrack_table_full and conntrack_drops,
//! then runs every PromQL expression of dashboards/nodediag.json against it.
//!
//! Needs root, nft and Debian's `prometheus` package (tests/run.sh installs both).

mod common;

use common::conntrack::{have, is_root, ConntrackMax, Netns};
use common::{in_netns, skip, wait_for, Agent};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROMETHEUS: &str = "/usr/bin/prometheus";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
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
