//! End to end on fixture trees: the real binary serves /metrics, which must match the
//! checked-in golden files in both text formats (0.0.4 and OpenMetrics) and pass their
//! linters (`promtool check metrics` on both, the OpenMetrics parser of the Prometheus
//! Python client); protobuf is served to a scraper that asks for it.
//!
//! Regenerate the golden files after an intended change:
//! `UPDATE_GOLDEN=1 cargo test --test golden_metrics`

mod common;

use common::{
    fixture, get_with, openmetrics_check, promtool_check, promtool_check_openmetrics, Agent,
};
use std::io::Read;
use std::path::PathBuf;

/// Values that change from run to run are masked before the diff.
const VOLATILE: &[&str] = &[
    "nodediag_collector_duration_seconds",
    "nodediag_collector_cpu_seconds_total",
    "nodediag_collector_last_success_timestamp_seconds",
    "nodediag_collector_runs_total",
];

const OPENMETRICS: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
/// What Prometheus 2.42 sends with --enable-feature=native-histograms.
const PROTOBUF: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn degraded_agent() -> Agent {
    let root = fixture("degraded");
    let p = |s: &str| root.join(s).to_string_lossy().into_owned();
    let agent = Agent::start(&[
        "--no-netlink",
        "--path.procfs",
        &p("proc"),
        "--path.sysfs",
        &p("sys"),
        "--path.rootfs",
        &p("rootfs"),
        "--node-name",
        "fixture-node",
        "--interval",
        "200ms",
        "--nic.expected-speed",
        "eth0=10000",
    ]);
    agent.wait_settled();
    agent
}

fn normalise(metrics: &str) -> String {
    metrics
        .lines()
        .map(|l| {
            let volatile = !l.starts_with('#') && VOLATILE.iter().any(|v| l.starts_with(v));
            match (volatile, l.rsplit_once(' ')) {
                (true, Some((series, _))) => format!("{series} <volatile>\n"),
                _ => format!("{l}\n"),
            }
        })
        .collect()
}

/// Diffs a scrape with its golden file (or rewrites the file under UPDATE_GOLDEN).
fn assert_golden(body: &str, file: &str) {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    let got = normalise(body);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).expect("golden file (UPDATE_GOLDEN=1 to create)");
    if got != want {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .filter(|(a, b)| a != b)
            .take(10)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect();
        panic!(
            "/metrics differs from {} ({} vs {} lines); first differences:\n{}\n\
             regenerate with UPDATE_GOLDEN=1 if intended",
            golden.display(),
            want.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
}

/// (status, Content-Type, body) of GET /metrics with `accept`.
fn scrape(agent: &Agent, accept: &str) -> (u16, String, Vec<u8>) {
    let r = ureq::get(&agent.url("/metrics"))
        .set("Accept", accept)
        .call()
        .expect("GET /metrics");
    let content_type = r.header("Content-Type").unwrap_or("").to_string();
    let status = r.status();
    let mut body = Vec::new();
    r.into_reader().read_to_end(&mut body).unwrap();
    (status, content_type, body)
}

#[test]
fn metrics_match_the_golden_files_and_pass_the_linters() {
    let agent = degraded_agent();
    let (status, body) = agent.get("/metrics");
    assert_eq!(status, 200);
    assert_golden(&body, "metrics.prom");
    promtool_check(&body);

    let (status, content_type, om) = scrape(&agent, OPENMETRICS);
    assert_eq!(status, 200);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let om = String::from_utf8(om).expect("UTF-8");
    assert_golden(&om, "metrics.openmetrics");
    openmetrics_check(&om);
    promtool_check_openmetrics(&om);
}

#[test]
fn gzip_is_served_to_a_scraper_that_asks_and_reads_as_the_golden_files() {
    let agent = degraded_agent();
    // Prometheus's order in the golden test: text first, then OpenMetrics.
    for (accept, golden) in [
        ("text/plain;version=0.0.4", "metrics.prom"),
        (OPENMETRICS, "metrics.openmetrics"),
    ] {
        let r = ureq::get(&agent.url("/metrics"))
            .set("Accept", accept)
            .set("Accept-Encoding", "gzip")
            .call()
            .expect("GET /metrics");
        assert_eq!(r.header("Content-Encoding"), Some("gzip"));
        assert_eq!(r.header("Vary"), Some("accept, accept-encoding"));
        let length: usize = r.header("Content-Length").unwrap().parse().unwrap();
        let mut compressed = Vec::new();
        r.into_reader().read_to_end(&mut compressed).unwrap();
        assert_eq!(compressed.len(), length);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_string(&mut text)
            .expect("one gzip stream, its CRC-32 and length right");
        assert!(
            compressed.len() * 3 < text.len(),
            "{} of {}",
            compressed.len(),
            text.len()
        );
        assert_golden(&text, golden);
    }
    let r = ureq::get(&agent.url("/metrics"))
        .set("Accept-Encoding", "gzip;q=0, identity")
        .call()
        .unwrap();
    assert_eq!(r.header("Content-Encoding"), None);
    assert!(r
        .into_string()
        .unwrap()
        .contains("# TYPE nodediag_scrapes_total counter\n"));
}

/// (name, type) of each length-delimited MetricFamily message.
fn protobuf_families(mut body: &[u8]) -> Vec<(String, String)> {
    use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
        MetricFamily, MetricType,
    };
    use prost_014::Message;
    let mut families = Vec::new();
    while !body.is_empty() {
        let family = MetricFamily::decode_length_delimited(&mut body).expect("a MetricFamily");
        let kind = match MetricType::try_from(family.r#type) {
            Ok(MetricType::Counter) => "counter",
            Ok(MetricType::Gauge) => "gauge",
            Ok(MetricType::Histogram) => "histogram",
            other => panic!("{}: unexpected type {other:?}", family.name),
        };
        families.push((family.name, kind.to_string()));
    }
    families
}

