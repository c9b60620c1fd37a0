#!/usr/bin/env bash
# Scrape cost of nodediag against node_exporter, same machine, same run, same signals
# (conntrack and network interfaces), on a namespace holding NVETH veth pairs.
#
# node_exporter collects when scraped; nodediag collects in the background and a scrape
# only encodes what it holds. So this reports both the scrape latency and the CPU each
# process spends over the same wall time (scrapes plus background sampling).
#
# Usage: benches/compare_node_exporter.sh [NVETH=200] [SCRAPES=200]
# Needs root (a network namespace), curl; installs prometheus-node-exporter if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
nveth=${1:-200}
scrapes=${2:-200}

command -v prometheus-node-exporter >/dev/null 2>&1 || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-node-exporter >/dev/null
}
bin=$(deploy/build-release.sh --quiet)
ns="nd-bench-$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
for i in $(seq 1 "$nveth"); do
  echo "link add ndb$i type veth peer name ndp$i"
done | ip -n "$ns" -batch -
in_ns() { ip netns exec "$ns" "$@"; }

ip netns exec "$ns" prometheus-node-exporter --web.listen-address=127.0.0.1:19100 \
  --collector.disable-defaults --collector.conntrack --collector.netclass --collector.netdev \
  >/dev/null 2>&1 &
pids+=($!)
# Only the signals node_exporter has here: conntrack and NICs.
others=$("$bin" serve --help | grep -o -- '--no-collector\.[a-z]*' | grep -v -e conntrack -e nic | tr '\n' ' ' || true)
# shellcheck disable=SC2086
ip netns exec "$ns" "$bin" serve --listen 127.0.0.1:19360 --interval 15s $others \
  >/dev/null 2>&1 &
pids+=($!)

wait_up() {
  for _ in $(seq 1 100); do
    in_ns curl -sf -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "$1 did not come up" >&2
  exit 1
}
wait_up http://127.0.0.1:19100/metrics
wait_up http://127.0.0.1:19360/readyz

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# ip netns exec execs the exporter, so these are the exporters themselves.
ne_pid=${pids[0]}
nd_pid=${pids[1]}

measure() {
  local url=$1 pid=$2 before after
  before=$(cpu_ticks "$pid")
  in_ns bash -c "for i in \$(seq 1 $scrapes); do curl -s -o /dev/null -w '%{time_total}\n' $url; done" \
    | sort -n > "/tmp/nd-bench-$$-$pid"
  after=$(cpu_ticks "$pid")
  local p50 p99 bytes
  p50=$(awk -v n="$scrapes" 'NR == int(n * 0.5) { print $1 * 1000 }' "/tmp/nd-bench-$$-$pid")
  p99=$(awk -v n="$scrapes" 'NR == int(n * 0.99) { print $1 * 1000 }' "/tmp/nd-bench-$$-$pid")
  bytes=$(in_ns curl -s "$url" | wc -c)
  rm -f "/tmp/nd-bench-$$-$pid"
  echo "$p50 $p99 $((after - before)) $bytes"
}

read -r ne50 ne99 necpu nebytes < <(measure http://127.0.0.1:19100/metrics "$ne_pid")
read -r nd50 nd99 ndcpu ndbytes < <(measure http://127.0.0.1:19360/metrics "$nd_pid")
hz=$(getconf CLK_TCK)
awk -v nveth="$nveth" -v n="$scrapes" -v hz="$hz" \
  -v ne50="$ne50" -v ne99="$ne99" -v necpu="$necpu" -v nebytes="$nebytes" \
  -v nd50="$nd50" -v nd99="$nd99" -v ndcpu="$ndcpu" -v ndbytes="$ndbytes" 'BEGIN {
  printf "%d veth pairs, %d sequential scrapes each\n", nveth, n
  printf "%-16s %10s %10s %18s %10s\n", "exporter", "p50 ms", "p99 ms", "CPU s (scrapes)", "bytes"
  printf "%-16s %10.3f %10.3f %18.2f %10d\n", "node_exporter", ne50, ne99, necpu / hz, nebytes
  printf "%-16s %10.3f %10.3f %18.2f %10d\n", "nodediag", nd50, nd99, ndcpu / hz, ndbytes
  printf "ratio node_exporter/nodediag: p50 %.1fx, p99 %.1fx, CPU %.1fx (CPU ratio with +1 tick each)\n", \
    ne50 / nd50, ne99 / nd99, (necpu + 1) / (ndcpu + 1)
}'
