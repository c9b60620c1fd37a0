#!/usr/bin/env bash
# What one round of the dns collector costs on a node with N pod network namespaces
# (default 500), at the default --dns.pods 3 and --interval 15s: each namespace holds
# two processes (a sandbox and a container, both seeing the kubelet-style
# resolv.conf), placed in pod cgroups and named by kubelet log directories under a
# temporary rootfs whose kubelet config gives clusterDNS 10.96.0.10. The namespaces
# hang off a bridge in a node namespace that DNATs 10.96.0.10:53 to dnsmasq in a
# server namespace, for forwarded packets and the node's own, as kube-proxy does.
# examples/dns_collect runs in the node namespace and prints, per round and as
# medians: wall time, CPU (probe threads included), and the part spent finding the
# pod namespaces (one walk of procfs).
#
# Needs root, iproute2, nftables, dnsmasq and the cgroup v1 pids hierarchy at
# /sys/fs/cgroup/pids. Everything it creates is removed on exit, also on failure.
#   benches/dns_collect_scale.sh [N] [ROUNDS]   DNS_COLLECT=path/to/dns_collect to pick the binary
set -euo pipefail

N=${1:-500}
ROUNDS=${2:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DNS_COLLECT:-}
if [ -z "$BIN" ]; then
  for b in "$here/target/release/examples/dns_collect" "$here/target/debug/examples/dns_collect"; do
    [ -x "$b" ] && BIN=$b && break
  done
fi
[ -x "${BIN:-}" ] || { echo "build it first (cargo build --release --example dns_collect)"; exit 2; }
[ "$(id -u)" = 0 ] || { echo "skipped: needs root"; exit 0; }
for tool in ip nft dnsmasq; do
  command -v "$tool" >/dev/null || { echo "skipped: $tool is not installed"; exit 0; }
done
pids_root=/sys/fs/cgroup/pids
[ -f "$pids_root/cgroup.procs" ] || { echo "skipped: no cgroup v1 pids hierarchy at $pids_root"; exit 0; }

