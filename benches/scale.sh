#!/usr/bin/env bash
# What nodediag costs a node as pods are added, against node_exporter, in one run.
#
# For each N (default 0 100 200 500 1000) the node gets N pod-like namespaces, each:
# a pinned network namespace (ip netns add) with a veth pair to the host and an
# address, a process inside it in a pod-like cpu cgroup
# (kubepods/burstable/pod<uid>/<container-id>, with a CPU limit), the kubelet's log
# directories naming it (under a temporary rootfs), and a host-local IPAM reservation.
# Pods are added, never rebuilt, from one N to the next. Then, for FILL seconds,
# three processes run side by side on it:
#   - nodediag at its defaults (every collector, --interval 15s), pointed at that
#     rootfs and at /run/netns, scraped every 15 s: its RSS once its rule window is
#     full (every scrape here asks for gzip, as Prometheus's do);
#   - nodediag at --interval 1s: its RSS (the rule window holds up to 300 samples), and
#     /metrics latency while it collects every second, in turn with /healthz (no
#     work behind it) after the same pause: what any request costs on this machine,
#     client and wake-ups included, the floor under the /metrics figures. Both over
#     one kept connection, as Prometheus scrapes (benches/scrape_latency.rs);
#   - node_exporter 1.5 (Debian's prometheus-node-exporter, default collectors),
#     scraped every 15 s as Prometheus would: CPU per scrape and RSS;
# then the default agent runs alone for CPU_WAIT seconds, its window full, for its
# CPU per collection round (alone, so the others' load does not inflate it).
#
# After that, with no agent running, benches/kernel_floor.rs makes the reads whose
# number grows with pods (cgroup counters, the process listing, link counters, and
# a round's share of the five-minute reads of every process's namespace and
# descriptors) bare, every 15 s, FLOOR_ROUNDS times: the kernel's floor under a
# round on this node.
#
# CPU per collection round comes from the agent itself
# (nodediag_collector_cpu_seconds_total: the collection thread and the helper threads
# it joins) plus the threads that follow a source on their own (nodediag-kmsg,
# nodediag-disk, conntrack-peak: their CPU from /proc/PID/task over the same period);
# "rules, serving" is the rest of the process's CPU over the period (rule evaluation
# after each sample, encoding, the async workers, threads starting and ending), so
# the total is the process's CPU per round, counted by a cgroup of the agent's own
# (cpuacct.usage, or cgroup2 cpu.stat), to the nanosecond.
#
# Usage: bash benches/scale.sh [N...]
#   FILL=330      seconds of the first part (the 5 min rule window plus two
#                 intervals, so both agents' windows are full when RSS is read)
#   CPU_WAIT=180  seconds of the second part (12 rounds)
#   FLOOR_ROUNDS=4  rounds of the kernel floor (15 s apart, after one unmeasured)
#   SCRAPE_EVERY_MS=250  pause between the 1 s agent's timed requests
#   RSS_LAST=30   RSS is the mean of readings once a second over the last RSS_LAST
#                 seconds of the first part (the largest is printed beside it)
#   NODEDIAG=...  binary to measure (default: the one that ships, from
#                 deploy/build-release.sh)
#   HOLD=1        build the largest N, print how to point an agent at it, and keep it
#                 up until interrupted (for profiling); measures nothing
# Needs root, iproute2, curl; installs prometheus-node-exporter if missing. Everything
# it creates carries a name of its own and is removed on exit, also on failure.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, cgroups)" >&2; exit 2; }
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(0 100 200 500 1000)
mapfile -t SIZES < <(printf '%s\n' "${SIZES[@]}" | sort -n)
FILL=${FILL:-330}
CPU_WAIT=${CPU_WAIT:-180}
FLOOR_ROUNDS=${FLOOR_ROUNDS:-4}
SCRAPE_EVERY_MS=${SCRAPE_EVERY_MS:-250}
RSS_LAST=${RSS_LAST:-30}

