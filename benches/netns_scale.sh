#!/usr/bin/env bash
# One netns collection on a node with N network namespaces, each with a veth pair and a
# process inside (default N=500), against the iproute2 commands an SRE would run for
# the same listing: `ip netns list`, `ip -d link`, and `ip addr` inside every namespace.
#
# Needs root and iproute2. Everything it creates is removed on exit, also on failure.
#   benches/netns_scale.sh [N]        NODEDIAG=path/to/nodediag to pick the binary
set -euo pipefail

N=${1:-500}
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${NODEDIAG:-}
if [ -z "$BIN" ]; then
  for b in "$here/target/release/nodediag" "$here/target/debug/nodediag"; do
    [ -x "$b" ] && BIN=$b && break
  done
fi
[ -x "${BIN:-}" ] || { echo "build nodediag first (cargo build)"; exit 2; }
[ "$(id -u)" = 0 ] || { echo "skipped: needs root"; exit 0; }

tag="ndb$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  {
    for i in $(seq 1 "$N"); do echo "netns delete $tag-$i"; done
  } | ip -force -batch - 2>/dev/null || true
}
trap cleanup EXIT

ms() { date +%s%N; }

echo "creating $N namespaces with a veth pair and a process each..."
t0=$(ms)
{
  for i in $(seq 1 "$N"); do
    echo "netns add $tag-$i"
    echo "link add v$tag-$i type veth peer name eth0 netns $tag-$i"
    echo "link set v$tag-$i up"
  done
} | ip -batch -
for i in $(seq 1 "$N"); do
  printf 'link set eth0 up\naddr add 10.200.%d.%d/16 dev eth0\n' $((i / 256)) $((i % 256)) |
    ip -n "$tag-$i" -batch -
done
for i in $(seq 1 "$N"); do
  ip netns exec "$tag-$i" sleep 3600 &
  pids+=($!)
done
echo "  set up in $(( ($(ms) - t0) / 1000000 )) ms"

echo "nodediag ($BIN): two collections, --check.delay 1s"
t0=$(ms)
out=$("$BIN" check --format json --finding netns_leaked --check.delay 1s \
  --path.netns /run/netns --no-collector.nic --no-collector.conntrack || true)
total=$(( ($(ms) - t0) / 1000000 ))
collect=$(printf '%s' "$out" | sed -n 's/.*"last_duration": *\([0-9.]*\).*/\1/p' | head -n1)
printf '  one collection: %s s (whole check, two collections + 1 s delay: %s ms)\n' "$collect" "$total"
printf '%s' "$out" | grep -o '"summary": *"[^"]*"' || true

echo "iproute2 for the same listing:"
t0=$(ms)
ip netns list > /dev/null
ip -d link > /dev/null
t1=$(ms)
for i in $(seq 1 "$N"); do ip -n "$tag-$i" addr > /dev/null; done
t2=$(ms)
printf '  ip netns list + ip -d link: %d ms\n' $(( (t1 - t0) / 1000000 ))
printf '  ip -n NS addr for each namespace: %d ms\n' $(( (t2 - t1) / 1000000 ))
printf '  (and no pod names, no leak check)\n'
