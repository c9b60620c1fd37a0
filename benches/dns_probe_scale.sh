#!/usr/bin/env bash
# What the DNS probe costs on a node with N pod network namespaces (default 500):
# each pod namespace hangs off a bridge in a node namespace that DNATs the service
# address 10.96.0.10:53 to dnsmasq in a server namespace, as in tests/dns_real.rs.
# Measures, with examples/dns_probe:
#   1. rounds of 3 namespaces at a time (the dns collector's default --dns.pods),
#      over all N, each namespace's first DNS traffic: the cost of one collector
#      round while the fresh interfaces still flood the bridge with IPv6 chatter;
#   2. one namespace at a time: the cost per namespace;
#   3. rounds of 3 again, on namespaces seen before;
#   4. a kept probe thread's setns there and back and the hand-back alone (no
#      query), 3 at a time over all N.
#
# Needs root, iproute2, nftables and dnsmasq. Everything it creates is removed on
# exit, also on failure.
#   benches/dns_probe_scale.sh [N]      DNS_PROBE=path/to/dns_probe to pick the binary,
#                                       STATIC_GATEWAY=1 to spare the pods ARP for their gateway
set -euo pipefail

N=${1:-500}
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DNS_PROBE:-}
if [ -z "$BIN" ]; then
  for b in "$here/target/release/examples/dns_probe" "$here/target/debug/examples/dns_probe"; do
    [ -x "$b" ] && BIN=$b && break
  done
fi
[ -x "${BIN:-}" ] || { echo "build the probe first (cargo build --example dns_probe)"; exit 2; }
[ "$(id -u)" = 0 ] || { echo "skipped: needs root"; exit 0; }
for tool in ip nft dnsmasq; do
  command -v "$tool" >/dev/null || { echo "skipped: $tool is not installed"; exit 0; }
done

tag="ndq$$"
srv="$tag-srv"
node="$tag-node"
work=$(mktemp -d)
dnsmasq_pid=
cleanup() {
  [ -n "$dnsmasq_pid" ] && kill "$dnsmasq_pid" 2>/dev/null && wait "$dnsmasq_pid" 2>/dev/null
  {
    for i in $(seq 1 "$N"); do echo "netns delete $tag-p$i"; done
    echo "netns delete $node"
    echo "netns delete $srv"
  } | ip -force -batch - 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ms() { date +%s%N; }

echo "creating a server, a node and $N pod namespaces..."
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
}
EON
for i in $(seq 1 "$N"); do echo "netns add $tag-p$i"; done | ip -batch -
{
  for i in $(seq 1 "$N"); do
    echo "link add v$i type veth peer name eth0 netns $tag-p$i"
    echo "link set v$i master br0 up"
  done
} | ip -n "$node" -batch -
pins=()
for i in $(seq 1 "$N"); do
  printf 'link set lo up\nlink set eth0 up\naddr add 10.64.%d.%d/16 dev eth0\nroute add default via 10.64.0.1\n' \
    $((i / 250 + 1)) $((i % 250 + 2)) | ip -n "$tag-p$i" -batch -
  pins+=("/run/netns/$tag-p$i")
done
echo "10.96.0.1 kubernetes.default.svc.cluster.local" > "$work/hosts"
ip netns exec "$srv" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv \
  --no-hosts --user=root --bind-interfaces --listen-address=10.53.0.2 \
  --addn-hosts="$work/hosts" --local=/cluster.local/ --local=/invalid/ \
  --pid-file="$work/dnsmasq.pid" --log-facility="$work/dnsmasq.log" &
dnsmasq_pid=$!
for _ in $(seq 1 100); do
  # 10.53.0.2:53 in /proc/net/udp (address little-endian, port big-endian)
  ip netns exec "$srv" sh -c 'grep -q " 0200350A:0035 " /proc/net/udp' && break
  sleep 0.1
done
echo "  set up in $(( ($(ms) - t0) / 1000000 )) ms ($BIN)"

# The node's conntrack counters, summed over CPUs: what the dns collector will
# set beside the probe's timeouts.
conntrack_stats() {
  ip netns exec "$node" conntrack -S 2>/dev/null | tr ' ' '\n' |
    awk -F= '/^(insert_failed|drop|clash_resolve|invalid)=/ { s[$1] += $2 }
             END { printf "  node conntrack: insert_failed=%d drop=%d clash_resolve=%d invalid=%d\n",
                   s["insert_failed"], s["drop"], s["clash_resolve"], s["invalid"] }'
}

# The kernel's neighbour (ARP) table is shared by every namespace: with 500 pods
# it holds about 1000 entries, near gc_thresh3 (1024 by default).
arp_stats() {
  awk 'function hex(x,   i, n) { n = 0; x = tolower(x)
         for (i = 1; i <= length(x); i++) n = n * 16 + index("0123456789abcdef", substr(x, i, 1)) - 1
         return n }
       NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
       # entries is the table'\''s size, repeated on every CPU line; the rest are per CPU.
       { for (k in col) if (k == "entries") s[k] = hex($col[k]); else s[k] += hex($col[k]) }
       END { printf "  kernel ARP table: entries=%d res_failed=%d forced_gc_runs=%d table_fulls=%d unresolved_discards=%d (since boot)\n",
             s["entries"], s["res_failed"], s["forced_gc_runs"], s["table_fulls"], s["unresolved_discards"] }' \
    /proc/net/stat/arp_cache
}

if [ "${STATIC_GATEWAY:-0}" = 1 ]; then
  echo "a permanent neighbour entry for the gateway in every pod (STATIC_GATEWAY=1)..."
  gw_mac=$(ip -n "$node" -o link show br0 | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p')
  for i in $(seq 1 "$N"); do
    ip -n "$tag-p$i" neigh replace 10.64.0.1 lladdr "$gw_mac" dev eth0 nud permanent
  done
fi
# Packets dropped because a CPU's input backlog (netdev_max_backlog) was full:
# column 2 of /proc/net/softnet_stat, summed over CPUs, since boot.
backlog_drops() {
  awk 'function hex(x,   i, n) { n = 0; x = tolower(x)
         for (i = 1; i <= length(x); i++) n = n * 16 + index("0123456789abcdef", substr(x, i, 1)) - 1
         return n }
       { s += hex($2) } END { printf "  input backlog drops (softnet_stat): %d since boot\n", s }' /proc/net/softnet_stat
}

arp_stats
backlog_drops
echo "== rounds of 3 namespaces, 2 names each (the service's full name, an absent name):"
"$BIN" --at-once 3 --per-try 1000 "${pins[@]}"
conntrack_stats
arp_stats
backlog_drops
echo "== one namespace at a time:"
"$BIN" --at-once 1 --per-try 1000 "${pins[@]}"
conntrack_stats
echo "== rounds of 3 again, every namespace seen before:"
"$BIN" --at-once 3 --per-try 1000 "${pins[@]}"
echo "== a kept thread's setns there and back alone, 3 at a time:"
"$BIN" --at-once 3 --setns-only "${pins[@]}"
