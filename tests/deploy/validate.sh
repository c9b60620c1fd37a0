#!/usr/bin/env bash
# Validate nodediag's deployment files without a cluster:
#
#   - deploy/kubernetes renders with `kubectl kustomize`;
#   - every rendered built-in object validates against the Kubernetes OpenAPI
#     schemas (kubernetes-validate, strict: unknown fields fail), both for the
#     oldest supported Kubernetes version and for the newest one it knows;
#   - the ServiceMonitor and PrometheusRule (CRDs, no schema there) have the
#     right apiVersion/kind, and the rule spec equals dashboards/alerts.yaml;
#   - the DaemonSet keeps its security and host-access settings;
#   - the TLS and basic auth example (deploy/examples/tls-auth) renders,
#     validates, keeps those settings, and wires the Secrets, the HTTPS probes
#     and the ServiceMonitor's https scrape together;
#   - deploy/kubernetes/prometheusrule.yaml is up to date with its generator;
#   - dashboards/alerts.yaml covers every finding id exactly once, and, when
#     promtool is installed, loads and passes its unit tests
#     (dashboards/alerts_test.yaml);
#   - the node-problem-detector config uses only known finding ids;
#   - the Dockerfile builds with --locked and ends on the distroless image.
#
# Usage: tests/deploy/validate.sh
# Needs kubectl (for kustomize) and python3. Installs PyYAML and
# kubernetes-validate with pip when they are missing. promtool and shellcheck
# are used when present.
#
# Prints one line per check and ends with "deploy: N passed, M failed". Exits
# 1 if any check failed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

# Pinned so the schemas, and so the verdicts, do not change under us.
KUBERNETES_VALIDATE_SPEC="kubernetes-validate==1.37.0"
# Oldest Kubernetes the manifests support: the container securityContext field
# appArmorProfile is 1.30+. "latest" is the newest schema set the package ships.
K8S_VERSIONS="1.30.0 latest"

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }

# check NAME CMD...: run CMD; pass if it exits 0, else fail and show its output.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    pass "$name"
  else
    fail "$name"
    printf '%s\n' "$out" | sed 's/^/    /'
  fi
}

finish() {
  echo "deploy: $passed passed, $failed failed"
  if ((failed > 0)); then exit 1; fi
  exit 0
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check "$1" ||
    python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "$1"
}

# need_module IMPORT_NAME PIP_SPEC
need_module() {
  if python3 -c "import $1" 2>/dev/null; then return 0; fi
  echo "installing $2 with pip"
  pip_install "$2" >&2 || true
  python3 -c "import $1" 2>/dev/null
}

# ---- prerequisites -----------------------------------------------------------
if ! command -v python3 >/dev/null; then
  fail "python3 is installed"
  finish
fi
if ! need_module yaml PyYAML; then
  fail "PyYAML is importable"
  finish
fi
have_kv=1
need_module kubernetes_validate "$KUBERNETES_VALIDATE_SPEC" || have_kv=0

# ---- the Python half of the checks -------------------------------------------
# Each section prints "PASS name" or "FAIL name: why" lines; anything else is
# passed through as information.
cat >"$tmp/checks.py" <<'PY'
import json
import re
import sys

import yaml

section, root, rendered_path = sys.argv[1], sys.argv[2], sys.argv[3]
extra = sys.argv[4:]

