#!/usr/bin/env python3
"""Static checks of the Grafana dashboard and the alert rules' links.

    python3 tests/dashboard/check.py

- dashboards/nodediag.json is valid JSON with the `datasource` and `node`
  template variables; every panel queries `${datasource}`, has non-empty
  expressions, and filters every nodediag series by `instance=~"$node"`;
- every metric an expression uses is one nodediag exports (see
  exported_metrics() and PENDING_METRICS);
- the panels the dashboard promises exist;
- every runbook_url in dashboards/alerts.yaml points at a README heading;
- dashboards/alerts_test.yaml tests every alert both firing (with a
  runbook_url) and silent.

Whether the expressions parse and return data is checked against a real
Prometheus by tests/e2e_prometheus.rs. Prints one PASS/FAIL line per check;
exits 1 if any failed. Needs python3 with PyYAML.
"""
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "nodediag.json"
ALERTS = ROOT / "dashboards" / "alerts.yaml"
ALERTS_TEST = ROOT / "dashboards" / "alerts_test.yaml"
README = ROOT / "README.md"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Metrics of collectors that are still being written (none today): a dashboard
# panel may be ready before its collector ships. Each name is
# checked against agent/src once it appears there; until then it must be
# listed here, with the collector that will export it. When a name shows up in
# agent/src this check says so, and the entry can go.
PENDING_METRICS: dict[str, str] = {}

# Finding ids whose README section arrives with their collector (same reason).
# The family alerts link to README.md#<finding id> for every id.
PENDING_DOCS: set[str] = set()

# Panels the dashboard must have (title -> a metric its queries must use).
REQUIRED_PANELS = {
    "Active findings": "nodediag_finding_active",
    "DNS query results": "nodediag_dns_requests_total",
    "DNS lookup latency": "nodediag_dns_lookup_duration_seconds_bucket",
    "Conntrack table usage": "nodediag_conntrack_entries_limit",
    "Conntrack drops": "nodediag_conntrack_drop_total",
    "Conntrack insert failures": "nodediag_conntrack_insert_failed_total",
    "NIC speed": "nodediag_nic_speed_bytes_per_second",
    "NIC errors and drops": "nodediag_nic_receive_errors_total",
    "fsync latency percentiles": "nodediag_fsync_duration_seconds_bucket",
    "fsync latency heatmap": "nodediag_fsync_duration_seconds_bucket",
    "Top throttled containers": "nodediag_cgroup_cpu_throttled_periods_total",
    "Network namespaces": "nodediag_netns_namespaces",
    "Host-side veths": "nodediag_netns_veths",
    "Leaked namespaces and orphaned veths": "nodediag_netns_veths",
    "Node pressure findings": "nodediag_finding_active",
    "Memory available": "nodediag_memory_available_bytes",
    "Pressure stall (avg60)": "nodediag_pressure_stall_ratio",
    "Collectors": "nodediag_collector_success",
    "Collection duration": "nodediag_collector_duration_seconds",
}

METRIC = re.compile(r"\bnodediag_[a-z0-9_]+")
# A metric name with its optional selector; PromQL names cannot be followed by
# `(`, which tells them apart from nothing here (no nodediag_ functions).
SELECTOR = re.compile(r"\b(nodediag_[a-z0-9_]+)(\{[^}]*\})?")

failed = 0


def check(name, fn):
    global failed
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - any error is a failed check
        failed += 1
        print(f"FAIL {name}: {str(e) or type(e).__name__}")
    else:
        print(f"PASS {name}")


def exported_metrics():
    """Names the agent on this branch exports: every "nodediag_..." literal in
    agent/src/metrics and the web server's families (agent/src/http/web_metrics.rs),
    the golden /metrics (which has the conntrack counters whose names are built at
    run time), and the _bucket/_sum/_count series of histograms (a histogram is
    native too when Prometheus ingests native histograms: then its bare name)."""
    names = set()
    sources = list((ROOT / "agent" / "src" / "metrics").rglob("*.rs"))
    sources.append(ROOT / "agent" / "src" / "http" / "web_metrics.rs")
    for rs in sources:
        text = rs.read_text(encoding="utf-8")
        names.update(re.findall(r'"(nodediag_[a-z0-9_]+)"', text))
        for h in re.findall(r'\.histogram\(\s*"(nodediag_[a-z0-9_]+)"', text):
            names.update({h + "_bucket", h + "_sum", h + "_count"})
    golden = ROOT / "tests" / "golden" / "metrics.prom"
    for line in golden.read_text(encoding="utf-8").splitlines():
        m = re.match(r"(nodediag_[a-z0-9_]+)[{ ]", line)
        if m:
            names.add(m.group(1))
    return names


def panels_of(dash):
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows hold their panels
    return out


