#!/usr/bin/env bash
# The whole nodediag test suite, from a fresh Debian machine: installs what the tests
# need (Debian packages via apt-get, Rust components via rustup), then runs formatting,
# lints, unit and integration tests (fixture trees and the real kernel), the golden
# /metrics check, the deployment manifest checks, the alert rule tests, the dashboard
# check, and the end-to-end test against a real Prometheus.
#
# Real-kernel tests need root (network namespaces, veth pairs, cgroups, conntrack).
set -euo pipefail
cd "$(dirname "$0")/.."

# tool -> Debian package
declare -A packages=(
  [promtool]=prometheus   # promtool check metrics / rules, and /usr/bin/prometheus for tests/e2e_prometheus.rs
  [conntrack]=conntrack   # creates conntrack entries in the real-kernel tests
  [nft]=nftables          # makes conntrack track a test namespace's packets
  [ip]=iproute2           # network namespaces and veth pairs
  [sysctl]=procps         # ip_forward inside a test namespace (tests/notrack_table.rs)
  [setpriv]=util-linux    # an agent without CAP_NET_ADMIN (tests/conntrack_incident.rs)
  [fallocate]=util-linux  # fills the probed filesystem in tests/e2e_prometheus.rs
  [dnsmasq]=dnsmasq-base  # the real resolver of tests/dns_real.rs (the binary only, no system service)
  [fio]=fio               # the fsync benchmark's reference and the disk tests
  [losetup]=mount         # loop devices: the slow (blkio-throttled) ext4 of the fsync tests
  [mkfs.ext4]=e2fsprogs
  [python3]=python3       # manifest and dashboard checks
  [shellcheck]=shellcheck # lints the deployment scripts
  [containerd]=containerd # the real-node test's container runtime (with ctr)
  [runc]=runc
  [sha256sum]=coreutils   # deploy/oci-archive.sh
  [curl]=curl             # TLS and basic auth tests (tests/web_tls.rs)
  [openssl]=openssl       # makes the test certificates (tests/common/pki.rs)
)
# The real-node test's CNI plugins and its images' only binary (statically linked).
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] ||
  packages[/usr/lib/cni/bridge]=containernetworking-plugins
ldd /bin/busybox 2>&1 | grep -q "not a dynamic executable" ||
  packages[/bin/busybox-static]=busybox-static
missing=()
for tool in "${!packages[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${packages[$tool]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# PyYAML for the python3 on PATH, which need not be Debian's (pyenv, venv), and the
# Prometheus client's OpenMetrics parser (tests/golden_metrics.rs checks /metrics with it).
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml
python3 -c 'import prometheus_client.openmetrics.parser' 2>/dev/null ||
  python3 -m pip install --quiet prometheus-client
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

command -v kubectl >/dev/null 2>&1 || {
  echo "kubectl is needed for 'kubectl kustomize' (it ships with this project's build image)" >&2
  exit 1
}

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== alert rules and dashboard"
promtool check rules dashboards/alerts.yaml
promtool test rules dashboards/alerts_test.yaml
python3 tests/dashboard/check.py
echo "== deployment manifests"
bash tests/deploy/validate.sh
echo "== cargo test (unit, fixture, golden, real kernel, benches once)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --all-targets 2>&1 | tee "$log"
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