for tool in ip curl awk; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 2; }
done
command -v prometheus-node-exporter >/dev/null 2>&1 || {
  echo "installing prometheus-node-exporter..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus-node-exporter >/dev/null
  # The package starts a system service; this script runs its own.
  systemctl disable --now prometheus-node-exporter >/dev/null 2>&1 || true
}
BIN=${NODEDIAG:-}
if [ -z "$BIN" ]; then
  BIN=$("$here/deploy/build-release.sh" --quiet)
fi
# Built before anything is measured.
FLOOR=$(cd "$here" && cargo bench --quiet --bench kernel_floor --no-run --message-format=json |
  sed -n 's/.*"executable":"\([^"]*\/kernel_floor-[^"]*\)".*/\1/p' | tail -n1)
[ -x "$FLOOR" ] || { echo "benches/kernel_floor.rs did not build" >&2; exit 2; }
SCRAPER=$(cd "$here" && cargo bench --quiet --bench scrape_latency --no-run --message-format=json |
  sed -n 's/.*"executable":"\([^"]*\/scrape_latency-[^"]*\)".*/\1/p' | tail -n1)
[ -x "$SCRAPER" ] || { echo "benches/scrape_latency.rs did not build" >&2; exit 2; }

tag="nsc$(($$ % 100000))"
work=$(mktemp -d "/tmp/$tag.XXXXXX")
rootfs=$work/rootfs
hexpid=$(printf '%08x' $$)
port_base=$((20000 + $$ % 20000))
built=0
sleepers=()
daemons=()
made_cgroups=()

# Where the cpu (and cpuacct) controllers are: cgroup v1 mounts, else cgroup2.
cpu_root=$(awk '$9 == "cgroup" && $NF ~ /(^|,)cpu(,|$)/ { print $5; exit }' /proc/self/mountinfo)
acct_root=$(awk '$9 == "cgroup" && $NF ~ /(^|,)cpuacct(,|$)/ { print $5; exit }' /proc/self/mountinfo)
v2=0
if [ -z "$cpu_root" ]; then
  cpu_root=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
  acct_root=
  v2=1
fi
[ -n "$cpu_root" ] || { echo "no cpu cgroup controller mounted" >&2; exit 2; }
[ "$acct_root" = "$cpu_root" ] && acct_root=
roots=("$cpu_root")
[ -n "$acct_root" ] && roots+=("$acct_root")

