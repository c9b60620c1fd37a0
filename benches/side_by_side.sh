#!/usr/bin/env bash
# Agents side by side on the same node in the same minutes: the CPU and memory of
# each, for changes whose effect is smaller than the spread between runs of
# benches/scale.sh (two binaries, a flag, an allocator setting).
#
#   HOLD=1 bash benches/scale.sh 500 &      # a node of 500 pods, kept up
#   bash benches/side_by_side.sh ROOTFS old=/tmp/old-nodediag new \
#     slow=NODEDIAG_COLLECTOR_CGROUP_INTERVAL=30s
#
# ROOTFS is the rootfs scale.sh prints. Each agent is NAME=ITEM,ITEM,... (or NAME
# alone): an item starting with / or . is the binary, one starting with -- a flag,
# any other VAR=VALUE its environment. Every agent is scraped for /metrics every
# SCRAPE seconds, as Prometheus would, and measured for SECONDS after WARM seconds
# (long enough for the rule window to fill at 1 s). Its CPU is the process's
# utime + stime; RSS and anonymous RSS are read every 2 s. Swap the agents' order
# and run again before believing a difference: the first one started is not always
# the luckiest.
#
# Environment: BIN (default binary: the one that ships, from deploy/build-release.sh),
# INTERVAL (--interval of every agent, default 15s), SCRAPE (15), WARM (330),
# SECONDS_MEASURED (600), PORT (first port, 19400).
set -euo pipefail

[ $# -ge 2 ] || { sed -n '2,21p' "$0" >&2; exit 2; }
rootfs=$1
shift
[ -d "$rootfs" ] || { echo "$rootfs: no such directory (the rootfs scale.sh printed)" >&2; exit 2; }
INTERVAL=${INTERVAL:-15s} SCRAPE=${SCRAPE:-15} WARM=${WARM:-330}
SECONDS_MEASURED=${SECONDS_MEASURED:-600}
port=${PORT:-19400}

# An agent's items, one a line (none for NAME alone).
items() { [ "${1%%=*}" = "$1" ] || tr , '\n' <<< "${1#*=}"; }
kind() {
  case $1 in
    /* | .*) echo bin ;;
    --*) echo flag ;;
    *=*) echo env ;;
    *) return 1 ;;
  esac
}

# Every agent's items are checked before anything is built or started.
for spec in "$@"; do
  while read -r item; do
    kind "$item" > /dev/null ||
      { echo "$spec: $item is neither a binary, a flag nor VAR=VALUE" >&2; exit 2; }
  done < <(items "$spec")
done
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$(bash "$here/deploy/build-release.sh" --quiet)}

names=() pids=() ports=() logs=()
work=$(mktemp -d)
cleanup() { kill "${pids[@]}" "${scraper:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# Agent i stopped (or never came up): what it said, and the run ends.
died() {
  echo "${names[$1]} $2:" >&2
  tail -n 5 "${logs[$1]}" >&2
  exit 1
}
for spec in "$@"; do
  name=${spec%%=*} bin=$BIN flags=() env=()
  while read -r item; do
    case $(kind "$item") in
      bin) bin=$item ;;
      flag) flags+=("$item") ;;
      env) env+=("$item") ;;
    esac
  done < <(items "$spec")
  env "${env[@]}" "$bin" serve --path.rootfs "$rootfs" --path.netns /run/netns \
    --path.kmsg /dev/kmsg --web.notrack=false --listen "127.0.0.1:$port" \
    --interval "$INTERVAL" "${flags[@]}" > "$work/$port.log" 2>&1 &
  names+=("$name") pids+=($!) ports+=("$port") logs+=("$work/$port.log")
  port=$((port + 1))
done

for i in "${!ports[@]}"; do
  deadline=$((SECONDS + 60))
  until curl -sf -o /dev/null "http://127.0.0.1:${ports[i]}/readyz"; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "${pids[i]}" 2>/dev/null; then
      died "$i" "did not come up"
    fi
    sleep 0.5
  done
done
(while :; do
  for p in "${ports[@]}"; do curl -s -o /dev/null "http://127.0.0.1:$p/metrics"; done
  sleep "$SCRAPE"
done) &
scraper=$!
sleep "$WARM"

cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
status() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
declare -a cpu0 rss anon peak
for i in "${!pids[@]}"; do
  cpu0[i]=$(cpu "${pids[i]}") rss[i]=0 anon[i]=0 peak[i]=0
done
readings=0 end=$((SECONDS + SECONDS_MEASURED))
while [ $SECONDS -lt $end ]; do
  for i in "${!pids[@]}"; do
    kill -0 "${pids[i]}" 2>/dev/null || died "$i" "stopped while measured"
    r=$(status "${pids[i]}" VmRSS) a=$(status "${pids[i]}" RssAnon)
    rss[i]=$((rss[i] + r)) anon[i]=$((anon[i] + a))
    [ "$r" -le "${peak[i]}" ] || peak[i]=$r
  done
  readings=$((readings + 1))
  sleep 2
done

tick=$(getconf CLK_TCK)
echo "$# agents, --interval $INTERVAL, scraped every ${SCRAPE} s, measured ${SECONDS_MEASURED} s after ${WARM} s; load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in "${!pids[@]}"; do
  ticks=$(( $(cpu "${pids[i]}") - cpu0[i] ))
  awk -v n="${names[i]}" -v t="$ticks" -v hz="$tick" -v s="$SECONDS_MEASURED" \
    -v rss="${rss[i]}" -v anon="${anon[i]}" -v peak="${peak[i]}" -v k="$readings" 'BEGIN {
      printf "%-12s CPU %8.1f ms (%.2f ms/s)  RSS mean %.1f MiB, largest %.1f, anonymous %.1f\n",
        n, t * 1000 / hz, t * 1000 / hz / s, rss / k / 1024, peak / 1024, anon / k / 1024 }'
done
