#!/usr/bin/env bash
# What one "who fills the conntrack table" answer costs on a full table: a fresh
# network namespace is filled with N conntrack entries (default 262,144, the
# default nf_conntrack_max of a node with 16 GiB or more), then the ctnetlink dump +
# aggregation of examples/conntrack_top.rs runs R times (default 5): wall time, CPU
# time (user, and system: the kernel's side of the dump) and peak RSS. For
# comparison, the same table through `conntrack -L | sort | uniq -c`, which is what
# an SRE runs by hand today, and a dump cut by its budget.
#
# The table is filled over ctnetlink by examples/conntrack_fill.rs, 512 entries per
# datagram: seconds, where `conntrack -I` (a process per entry) takes many minutes
# and real packets need a socket per flow.
#
# Needs root and conntrack(8). nf_conntrack_max is raised to fit N under the same
# lock the real-kernel tests take, and restored on exit; the namespace (and with it
# its entries) is removed on exit, also on failure.
# With SHAPE=scan, every entry goes to a destination of its own (a port scan): the
# most distinct keys the ranking counts, so its memory at the worst.
#   benches/conntrack_dump.sh [N] [R]       CARGO_PROFILE=dev to measure a debug build
set -euo pipefail

N=${1:-262144}
R=${2:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "skipped: needs root"; exit 0; }
command -v conntrack >/dev/null || { echo "conntrack(8) is needed (apt-get install conntrack)"; exit 2; }

profile=${CARGO_PROFILE:-release}
dir=$here/target/$([ "$profile" = dev ] && echo debug || echo "$profile")/examples
(cd "$here" && cargo build --quiet --profile "$profile" --example conntrack_fill --example conntrack_top)

ns="ndb-ctdump-$$"
max=/proc/sys/net/netfilter/nf_conntrack_max
lock="${TMPDIR:-/tmp}/nodediag-test-nf_conntrack_max.lock"
exec 9>>"$lock"
echo "== waiting for $lock (tests that change nf_conntrack_max hold it)"
flock 9
old_max=$(cat "$max")
cg=""
cleanup() {
  ip netns del "$ns" 2>/dev/null || true
  echo "$old_max" >"$max"
  [ -z "$cg" ] || rmdir "$cg" 2>/dev/null || true
}
trap cleanup EXIT
[ "$old_max" -ge "$N" ] || echo "$N" >"$max"
ip netns add "$ns"
in_ns() { ip netns exec "$ns" "$@"; }

echo "== filling $ns with $N entries"
in_ns "$dir/conntrack_fill" "$N" 200 "${SHAPE:-dns}"
count=$(in_ns cat /proc/sys/net/netfilter/nf_conntrack_count)
[ "$count" = "$N" ] || { echo "expected $N entries, the table has $count"; exit 1; }

echo "== dump + aggregation, $R runs ($profile build)"
for _ in $(seq 1 "$R"); do
  in_ns "$dir/conntrack_top"
done | tee /dev/stderr | python3 -c '
import json, statistics, sys
runs = [json.loads(l) for l in sys.stdin if l.startswith("{")]
m = {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], (int, float))}
print("median of %d: %d entries, wall %.3f s (dump %.3f s), CPU user %.3f s + system %.3f s, "
      "peak RSS %.1f MiB (%.1f MiB before the dump)" % (len(runs), m["entries"], m["wall_seconds"],
      m["dump_seconds"], m["user_seconds"], m["system_seconds"], m["max_rss_kib"] / 1024,
      m["max_rss_kib_before"] / 1024))
'

# The DaemonSet limits the agent to 200m of CPU, and the kernel's side of the dump
# (system time) is charged to the agent's cgroup like the rest.
echo "== the same under a 200m CPU limit (cgroup CPU quota 20 ms per 100 ms)"
if [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
  cg=/sys/fs/cgroup/cpu/$ns
  mkdir "$cg"
  echo 100000 >"$cg/cpu.cfs_period_us"
  echo 20000 >"$cg/cpu.cfs_quota_us"
elif grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then
  cg=/sys/fs/cgroup/$ns
  mkdir "$cg"
  echo "20000 100000" >"$cg/cpu.max"
fi
if [ -n "$cg" ]; then
  sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cg" \
    ip netns exec "$ns" "$dir/conntrack_top"
else
  echo "(no cgroup CPU controller to limit with)"
fi

# What one answer of GET /api/v1/conntrack/top costs at the agent's default budget
# (--conntrack.top-max-entries 100000, --conntrack.top-timeout 2s), with and
# without the DaemonSet's CPU limit.
echo "== the agent's default budget: 100,000 entries or 2 s"
in_ns "$dir/conntrack_top" 100000 2000
if [ -n "$cg" ]; then
  sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cg" \
    ip netns exec "$ns" "$dir/conntrack_top" 100000 2000
fi

echo "== the same budget-cut: 10,000 entries, then 50 ms"
in_ns "$dir/conntrack_top" 10000 10000
in_ns "$dir/conntrack_top" 100000000 50

echo "== by hand: the top sources through conntrack -L | sort | uniq -c | sort -rn"
TIMEFORMAT="conntrack -L pipeline: wall %R s, user %U s, system %S s (all its processes)"
time {
  in_ns conntrack -L 2>/dev/null \
    | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^src=/) { print $i; break } }' \
    | sort | uniq -c | sort -rn | head -3
}