cleanup() {
  set +e
  for p in "${daemons[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${sleepers[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  for i in $(seq 1 "$built"); do echo "netns delete $tag-$i"; done | ip -force -batch - 2>/dev/null
  # Deepest first; a shared parent (kubepods) someone else uses stays (rmdir fails).
  for ((k = ${#made_cgroups[@]} - 1; k >= 0; k--)); do
    for _ in 1 2 3 4 5; do rmdir "${made_cgroups[k]}" 2>/dev/null && break; sleep 0.1; done
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkcg() { # mkdir -p that remembers what it made, for cleanup
  local d=$1 missing=()
  while [ ! -d "$d" ]; do missing=("$d" "${missing[@]}"); d=$(dirname "$d"); done
  for d in "${missing[@]}"; do
    mkdir "$d"
    made_cgroups+=("$d")
    if [ "$v2" = 1 ]; then echo +cpu > "$(dirname "$d")/cgroup.subtree_control" 2>/dev/null || true; fi
  done
}

uid_of() { printf '%s-0000-4000-8000-%012x' "$hexpid" "$1"; }
cid_of() { printf '%s%056x' "$hexpid" "$1"; }
addr_of() { printf '10.%d.%d.%d' $((200 + $1 / 65536)) $(($1 / 256 % 256)) $(($1 % 256)); }

mkdir -p "$rootfs/var/log/pods" "$rootfs/var/log/containers" "$rootfs/var/lib/kubelet" \
  "$rootfs/etc/cni/net.d" "$rootfs/var/lib/cni/networks/$tag"
cat > "$rootfs/etc/cni/net.d/10-$tag.conflist" <<EOF
{"cniVersion":"0.4.0","name":"$tag","plugins":[{"type":"bridge","bridge":"cni0",
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.200.0.0/14"}]]}}]}
EOF

grow_to() { # adds pods built+1..n
  local n=$1 i
  [ "$n" -gt "$built" ] || return 0
  {
    for i in $(seq $((built + 1)) "$n"); do
      echo "netns add $tag-$i"
      echo "link add h$tag-$i type veth peer name eth0 netns $tag-$i"
      echo "link set h$tag-$i up"
    done
  } | ip -batch -
  for i in $(seq $((built + 1)) "$n"); do
    printf 'link set lo up\nlink set eth0 up\naddr add %s/14 dev eth0\n' "$(addr_of "$i")" |
      ip -n "$tag-$i" -batch -
    local uid cid pod
    uid=$(uid_of "$i") cid=$(cid_of "$i") pod="pod-$i"
    for r in "${roots[@]}"; do
      mkcg "$r/kubepods/burstable/pod$uid/$cid"
    done
    if [ "$v2" = 1 ]; then
      echo "50000 100000" > "$cpu_root/kubepods/burstable/pod$uid/$cid/cpu.max"
    else
      echo 50000 > "$cpu_root/kubepods/burstable/pod$uid/cpu.cfs_quota_us"
      echo 50000 > "$cpu_root/kubepods/burstable/pod$uid/$cid/cpu.cfs_quota_us"
    fi
    mkdir -p "$rootfs/var/log/pods/${tag}_${pod}_$uid/app"
    : > "$rootfs/var/log/pods/${tag}_${pod}_$uid/app/0.log"
    ln -s "/var/log/pods/${tag}_${pod}_$uid/app/0.log" \
      "$rootfs/var/log/containers/${pod}_${tag}_app-$cid.log"
    printf '%s\neth0' "$cid" > "$rootfs/var/lib/cni/networks/$tag/$(addr_of "$i")"
    (
      for r in "${roots[@]}"; do
        echo "$BASHPID" > "$r/kubepods/burstable/pod$uid/$cid/cgroup.procs"
      done
      exec ip netns exec "$tag-$i" sleep infinity
    ) &
    sleepers+=($!)
  done
  built=$n
}

# CPU ticks of a process (all its threads, exited ones included).
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# CPU milliseconds of a process's live threads named $2: the scheduler's own sum, to
# the microsecond, where the kernel has /proc/PID/task/TID/sched (CONFIG_SCHED_DEBUG),
# else their ticks.
thread_ms() {
  local t
  for t in /proc/"$1"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ] || continue
    if [ -r "$t/sched" ]; then
      awk '$1 == "se.sum_exec_runtime" { print $3 }' "$t/sched"
    else
      awk -v hz="$hz" '{ print ($14 + $15) * 1000 / hz }' "$t/stat"
    fi
  done | awk '{ t += $1 } END { print t + 0 }'
}
# CPU milliseconds of the default agent: its cgroup's count, in nanoseconds and with
# its exited threads (the DNS probes'), when it could be put in one of its own; else
# its ticks, 10 ms apart (0.8 ms a round over 12 rounds).
agent_cg=
agent_ms() {
  if [ -z "$agent_cg" ]; then
    proc_ticks "$1" | awk -v hz="$hz" '{ print $1 * 1000 / hz }'
  elif [ "$v2" = 1 ]; then
    awk '$1 == "usage_usec" { print $2 / 1000 }' "$agent_cg/cpu.stat"
  else
    awk '{ print $1 / 1e6 }' "$agent_cg/cpuacct.usage"
  fi
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
metric() { # metric NAME COLLECTOR < metrics text
  awk -v m="$1{collector=\"$2\"}" '$1 == m { print $2; f = 1 } END { if (!f) print 0 }'
}
wait_ready() { # wait_ready URL LOG
  local deadline=$((SECONDS + 120))
  until curl -sf -o /dev/null "$1"; do
    if [ $SECONDS -ge $deadline ]; then
      echo "$1 did not come up: $(curl -s "$1")" >&2
      tail -n 20 "$2" >&2
      exit 1
    fi
    sleep 0.2
  done
}

pct() { # pct FILE Q: the Q quantile of seconds, in ms
  sort -n "$1" | awk -v q="$2" '{ v[NR] = $1 } END { i = int(NR * q + 0.999); if (i < 1) i = 1; printf "%.1f", v[i] * 1000 }'
}

collectors=(nic netns cgroup pressure disk conntrack kmsg dns)
hz=$(getconf CLK_TCK)
summary=()

echo "nodediag: $BIN"
echo "node_exporter: $(prometheus-node-exporter --version 2>&1 | head -n1)"
echo "kernel $(uname -r), $(nproc) CPUs, cgroup $([ $v2 = 1 ] && echo v2 || echo v1), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "each N: ${FILL} s with both agents (RSS; /metrics and /healthz in turn every ${SCRAPE_EVERY_MS} ms on the 1 s agent, one connection), then ${CPU_WAIT} s of the default agent alone (CPU)"

if [ "${HOLD:-0}" = 1 ]; then
  N=${SIZES[-1]}
  grow_to "$N"
  echo "N=$N pods up; interrupt to remove them. An agent on them:"
  echo "  $BIN serve --path.rootfs $rootfs --path.netns /run/netns --path.kmsg /dev/kmsg"
  sleep infinity &
  wait $!
  exit 0
fi

for N in "${SIZES[@]}"; do
  echo
  t0=$SECONDS
  grow_to "$N"
  echo "== N=$N pods (built in $((SECONDS - t0)) s): $(find /sys/class/net -mindepth 1 -maxdepth 1 | wc -l) host interfaces"
  pa=$port_base pb=$((port_base + 1)) pn=$((port_base + 2))
  common=(serve --path.rootfs "$rootfs" --path.netns /run/netns --path.kmsg /dev/kmsg)
  "$BIN" "${common[@]}" --listen "127.0.0.1:$pa" >"$work/a.log" 2>&1 &
  a=$!
  agent_cg=${acct_root:-$cpu_root}/$tag-agent
  { mkcg "$agent_cg" && echo "$a" > "$agent_cg/cgroup.procs"; } 2>/dev/null || agent_cg=
  "$BIN" "${common[@]}" --listen "127.0.0.1:$pb" --interval 1s >"$work/b.log" 2>&1 &
  b=$!
  prometheus-node-exporter --web.listen-address="127.0.0.1:$pn" >"$work/ne.log" 2>&1 &
  ne=$!
  daemons=("$a" "$b" "$ne")
  wait_ready "http://127.0.0.1:$pa/readyz" "$work/a.log"
  wait_ready "http://127.0.0.1:$pb/readyz" "$work/b.log"
  wait_ready "http://127.0.0.1:$pn/metrics" "$work/ne.log"

  # Phase 1: both agents fill their rule windows; the 1 s agent's /metrics is timed
  # while it collects every second; node_exporter and the default agent are scraped
  # as Prometheus would.
  : > "$work/lat-b"
  : > "$work/lat-h"
  : > "$work/lat-ne"
  ne_ticks0=$(proc_ticks "$ne")
  end=$((SECONDS + FILL))
  # /metrics and /healthz in turn, each after the same pause.
  "$SCRAPER" --bench --port "$pb" --seconds "$FILL" --every "$SCRAPE_EVERY_MS" \
    --metrics "$work/lat-b" --healthz "$work/lat-h" &
  scraper=$!
  daemons+=("$scraper")
  next_ne=$SECONDS
  : > "$work/rss"
  while [ $SECONDS -lt $end ]; do
    # RSS once a second over the last RSS_LAST seconds: one reading lands wherever
    # the agents are in their rounds (an encoding's buffers, a count's listing), and
    # moved by a MiB from run to run.
    if [ $((end - SECONDS)) -le "$RSS_LAST" ]; then
      echo "$(rss_kib "$a") $(rss_kib "$b") $(rss_kib "$ne")" >> "$work/rss"
    fi
    if [ $SECONDS -ge $next_ne ]; then
      # Both asking for gzip, as Prometheus does.
      curl -s --compressed -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$pn/metrics" >> "$work/lat-ne"
      # The default agent is scraped as Prometheus would too: its RSS then holds the
      # encoded /metrics it keeps for the next scrape, as on a real node.
      curl -s --compressed -o /dev/null "http://127.0.0.1:$pa/metrics"
      next_ne=$((next_ne + 15))
    fi
    sleep 1
  done
  wait "$scraper" || { echo "the scrapes of the 1 s agent failed" >&2; exit 1; }
  ne_ticks1=$(proc_ticks "$ne")
  read -r rss_a rss_b rss_ne rss_a_max rss_b_max rss_n < <(awk '
    { for (i = 1; i <= 3; i++) { s[i] += $i; if ($i > m[i]) m[i] = $i } n++ }
    END { if (n < 1) n = 1; print s[1] / n, s[2] / n, s[3] / n, m[1] + 0, m[2] + 0, n }' "$work/rss")
  ne_scrapes=$(wc -l < "$work/lat-ne")
  kill "$b" "$ne" 2>/dev/null || true
  wait "$b" "$ne" 2>/dev/null || true
  daemons=("$a")

  # Phase 2: the default agent alone, its window full, for CPU_WAIT seconds.
  curl -s "http://127.0.0.1:$pa/metrics" > "$work/m0"
  a_ms0=$(agent_ms "$a")
  kmsg0=$(thread_ms "$a" nodediag-kmsg)
  disk0=$(thread_ms "$a" nodediag-disk)
  peak0=$(thread_ms "$a" conntrack-peak)
  sleep "$CPU_WAIT"
  a_ms1=$(agent_ms "$a")
  kmsg1=$(thread_ms "$a" nodediag-kmsg)
  disk1=$(thread_ms "$a" nodediag-disk)
  peak1=$(thread_ms "$a" conntrack-peak)
  curl -s "http://127.0.0.1:$pa/metrics" > "$work/m1"
  kill "$a" 2>/dev/null || true
  wait "$a" 2>/dev/null || true
  daemons=()

  # Phase 3: the kernel's floor, with no agent running.
  "$FLOOR" --bench --every 15 --rounds "$FLOOR_ROUNDS" | tee "$work/floor"
  kfloor=$(awk '$1 == "floor" { print $2 }' "$work/floor")

  b50=$(pct "$work/lat-b" 0.5) b99=$(pct "$work/lat-b" 0.99)
  h50=$(pct "$work/lat-h" 0.5) h99=$(pct "$work/lat-h" 0.99)
  ne50=$(pct "$work/lat-ne" 0.5) ne99=$(pct "$work/lat-ne" 0.99)

  rounds=$(( $(metric nodediag_collector_runs_total nic < "$work/m1" | cut -d. -f1) - $(metric nodediag_collector_runs_total nic < "$work/m0" | cut -d. -f1) ))
  [ "$rounds" -gt 0 ] || rounds=1
  printf '%-22s %6s %14s %12s\n' "" runs "CPU/round ms" "last wall ms"
  row="$N"
  sum=0
  for c in "${collectors[@]}"; do
    cpu0=$(metric nodediag_collector_cpu_seconds_total "$c" < "$work/m0")
    cpu1=$(metric nodediag_collector_cpu_seconds_total "$c" < "$work/m1")
    r0=$(metric nodediag_collector_runs_total "$c" < "$work/m0")
    r1=$(metric nodediag_collector_runs_total "$c" < "$work/m1")
    wall=$(metric nodediag_collector_duration_seconds "$c" < "$work/m1")
    x0=0 x1=0
    [ "$c" = kmsg ] && x0=$kmsg0 x1=$kmsg1
    [ "$c" = disk ] && x0=$disk0 x1=$disk1
    [ "$c" = conntrack ] && x0=$peak0 x1=$peak1
    per=$(awk -v a="$cpu0" -v b="$cpu1" -v r0="$r0" -v r1="$r1" -v x0="$x0" -v x1="$x1" \
      'BEGIN { r = r1 - r0; if (r < 1) r = 1; printf "%.1f", ((b - a) * 1000 + (x1 - x0)) / r }')
    printf '%-22s %6d %14s %12.1f\n' "$c" "$(awk -v a="$r0" -v b="$r1" 'BEGIN { print b - a }')" "$per" \
      "$(awk -v w="$wall" 'BEGIN { print w * 1000 }')"
    sum=$(awk -v s="$sum" -v p="$per" 'BEGIN { print s + p }')
    row="$row $per"
  done
  total=$(awk -v a="$a_ms0" -v b="$a_ms1" -v r="$rounds" 'BEGIN { printf "%.1f", (b - a) / r }')
  other=$(awk -v t="$total" -v s="$sum" 'BEGIN { printf "%.1f", t - s }')
  printf '%-22s %6s %14.1f\n' "collectors" "" "$sum"
  printf '%-22s %6s %14s\n' "rules, serving" "" "$other"
  printf '%-22s %6d %14s   (process CPU over %d s / rounds, %s)\n' "total per round" "$rounds" "$total" "$CPU_WAIT" \
    "$([ -n "$agent_cg" ] && echo "from its own cgroup" || echo "in ticks of $((1000 / hz)) ms")"
  ne_cpu=$(awk -v a="$ne_ticks0" -v b="$ne_ticks1" -v n="$ne_scrapes" -v hz="$hz" 'BEGIN { if (n < 1) n = 1; printf "%.0f", (b - a) / hz / n * 1000 }')
  printf 'RSS, mean (max) of %d readings over the last %d s: nodediag %.1f (%.1f) MiB at 15 s, %.1f (%.1f) MiB at 1 s; node_exporter %.1f MiB\n' \
    "$rss_n" "$RSS_LAST" \
    "$(awk -v k="$rss_a" 'BEGIN { print k / 1024 }')" "$(awk -v k="$rss_a_max" 'BEGIN { print k / 1024 }')" \
    "$(awk -v k="$rss_b" 'BEGIN { print k / 1024 }')" "$(awk -v k="$rss_b_max" 'BEGIN { print k / 1024 }')" \
    "$(awk -v k="$rss_ne" 'BEGIN { print k / 1024 }')"
  printf '/metrics p50/p99: nodediag (collecting every 1 s) %s/%s ms over %d scrapes; node_exporter %s/%s ms, %s ms CPU per scrape over %d\n' \
    "$b50" "$b99" "$(wc -l < "$work/lat-b")" "$ne50" "$ne99" "$ne_cpu" "$ne_scrapes"
  printf '/healthz p50/p99 on the same agent, in turn with /metrics (the floor): %s/%s ms\n' "$h50" "$h99"
  summary+=("$row $other $total $kfloor $(awk -v k="$rss_a" 'BEGIN { printf "%.1f", k / 1024 }') $(awk -v k="$rss_b" 'BEGIN { printf "%.1f", k / 1024 }') $b50 $b99 $h99 $ne_cpu $(awk -v k="$rss_ne" 'BEGIN { printf "%.1f", k / 1024 }')")
done

echo
echo "== summary: CPU per collection round (ms) by collector, in all, and the kernel floor under it; RSS (MiB), /metrics (ms); load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%10s' N "${collectors[@]}" rules total kernel rss15s rss1s p50 p99 floor99 ne_cpu ne_rss; echo
for r in "${summary[@]}"; do
  read -ra v <<<"$r"
  printf '%10s' "${v[@]}"; echo
done