tag="ndc$$"
srv="$tag-srv"
node="$tag-node"
work=$(mktemp -d)
dnsmasq_pid=
procs=()
pod_uid() { printf '%08x-bbbb-4000-8000-%012x' $$ "$1"; }
cleanup() {
  [ -n "$dnsmasq_pid" ] && kill "$dnsmasq_pid" 2>/dev/null && wait "$dnsmasq_pid" 2>/dev/null
  for p in "${procs[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for i in $(seq 1 "$N"); do
    pod="$pids_root/kubepods/burstable/pod$(pod_uid "$i")"
    rmdir "$pod/$(printf '%064x' "$i")" "$pod" 2>/dev/null || true
  done
  rmdir "$pids_root/kubepods/burstable" "$pids_root/kubepods" 2>/dev/null || true
  {
    for i in $(seq 1 "$N"); do echo "netns delete $tag-p$i"; done
    echo "netns delete $node"
    echo "netns delete $srv"
  } | ip -force -batch - 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ms() { date +%s%N; }

echo "creating a server, a node and $N pod namespaces with two processes each..."
t0=$(ms)
ip -batch - <<EOB
netns add $srv
netns add $node
EOB
ip -n "$srv" link set lo up
ip -n "$node" link set lo up
ip -n "$node" link add tosrv type veth peer name srv0 netns "$srv"
ip -n "$node" addr add 10.53.0.1/24 dev tosrv
ip -n "$node" link set tosrv up
ip -n "$srv" addr add 10.53.0.2/24 dev srv0
ip -n "$srv" link set srv0 up
ip -n "$srv" route add default via 10.53.0.1
ip -n "$node" route add 10.96.0.0/12 via 10.53.0.2
ip -n "$node" link add br0 type bridge
ip -n "$node" addr add 10.64.0.1/16 dev br0
ip -n "$node" link set br0 up
ip netns exec "$node" sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$node" nft -f - <<'EON'
table ip nddns_nat {
  chain prerouting {
    type nat hook prerouting priority dstnat;
    ip daddr 10.96.0.10 udp dport 53 dnat to 10.53.0.2:53
    ip daddr 10.96.0.10 tcp dport 53 dnat to 10.53.0.2:53
  }
  chain output {
    type nat hook output priority -100;
    ip daddr 10.96.0.10 udp dport 53 dnat to 10.53.0.2:53
    ip daddr 10.96.0.10 tcp dport 53 dnat to 10.53.0.2:53
  }
}
EON
for i in $(seq 1 "$N"); do echo "netns add $tag-p$i"; done | ip -batch -
{
  for i in $(seq 1 "$N"); do
    echo "link add v$i type veth peer name eth0 netns $tag-p$i"
    echo "link set v$i master br0 up"
  done
} | ip -n "$node" -batch -
for i in $(seq 1 "$N"); do
  printf 'link set lo up\nlink set eth0 up\naddr add 10.64.%d.%d/16 dev eth0\nroute add default via 10.64.0.1\n' \
    $((i / 250 + 1)) $((i % 250 + 2)) | ip -n "$tag-p$i" -batch -
done
echo "10.96.0.1 kubernetes.default.svc.cluster.local" > "$work/hosts"
ip netns exec "$srv" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv \
  --no-hosts --user=root --bind-interfaces --listen-address=10.53.0.2 \
  --addn-hosts="$work/hosts" --local=/cluster.local/ --local=/invalid/ \
  --pid-file="$work/dnsmasq.pid" --log-facility="$work/dnsmasq.log" &
dnsmasq_pid=$!

rootfs="$work/rootfs"
mkdir -p "$rootfs/var/lib/kubelet" "$rootfs/var/log/containers"
printf 'kind: KubeletConfiguration\nclusterDNS:\n- 10.96.0.10\nclusterDomain: cluster.local\n' \
  > "$rootfs/var/lib/kubelet/config.yaml"
printf 'nameserver 10.96.0.10\nsearch bench.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n' \
  > "$work/resolv.conf"
for i in $(seq 1 "$N"); do
  uid=$(pod_uid "$i")
  cg="$pids_root/kubepods/burstable/pod$uid/$(printf '%064x' "$i")"
  mkdir -p "$cg"
  for _ in 1 2; do
    # shellcheck disable=SC2016 # $0 is the inner shell's first argument
    ip netns exec "$tag-p$i" sh -c 'mount --bind "$0" /etc/resolv.conf && exec sleep 3600' "$work/resolv.conf" &
    procs+=($!)
    echo $! > "$cg/cgroup.procs"
  done
  mkdir -p "$rootfs/var/log/pods/bench_web-${i}_$uid"
done
nprocs=$( (find /proc -maxdepth 1 -name '[0-9]*' 2>/dev/null || true) | wc -l)
echo "  set up in $(( ($(ms) - t0) / 1000000 )) ms; $nprocs processes on the host"

echo "== $ROUNDS rounds of the dns collector ($BIN), 3 pods a round, budget 7.5 s:"
ip netns exec "$node" "$BIN" --rootfs "$rootfs" --pod-namespace bench --rounds "$ROUNDS" > "$work/out.json"
sed -n '/"median"/,/}/p' "$work/out.json"
grep -o '"distinct_pods_probed": [0-9]*' "$work/out.json"
grep -o '"wall_ms": [0-9.]*' "$work/out.json" | head -n 3 | sed 's/^/  first rounds: /'
grep -c '"failed": 0' "$work/out.json" | sed 's/^/  rounds without a failed query: /'
grep -A3 '"failures": \[$' "$work/out.json" | grep -v '"failures"' | sed 's/^ */  failed: /' | head -n 8
grep -o '"softnet_dropped": [0-9]*' "$work/out.json" | sed -n '1p;$p' | sed 's/^/  input backlog drops since boot, first and last round: /'