# The agent's stable finding ids.
FINDINGS = [
    "dns_failures", "dns_slow", "conntrack_table_full", "conntrack_table_high", "conntrack_drops",
    "conntrack_insert_failed", "netns_leaked", "veth_orphaned",
    "cni_ipam_exhausted", "mtu_mismatch", "netdev_unregister_stuck",
    "fsync_slow", "disk_space_low", "inodes_low", "filesystem_readonly",
    "cpu_throttled", "cpu_throttled_kernel_bug", "cpu_pressure",
    "nic_link_down", "nic_speed_degraded", "nic_half_duplex", "nic_errors",
    "memory_pressure", "oom_kills", "pid_exhaustion", "fd_exhaustion",
    "inotify_watches_exhausted", "neighbor_table_overflow",
    "forwarding_disabled",
]
FAMILY_ALERTS = {
    "NodediagDNS", "NodediagConntrack", "NodediagCNI", "NodediagDisk",
    "NodediagCPUThrottling", "NodediagNIC", "NodediagNodePressure",
}
OTHER_ALERTS = {"NodediagCollectorFailing", "NodediagCollectorStale", "NodediagDown"}
CAPS = {"NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "SYSLOG"}
FSYNC_DIRS = {"/var/lib/etcd", "/var/lib/kubelet", "/var/lib/containerd"}
NPD_CONDITIONS = {
    "ConntrackFull": {"conntrack_table_full", "conntrack_drops"},
    "SlowDisk": {"fsync_slow", "filesystem_readonly"},
    "CNILeak": {"netns_leaked", "veth_orphaned", "cni_ipam_exhausted"},
    "CPUThrottling": {"cpu_throttled"},
    "NICDegraded": {"nic_link_down", "nic_speed_degraded", "nic_half_duplex"},
}


def check(name, fn):
    """Run fn; an exception of any kind (a failed assert included) fails it."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - every error is a failed check
        msg = str(e) or type(e).__name__
        print(f"FAIL {name}: {msg}")
    else:
        print(f"PASS {name}")


def load_rendered():
    with open(rendered_path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind):
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def load_alerts():
    with open(f"{root}/dashboards/alerts.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def alert_rules(alerts):
    return [r for g in alerts["groups"] for r in g["rules"] if "alert" in r]


def family_regex(rule):
    m = re.search(r'finding=~"([^"]+)"', rule["expr"])
    assert m, f"{rule['alert']}: no finding=~\"...\" matcher in expr"
    return m.group(1)


# ---- objects -----------------------------------------------------------------
def objects():
    docs = load_rendered()

    def kinds():
        want = {"Namespace", "ServiceAccount", "DaemonSet", "Service",
                "ServiceMonitor", "PrometheusRule"}
        got = [d["kind"] for d in docs]
        assert sorted(got) == sorted(want), f"rendered kinds {sorted(got)}"
    check("rendered objects are the six expected kinds", kinds)

    def namespaced():
        bad = [f"{d['kind']}/{d['metadata']['name']}" for d in docs
               if d["kind"] != "Namespace"
               and d["metadata"].get("namespace") != "nodediag"]
        assert not bad, f"not in namespace nodediag: {bad}"
    check("namespaced objects are in namespace nodediag", namespaced)

    def psa():
        labels = one(docs, "Namespace")["metadata"].get("labels", {})
        assert labels.get("pod-security.kubernetes.io/enforce") == "privileged", labels
    check("namespace allows the agent's host access (PSA enforce=privileged)", psa)

    def selector():
        svc = one(docs, "Service")
        ds = one(docs, "DaemonSet")
        pod_labels = ds["spec"]["template"]["metadata"]["labels"]
        sel = svc["spec"]["selector"]
        assert sel and all(pod_labels.get(k) == v for k, v in sel.items()), \
            f"Service selector {sel} does not match pod labels {pod_labels}"
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        assert "metrics" in ports, f"Service ports {list(ports)}"
        assert ports["metrics"]["port"] == 10360, ports["metrics"]
    check("Service selects the agent pods on port metrics/10360", selector)


# ---- schemas -----------------------------------------------------------------
def schemas():
    import kubernetes_validate as kv

    versions = [kv.latest_version() if v == "latest" else v for v in extra]
    for d in load_rendered():
        name = f"{d['kind']}/{d['metadata']['name']}"
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            print(f"SKIP schema of {name}: a CRD kind, not in the Kubernetes "
                  "schemas (checked separately below)")
            continue

        def validate(d=d):
            for v in versions:
                try:
                    kv.validate(d, v, strict=True)
                except kv.ValidationError as e:
                    path = ".".join(str(p) for p in e.path)
                    raise AssertionError(f"Kubernetes {v}: {path}: {e.message}")
        check(f"{name} validates against Kubernetes {', '.join(versions)} (strict)",
              validate)


# ---- CRD objects -------------------------------------------------------------
def crds():
    docs = load_rendered()

    def servicemonitor():
        sm = one(docs, "ServiceMonitor")
        svc = one(docs, "Service")
        assert sm["apiVersion"] == "monitoring.coreos.com/v1", sm["apiVersion"]
        sel = sm["spec"]["selector"]["matchLabels"]
        svc_labels = svc["metadata"].get("labels", {})
        assert all(svc_labels.get(k) == v for k, v in sel.items()), \
            f"selector {sel} does not match Service labels {svc_labels}"
        ports = [e.get("port") for e in sm["spec"]["endpoints"]]
        assert ports == ["metrics"], f"endpoint ports {ports}"
        assert sm["spec"]["endpoints"][0].get("path", "/metrics") == "/metrics"
    check("ServiceMonitor is monitoring.coreos.com/v1 and scrapes Service port metrics",
          servicemonitor)

    def prometheusrule():
        pr = one(docs, "PrometheusRule")
        assert pr["apiVersion"] == "monitoring.coreos.com/v1", pr["apiVersion"]
        assert pr["spec"] == {"groups": load_alerts()["groups"]}, \
            "spec differs from dashboards/alerts.yaml"
    check("PrometheusRule is monitoring.coreos.com/v1 and its spec equals dashboards/alerts.yaml",
          prometheusrule)


# ---- DaemonSet ---------------------------------------------------------------
def daemonset():
    ds = one(load_rendered(), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    containers = pod["containers"]
    c = next((c for c in containers if c["name"] == "nodediag"), None)
    sc = (c or {}).get("securityContext", {})
    args = (c or {}).get("args", [])

    def container():
        assert c is not None, "no container named nodediag"
        assert len(containers) == 1, f"{len(containers)} containers"
        assert c["image"].startswith("ghcr.io/nodediag/nodediag:"), c["image"]
        assert args[:1] == ["serve"], f"args start {args[:1]}"
    check("DaemonSet runs one nodediag container with `serve`", container)

    def not_privileged():
        assert sc.get("privileged", False) is False, sc.get("privileged")
    check("container is not privileged", not_privileged)

    def no_escalation():
        assert sc.get("allowPrivilegeEscalation") is False, sc.get("allowPrivilegeEscalation")
    check("allowPrivilegeEscalation is false", no_escalation)

    def ro_rootfs():
        assert sc.get("readOnlyRootFilesystem") is True, sc.get("readOnlyRootFilesystem")
    check("readOnlyRootFilesystem is true", ro_rootfs)

    def drop_all():
        drop = sc.get("capabilities", {}).get("drop")
        assert drop == ["ALL"], drop
    check("capabilities drop ALL", drop_all)

    def cap_add():
        add = sc.get("capabilities", {}).get("add", [])
        assert len(add) == len(set(add)) and set(add) == CAPS, \
            f"add {add}, want exactly {sorted(CAPS)}"
    check("capabilities add exactly " + ", ".join(sorted(CAPS)), cap_add)

    def seccomp():
        prof = sc.get("seccompProfile") or pod.get("securityContext", {}).get("seccompProfile")
        assert prof == {"type": "RuntimeDefault"}, prof
    check("seccompProfile is RuntimeDefault", seccomp)

    def run_as_root():
        assert sc.get("runAsUser") == 0, sc.get("runAsUser")
    check("runs as uid 0 (needed for host /proc and added capabilities)", run_as_root)

    def host_ns():
        assert pod.get("hostNetwork") is True, f"hostNetwork {pod.get('hostNetwork')}"
        assert pod.get("hostPID") is True, f"hostPID {pod.get('hostPID')}"
        assert pod.get("dnsPolicy") == "ClusterFirstWithHostNet", pod.get("dnsPolicy")
        assert not pod.get("hostIPC"), "hostIPC is not needed"
    check("hostNetwork and hostPID (not hostIPC) with dnsPolicy ClusterFirstWithHostNet", host_ns)

    def apparmor():
        # Without it the runtime's default AppArmor profile blocks reading
        # other processes' /proc/<pid>/ns/net and /proc/<pid>/fd.
        prof = sc.get("appArmorProfile") or pod.get("securityContext", {}).get("appArmorProfile")
        assert prof == {"type": "Unconfined"}, prof
    check("AppArmor profile is Unconfined (ptrace-read of host processes)", apparmor)

    def tolerations():
        tol = pod.get("tolerations", [])
        assert {"operator": "Exists"} in tol, f"no key-less operator: Exists in {tol}"
    check("tolerates every taint (operator: Exists)", tolerations)

    def priority():
        assert pod.get("priorityClassName") == "system-node-critical", pod.get("priorityClassName")
    check("priorityClassName is system-node-critical", priority)

    def no_token():
        assert pod.get("automountServiceAccountToken") is False, \
            pod.get("automountServiceAccountToken")
    check("no service account token is mounted", no_token)

    def node_name():
        env = {e["name"]: e for e in c.get("env", [])}
        ref = env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {})
        assert ref.get("fieldPath") == "spec.nodeName", env.get("NODE_NAME")
    check("NODE_NAME comes from fieldRef spec.nodeName", node_name)

    def port():
        ports = {p.get("name"): p for p in c.get("ports", [])}
        assert ports.get("metrics", {}).get("containerPort") == 10360, c.get("ports")
        assert "--listen=0.0.0.0:10360" in args or not any(a.startswith("--listen") for a in args), \
            "--listen does not match containerPort 10360"
    check("containerPort 10360 is named metrics", port)

    def probes():
        live = c.get("livenessProbe", {}).get("httpGet", {})
        ready = c.get("readinessProbe", {}).get("httpGet", {})
        assert (live.get("path"), live.get("port")) == ("/healthz", "metrics"), live
        assert (ready.get("path"), ready.get("port")) == ("/readyz", "metrics"), ready
    check("liveness on /healthz and readiness on /readyz, port metrics", probes)

    def resources():
        r = c.get("resources", {})
        want = {"requests": {"cpu": "10m", "memory": "32Mi"},
                "limits": {"cpu": "500m", "memory": "128Mi"}}
        assert r == want, r
    check("resources are 10m/32Mi requested, 500m/128Mi limit (README: measured usage)", resources)

    def strategy():
        s = ds["spec"].get("updateStrategy", {})
        assert s.get("type") == "RollingUpdate", s
        assert s.get("rollingUpdate", {}).get("maxUnavailable") == "10%", s
    check("RollingUpdate with maxUnavailable 10%", strategy)

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = c.get("volumeMounts", []) if c else []

    def host_path(m):
        return volumes.get(m["name"], {}).get("hostPath", {}).get("path")

    def rootfs():
        root_mounts = [m for m in mounts if m["mountPath"] == "/host"]
        assert len(root_mounts) == 1, f"mounts at /host: {root_mounts}"
        m = root_mounts[0]
        assert host_path(m) == "/", f"/host comes from hostPath {host_path(m)}"
        assert m.get("readOnly") is True, "host root is not readOnly"
        assert m.get("mountPropagation") == "HostToContainer", \
            f"mountPropagation {m.get('mountPropagation')}"
        for flag in ("--path.rootfs=/host", "--path.procfs=/host/proc",
                     "--path.sysfs=/host/sys"):
            assert flag in args, f"missing {flag}"
        for path, src in (("/host/proc", "/proc"), ("/host/sys", "/sys")):
            ms = [m for m in mounts if m["mountPath"] == path]
            if ms:  # optional, but read-only if present
                assert host_path(ms[0]) == src and ms[0].get("readOnly") is True, ms[0]
    check("host root is mounted read-only at /host (HostToContainer) and the path flags point there",
          rootfs)

    def writable():
        rw = [m for m in mounts if host_path(m) is not None and not m.get("readOnly")]
        for m in rw:
            hp = host_path(m)
            assert hp in FSYNC_DIRS, f"writable hostPath {hp} is not an fsync probe dir"
            assert m["mountPath"] == "/host" + hp, f"{hp} mounted at {m['mountPath']}"
            assert "subPath" not in m, m
        probe_flags = {a.split("=", 1)[1] for a in args if a.startswith("--fsync.path=")}
        assert probe_flags == {m["mountPath"] for m in rw}, \
            f"--fsync.path {sorted(probe_flags)} vs writable mounts {sorted(m['mountPath'] for m in rw)}"
        assert probe_flags, "no fsync probe directories"
    check("writable hostPath mounts are exactly the --fsync.path probe dirs", writable)


# ---- alerts ------------------------------------------------------------------
def alerts():
    a = load_alerts()
    rules = alert_rules(a)
    names = [r["alert"] for r in rules]

    def shape():
        assert [g["name"] for g in a["groups"]] == ["nodediag"], [g["name"] for g in a["groups"]]
        assert sorted(names) == sorted(FAMILY_ALERTS | OTHER_ALERTS), names
    check("alerts.yaml has group nodediag with the expected alerts", shape)

    def fields():
        for r in rules:
            n = r["alert"]
            assert r.get("for"), f"{n}: no for:"
            assert r.get("labels", {}).get("severity"), f"{n}: no severity label"
            ann = r.get("annotations", {})
            for k in ("summary", "description", "runbook_url"):
                assert ann.get(k), f"{n}: no {k} annotation"
            if n in FAMILY_ALERTS:
                assert r["for"] == "1m", f"{n}: for {r['for']}"
                assert r["labels"]["severity"].replace(" ", "") == "{{$labels.severity}}", \
                    f"{n}: severity is not taken from the series"
                for v in ("{{ $labels.subject }}", "{{ $labels.finding }}"):
                    assert v in ann["description"], f"{n}: description lacks {v}"
                assert ann["runbook_url"].endswith("README.md#{{ $labels.finding }}"), \
                    f"{n}: runbook_url {ann['runbook_url']}"
                assert "nodediag_finding_active" in r["expr"], f"{n}: expr"
    check("every alert has for, severity, summary, description and runbook_url", fields)

    def coverage():
        family = {r["alert"]: family_regex(r) for r in rules if r["alert"] in FAMILY_ALERTS}
        problems = []
        for f in FINDINGS:
            hits = [n for n, rx in family.items() if re.fullmatch(rx, f)]
            if len(hits) != 1:
                problems.append(f"{f} -> {hits or 'no alert'}")
        assert not problems, "; ".join(problems)
    check(f"each of the {len(FINDINGS)} finding ids is covered by exactly one family alert",
          coverage)


# ---- node-problem-detector -----------------------------------------------------
def npd():
    path = f"{root}/deploy/node-problem-detector/nodediag-monitor.json"
    cfg = {}

    def parse():
        nonlocal cfg
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
        assert isinstance(cfg, dict)
    check("NPD config is valid JSON", parse)
    if not cfg:
        return

    def seconds(s):
        m = re.fullmatch(r"(\d+)(ms|s|m|h)", s)
        assert m, f"duration {s!r}"
        return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]

    def header():
        assert cfg["plugin"] == "custom", cfg.get("plugin")
        assert cfg["source"] == "nodediag-custom-plugin-monitor", cfg.get("source")
        pc = cfg["pluginConfig"]
        want = {"invoke_interval", "timeout", "max_output_length", "concurrency",
                "enable_message_change_based_condition_update"}
        assert want <= set(pc), f"pluginConfig lacks {sorted(want - set(pc))}"
        assert pc["max_output_length"] == 80, pc["max_output_length"]
        assert isinstance(pc["concurrency"], int) and pc["concurrency"] >= 1
        assert isinstance(pc["enable_message_change_based_condition_update"], bool)
        seconds(pc["invoke_interval"])
        seconds(pc["timeout"])
    check("NPD pluginConfig has the custom-plugin fields", header)

    def conditions():
        conds = {c["type"]: c for c in cfg["conditions"]}
        assert set(conds) == set(NPD_CONDITIONS), sorted(conds)
        for t, c in conds.items():
            assert c.get("reason") and c.get("message"), f"{t}: default reason/message"
    check("NPD conditions are " + ", ".join(NPD_CONDITIONS), conditions)

    def rules():
        glob = seconds(cfg["pluginConfig"]["timeout"])
        got = {}
        for r in cfg["rules"]:
            where = r.get("condition")
            assert r["type"] == "permanent", f"{where}: type {r['type']}"
            assert where in NPD_CONDITIONS, f"rule for unknown condition {where}"
            assert r.get("reason"), f"{where}: no reason"
            assert r["path"].startswith("/") and r["path"].endswith("/nodediag"), r["path"]
            args = r["args"]
            assert args[:1] == ["check"], f"{where}: args {args}"
            ids = [args[i + 1] for i, a in enumerate(args) if a == "--finding"]
            assert ids, f"{where}: no --finding"
            unknown = [i for i in ids if i not in FINDINGS]
            assert not unknown, f"{where}: unknown finding ids {unknown}"
            for flag in ("--path.rootfs=/host", "--path.procfs=/host/proc",
                         "--path.sysfs=/host/sys"):
                assert flag in args, f"{where}: missing {flag}"
            if "timeout" in r:
                assert seconds(r["timeout"]) <= glob, \
                    f"{where}: rule timeout {r['timeout']} exceeds global timeout (NPD rejects that)"
            got.setdefault(where, set()).update(ids)
        assert got == NPD_CONDITIONS, f"condition -> findings {got}"
    check("NPD rules run `check --finding` with known ids for every condition", rules)


# ---- TLS and basic auth example overlay ------------------------------------------
def web_tls_auth():
    docs = load_rendered()
    ds = one(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    args = c.get("args", [])
    volumes = {v["name"]: v for v in pod.get("volumes", [])}

    def flags():
        assert "--web.config.file=/etc/nodediag/web/web-config.yml" in args, args
        assert "--web.unauthenticated-path=/healthz,/readyz" in args, args
        assert args[:1] == ["serve"] and "--fsync.path=/host/var/lib/etcd" in args, \
            f"the base's args were replaced, not extended: {args}"
    check("agent gets --web.config.file and leaves only the probes open", flags)

    def secrets():
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        for path, secret in (("/etc/nodediag/web", "nodediag-web-config"),
                             ("/etc/nodediag/tls", "nodediag-tls")):
            m = mounts.get(path)
            assert m and m.get("readOnly") is True, f"{path}: {m}"
            assert volumes[m["name"]]["secret"]["secretName"] == secret, volumes[m["name"]]
        with open(f"{root}/deploy/kubernetes/components/web-tls-auth/web-config.example.yml",
                  encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
        tls = cfg["tls_server_config"]
        assert tls["cert_file"].startswith("/etc/nodediag/tls/"), tls
        assert tls["key_file"].startswith("/etc/nodediag/tls/"), tls
        assert set(cfg) <= {"tls_server_config", "http_server_config",
                            "basic_auth_users", "rate_limit"}, sorted(cfg)
    check("Secrets mounted read-only where web-config.example.yml points", secrets)

    def probes():
        for probe in ("livenessProbe", "readinessProbe"):
            get = c[probe]["httpGet"]
            assert get.get("scheme") == "HTTPS", f"{probe}: {get}"
    check("probes use HTTPS", probes)

    def scrape():
        ep = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
        assert ep.get("scheme") == "https", ep
        tls = ep.get("tlsConfig", {})
        assert tls.get("ca", {}).get("secret", {}).get("name") == "nodediag-tls", tls
        assert tls.get("serverName"), "no serverName: nodes are scraped by IP"
        auth = ep.get("basicAuth", {})
        assert auth.get("username", {}).get("name") == "nodediag-scrape-auth", auth
        assert auth.get("password", {}).get("key") == "password", auth
    check("ServiceMonitor scrapes over https with the CA and basic auth", scrape)


# ---- Dockerfile ----------------------------------------------------------------
def dockerfile():
    with open(f"{root}/deploy/Dockerfile", encoding="utf-8") as f:
        lines = [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]
    froms = [l.split()[1] for l in lines if l.upper().startswith("FROM ")]

    def stages():
        assert froms and froms[0].startswith("rust:1-bookworm"), froms
        assert froms[-1] == "scratch", froms
    check("Dockerfile builds on rust:1-bookworm and ships FROM scratch", stages)

    def build():
        text = " ".join(lines)
        # The image and build-image.sh ship what deploy/build-release.sh builds: the
        # locked release build, static on glibc, whose path it prints.
        assert re.search(r"bin=\$\(deploy/build-release\.sh\)", text), \
            "the build stage does not build with deploy/build-release.sh"
        # The same layout as deploy/build-image.sh: both lay the files out with
        # stage-rootfs.sh, so comparing the file lists means checking this call.
        assert re.search(r'deploy/stage-rootfs\.sh "\$bin" /rootfs', text), \
            "the build stage does not lay out /rootfs with deploy/stage-rootfs.sh"
        with open(f"{root}/deploy/build-image.sh", encoding="utf-8") as f:
            assert '"$here/build-release.sh"' in f.read(), "build-image.sh does not use build-release.sh"
        with open(f"{root}/deploy/build-release.sh", encoding="utf-8") as f:
            release = f.read()
        assert "cargo build --release --locked --bin nodediag" in release, "build-release.sh: no locked release build"
        assert "target-feature=+crt-static" in release, "build-release.sh: not static on glibc"
    check("Dockerfile and build-image.sh ship deploy/build-release.sh's binary, laid out by deploy/stage-rootfs.sh", build)

    def entry():
        assert 'ENTRYPOINT ["/nodediag"]' in lines, "ENTRYPOINT"
        assert 'CMD ["serve"]' in lines, "CMD"
        final = lines[max(i for i, l in enumerate(lines) if l.upper().startswith("FROM ")):]
        copies = [l for l in final if l.upper().startswith(("COPY", "ADD", "RUN"))]
        assert copies == ["COPY --from=build /rootfs/ /"], copies
        with open(f"{root}/deploy/build-image.sh", encoding="utf-8") as f:
            script = f.read()
        for key, value in (("User", "\"65532:65532\""), ("Entrypoint", '["/nodediag"]'),
                           ("Cmd", '["serve"]'), ("ExposedPorts", '{"10360/tcp": {}}')):
            assert f'"{key}": {value}' in script, f"build-image.sh {key} is not {value}"
        for want in ("USER 65532:65532", "EXPOSE 10360"):
            assert want in final, f"final stage lacks {want}"
    check("final stage copies only the staged /rootfs; run config as build-image.sh's", entry)

    def ignore():
        with open(f"{root}/.dockerignore", encoding="utf-8") as f:
            pats = {l.strip().rstrip("/") for l in f if l.strip() and not l.startswith("#")}
        assert {"target", ".git"} <= pats, sorted(pats)
    check(".dockerignore excludes target/ and .git/", ignore)


{"objects": objects, "schemas": schemas, "crds": crds, "daemonset": daemonset,
 "alerts": alerts, "npd": npd, "web_tls_auth": web_tls_auth,
 "dockerfile": dockerfile}[section]()
PY

# py_section SECTION [ARGS...]: run a section of checks.py and tally its lines.
py_section() {
  local line section=$1
  shift
  while IFS= read -r line; do
    case $line in
      "PASS "*) pass "${line#PASS }" ;;
      "FAIL "*) fail "${line#FAIL }" ;;
      *) echo "$line" ;;
    esac
  done < <(python3 "$tmp/checks.py" "$section" "$root" "${rendered:-$tmp/rendered.yaml}" "$@" 2>&1 ||
    echo "FAIL $section checks crashed (exit $?)")
}

# ---- render ------------------------------------------------------------------
echo "== kustomize"
if ! command -v kubectl >/dev/null; then
  fail "kubectl is installed (needed for kubectl kustomize)"
  finish
fi
if kubectl kustomize deploy/kubernetes >"$tmp/rendered.yaml" 2>"$tmp/kustomize.err"; then
  pass "kubectl kustomize deploy/kubernetes renders"
else
  fail "kubectl kustomize deploy/kubernetes renders"
  sed 's/^/    /' "$tmp/kustomize.err"
  finish
fi
py_section objects

echo "== Kubernetes schemas"
if ((have_kv)); then
  # shellcheck disable=SC2086 # one argument per version
  py_section schemas $K8S_VERSIONS
else
  fail "kubernetes-validate is importable ($KUBERNETES_VALIDATE_SPEC)"
fi
py_section crds

echo "== DaemonSet"
py_section daemonset

echo "== alerts"
check "prometheusrule.yaml is up to date (gen-prometheusrule.sh --check)" \
  deploy/kubernetes/gen-prometheusrule.sh --check
py_section alerts
if command -v promtool >/dev/null; then
  check "promtool check rules dashboards/alerts.yaml" promtool check rules dashboards/alerts.yaml
  check "promtool test rules dashboards/alerts_test.yaml" \
    promtool test rules dashboards/alerts_test.yaml
else
  echo "SKIP promtool checks: promtool is not installed"
fi

echo "== TLS and basic auth overlay (deploy/examples/tls-auth)"
if kubectl kustomize deploy/examples/tls-auth >"$tmp/tls-auth.yaml" 2>"$tmp/kustomize.err"; then
  pass "kubectl kustomize deploy/examples/tls-auth renders"
  if ((have_kv)); then
    # shellcheck disable=SC2086 # one argument per version
    rendered="$tmp/tls-auth.yaml" py_section schemas $K8S_VERSIONS
  fi
  rendered="$tmp/tls-auth.yaml" py_section daemonset
  rendered="$tmp/tls-auth.yaml" py_section web_tls_auth
else
  fail "kubectl kustomize deploy/examples/tls-auth renders"
  sed 's/^/    /' "$tmp/kustomize.err"
fi

echo "== node-problem-detector"
py_section npd

echo "== Dockerfile"
py_section dockerfile

echo "== scripts"
if command -v shellcheck >/dev/null; then
  check "shellcheck on the deploy scripts" \
    shellcheck deploy/kubernetes/gen-prometheusrule.sh tests/deploy/validate.sh \
      deploy/build-image.sh deploy/build-release.sh deploy/stage-rootfs.sh deploy/oci-archive.sh \
      tests/reliability/http.sh
else
  echo "SKIP shellcheck: not installed"
fi

finish