/// (name, type) of each `# TYPE` line of a text 0.0.4 scrape.
fn text_families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (name, kind) = l.strip_prefix("# TYPE ")?.split_once(' ')?;
            Some((name.to_string(), kind.to_string()))
        })
        .collect()
}

#[test]
fn each_format_is_served_when_asked_for_and_counted() {
    let agent = degraded_agent();
    let (_, content_type, om) = scrape(&agent, OPENMETRICS);
    let om = String::from_utf8(om).unwrap();
    assert!(content_type.starts_with("application/openmetrics-text"));
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE nodediag_conntrack_drop counter\n"));
    assert!(om.contains("\nnodediag_conntrack_drop_total 26\n"));

    let (status, content_type, proto) = scrape(&agent, PROTOBUF);
    assert_eq!(status, 200);
    assert_eq!(
        content_type,
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
    );
    let (_, text) = agent.get("/metrics");
    // Prometheus stores what protobuf names, and the dashboard and the alerts query
    // the 0.0.4 names: the same families, in the same order, of the same types.
    assert_eq!(protobuf_families(&proto), text_families(&text));
    assert!(text.contains("# TYPE nodediag_conntrack_drop_total counter\n"));
    assert!(!text.contains("# EOF"));
    for line in [
        "nodediag_scrapes_total{format=\"text\"} 1",
        "nodediag_scrapes_total{format=\"openmetrics\"} 1",
        "nodediag_scrapes_total{format=\"protobuf\"} 1",
    ] {
        assert!(
            text.contains(&format!("{line}\n")),
            "no {line:?} in\n{text}"
        );
    }
    let (status, _) = get_with(&agent.url("/metrics"), Some("*/*"));
    assert_eq!(status, 200);
}

#[test]
fn the_api_and_report_explain_the_fixture_problems() {
    let agent = degraded_agent();
    let mut found = agent.findings();
    found.sort();
    let expected: Vec<(String, String)> = [
        ("conntrack_table_full", "host"),
        ("nic_half_duplex", "eth1"),
        ("nic_link_down", "eth2"),
        ("nic_speed_degraded", "eth0"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(found, expected);

    let v = agent.get_json("/api/v1/findings?severity=critical");
    assert_eq!(v["node"], "fixture-node");
    let ids: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["conntrack_table_full", "nic_link_down"]);
    let full = &v["findings"][0];
    assert_eq!(full["evidence"]["entries"], 250000);
    assert!(full["remedy"]
        .as_str()
        .unwrap()
        .contains("nf_conntrack_max"));
    assert!(full["since"].as_str().unwrap().ends_with('Z'));

    let nic = agent.get_json("/api/v1/collectors/nic");
    assert_eq!(nic["status"]["state"], "ok");
    assert!(nic["sampled_at"].is_string());
    let veth = nic["sample"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "veth1a2b3c4d")
        .unwrap();
    assert_eq!(veth["class"], "virtual");
    assert!(veth["speed_mbps"].is_null(), "speed -1 is absent, not -1");

    let (status, text) = agent.get("/");
    assert_eq!(status, 200);
    assert!(
        text.starts_with("CRITICAL: conntrack_table_full host"),
        "{text}"
    );
    assert!(text.contains("remedy:"));
    assert!(text.contains("conntrack  ok"));
}

#[test]
fn bad_requests_get_json_errors() {
    let agent = degraded_agent();
    for (path, code, needle) in [
        ("/nope", 404, "no such endpoint"),
        (
            "/api/v1/findings?sevrity=critical",
            400,
            "unknown query parameter",
        ),
        (
            "/api/v1/findings?severity=bad",
            400,
            "expected info, warning or critical",
        ),
        (
            "/api/v1/findings?finding=made_up",
            400,
            "unknown finding id",
        ),
        ("/api/v1/collectors/made_up", 404, "no collector named"),
        ("/metrics?x=1", 400, "unknown query parameter"),
    ] {
        let (status, body) = agent.get(path);
        assert_eq!(status, code, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    let status = ureq::post(&agent.url("/")).call().unwrap_err();
    match status {
        ureq::Error::Status(code, r) => {
            assert_eq!(code, 405);
            assert!(r.into_string().unwrap().contains("read-only"));
        }
        other => panic!("{other}"),
    }
    assert_eq!(agent.get("/healthz").0, 200);
    assert_eq!(agent.get("/readyz").0, 200);
}