def main():
    dash = {}

    def valid_json():
        nonlocal dash
        dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        assert isinstance(dash, dict), "not a JSON object"
        assert dash.get("uid") and dash.get("title"), "no uid/title"
        assert isinstance(dash.get("schemaVersion"), int) and dash["schemaVersion"] >= 36, \
            f"schemaVersion {dash.get('schemaVersion')}"
    check("dashboards/nodediag.json is valid JSON with uid, title, schemaVersion", valid_json)
    if not dash:
        return

    panels = panels_of(dash)
    queried = [p for p in panels if p.get("type") != "row"]
    targets = [(p, t) for p in queried for t in p.get("targets", [])]

    def variables():
        by_name = {v["name"]: v for v in dash["templating"]["list"]}
        ds = by_name.get("datasource")
        assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", f"datasource {ds}"
        node = by_name.get("node")
        assert node and node["type"] == "query", f"node {node}"
        q = node["query"]["query"] if isinstance(node["query"], dict) else node["query"]
        assert q == "label_values(nodediag_build_info, instance)", q
        assert node["datasource"] == DATASOURCE, node["datasource"]
        assert node.get("multi") is True and node.get("includeAll") is True, "node: multi + all"
        assert node.get("allValue") == ".*", f"allValue {node.get('allValue')}"
    check("template variables: datasource (prometheus) and node (multi, all)", variables)

    def datasources():
        bad = [p["title"] for p in queried if p.get("datasource") != DATASOURCE]
        bad += [f"{p['title']}/{t.get('refId')}" for p, t in targets
                if t.get("datasource", DATASOURCE) != DATASOURCE]
        assert not bad, f"not ${{datasource}}: {bad}"
    check("every panel and target uses ${datasource}", datasources)

    def expressions():
        empty = [p["title"] for p in queried if not p.get("targets")]
        empty += [f"{p['title']}/{t.get('refId')}" for p, t in targets
                  if not str(t.get("expr", "")).strip()]
        assert not empty, f"no expression: {empty}"
    check("every panel has targets and every target a non-empty expression", expressions)

    def node_filter():
        bad = []
        for p, t in targets:
            for name, sel in SELECTOR.findall(t["expr"]):
                if name == "nodediag_build_info":
                    continue
                if 'instance=~"$node"' not in sel:
                    bad.append(f"{p['title']}: {name}{sel}")
        assert not bad, "selectors without instance=~\"$node\": " + "; ".join(bad)
    check('every nodediag selector filters instance=~"$node"', node_filter)

    def layout():
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), "duplicate panel ids"
        for p in panels:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, f"{p['title']}: {g}"
    check("panel ids are unique and panels fit the 24-column grid", layout)

    def metric_names():
        exported = exported_metrics()
        used = {m for _, t in targets for m in METRIC.findall(t["expr"])}
        unknown = sorted(used - exported - set(PENDING_METRICS))
        assert not unknown, f"not exported by nodediag: {unknown}"
        shipped = sorted(set(PENDING_METRICS) & exported)
        if shipped:
            print(f"NOTE now exported, remove from PENDING_METRICS: {shipped}")
        unused = sorted(set(PENDING_METRICS) - used)
        assert not unused, f"PENDING_METRICS not used by the dashboard: {unused}"
    check("every metric in an expression is exported (or listed as pending)", metric_names)

    def required():
        by_title = {p["title"]: p for p in queried}
        missing = [t for t in REQUIRED_PANELS if t not in by_title]
        assert not missing, f"missing panels: {missing}"
        wrong = [t for t, m in REQUIRED_PANELS.items()
                 if not any(m in x["expr"] for x in by_title[t]["targets"])]
        assert not wrong, f"panels not querying their metric: {wrong}"
    check(f"the {len(REQUIRED_PANELS)} promised panels exist and query their metric", required)

    alerts = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    rules = [r for g in alerts["groups"] for r in g["rules"] if "alert" in r]
    readme = README.read_text(encoding="utf-8")
    anchors = {slug(m) for m in re.findall(r"^#{1,6} (.+?)\s*$", readme, re.M)}
    # Each rule family declares its findings as FindingDef constants.
    finding_ids = sorted({i for f in (ROOT / "agent" / "src" / "diagnose").rglob("*.rs")
                          for i in re.findall(r'FindingDef\s*\{\s*id:\s*"([a-z0-9_]+)"',
                                              f.read_text(encoding="utf-8"))})

    def runbooks():
        problems = []
        for r in rules:
            url = r["annotations"]["runbook_url"]
            base, _, anchor = url.partition("#")
            if not base.endswith("/README.md"):
                problems.append(f"{r['alert']}: {url} is not the README")
            if anchor.replace(" ", "") == "{{$labels.finding}}":
                rx = re.search(r'finding=~"([^"]+)"', r["expr"]).group(1)
                for f in finding_ids:
                    if re.fullmatch(rx, f) and f not in anchors and f not in PENDING_DOCS:
                        problems.append(f"{r['alert']}: no README heading ### {f}")
            elif anchor not in anchors:
                problems.append(f"{r['alert']}: no README heading for #{anchor}")
        assert not problems, "; ".join(problems)
        documented = sorted(PENDING_DOCS & anchors)
        if documented:
            print(f"NOTE now documented, remove from PENDING_DOCS: {documented}")
        assert len(finding_ids) >= 27, f"read only {len(finding_ids)} ids from the catalog"
    check("every runbook_url anchor in alerts.yaml is a README heading", runbooks)

    def unit_tests():
        doc = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))
        fires, silent = set(), set()
        for t in doc["tests"]:
            for a in t.get("alert_rule_test", []):
                exp = a.get("exp_alerts") or []
                (fires if exp else silent).add(a["alertname"])
                for e in exp:
                    assert e.get("exp_annotations", {}).get("runbook_url"), \
                        f"{a['alertname']} at {a['eval_time']}: no runbook_url expected"
        names = {r["alert"] for r in rules}
        assert names <= fires, f"never tested firing: {sorted(names - fires)}"
        assert names <= silent, f"never tested silent: {sorted(names - silent)}"
    check("alerts_test.yaml tests every alert firing (with runbook_url) and silent", unit_tests)

    print(f"dashboard: {len(queried)} panels, {len(targets)} queries; "
          f"{'FAILED' if failed else 'ok'}")


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation other than - and
    _ dropped, spaces to dashes."""
    s = re.sub(r"[`*]", "", heading).strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


if __name__ == "__main__":
    main()
    sys.exit(1 if failed else 0)
