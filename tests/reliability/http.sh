#!/usr/bin/env bash
# Reliability of nodediag's HTTP server under hostile and heavy clients: the cases
# too slow or too heavy for `cargo test` (tests/web_limits.rs has the quick ones).
#
#   1. 200 concurrent keep-alive clients scraping /metrics for 20 s: errors;
#   2. 10,000 half-open connections, then 10,000 that send part of a request head
#      and stop (the default cap; then, where the open-file limit allows, a cap
#      above 10,000 so the agent holds them all): answers, when the agent closed
#      them, and its RSS before, at the peak and after (VmRSS of /proc/PID/status);
#   3. a slow client sending one byte a second: when and how it is cut;
#   4. under a 1,024 open-file limit, 1,100 connections: /healthz while they are
#      open and after, and whether any collector failed (EMFILE).
#
# Usage: tests/reliability/http.sh           (builds the release binary if needed)
#        NODEDIAG_BIN=path tests/reliability/http.sh
# Needs python3 and curl. Every client targets 127.0.0.1 only, and every case is
# bounded in count and time. Takes about two minutes; prints the figures last.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

bin=${NODEDIAG_BIN:-target/release/nodediag}
if [ ! -x "$bin" ]; then
  cargo build --release --bin nodediag
fi
load=(python3 tests/reliability/http_load.py)
# Room for 10,000 connections on both ends (root may raise its hard limit).
ulimit -Hn 65536 2>/dev/null || true
ulimit -Sn "$(ulimit -Hn)"
fixture=tests/fixtures/healthy
tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# start_agent [ARGS...]: runs the agent on a free loopback port; sets pid and addr.
start_agent() {
  "$bin" serve --listen 127.0.0.1:0 --no-netlink --interval 1s \
    --path.procfs "$fixture/proc" --path.sysfs "$fixture/sys" --path.rootfs "$fixture/rootfs" \
    "$@" 2>"$tmp/agent.log" &
  pid=$!
  addr=""
  for _ in $(seq 100); do
    addr=$(grep -o 'listen=[^ ]*' "$tmp/agent.log" | head -1 | cut -d= -f2 || true)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$tmp/agent.log"; echo "agent did not start" >&2; exit 1; }
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  echo "agent not ready" >&2
  exit 1
}

stop_agent() {
  kill -TERM "$pid"
  wait "$pid" || true
  pid=""
}

rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"; }

# peak_while CMD...: runs CMD, sampling the agent's RSS; prints CMD's output and
# leaves the peak in $peak.
peak_while() {
  "$@" >"$tmp/out" &
  local job=$! max=0 now
  while kill -0 "$job" 2>/dev/null; do
    now=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
    ((now > max)) && max=$now
    sleep 0.2
  done
  wait "$job"
  peak=$(awk -v k="$max" 'BEGIN { printf "%.1f", k / 1024 }')
  cat "$tmp/out"
}

failures_total() {
  curl -s "http://$addr/metrics" |
    awk '/^nodediag_collector_failures_total/ { s += $NF } END { print s + 0 }'
}

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

summary=()

echo "== 1. 200 concurrent clients, 20 s"
start_agent
out=$("${load[@]}" concurrent "$addr" 200 20)
echo "$out"
requests=$(json "['requests']" <<<"$out")
errors=$(json "['errors']" <<<"$out")
summary+=("200 concurrent keep-alive clients for 20 s: $requests scrapes, $errors errors")
stop_agent

# flood LABEL MODE [AGENT ARGS...]: 10,000 connections of MODE against a fresh
# agent; the answers, when the agent closed them, and its RSS.
flood() {
  local label=$1 mode=$2
  shift 2
  echo "== $label"
  start_agent "$@"
  sleep 2
  before=$(rss_mib)
  peak_while "${load[@]}" "$mode" "$addr" 10000 20
  answered=$(json "['answered']" <"$tmp/out")
  closed=$(json "['closed_by_server']" <"$tmp/out")
  last=$(json "['last_closed_after_s']" <"$tmp/out")
  sleep 2
  after=$(rss_mib)
  echo "RSS before ${before} MiB, peak ${peak} MiB, after ${after} MiB"
  summary+=("$label: answered $answered, all $closed closed by the agent within ${last} s; RSS ${before} -> ${peak} -> ${after} MiB")
  stop_agent
}
flood "10,000 half-open connections (nothing sent), default cap" halfopen
flood "10,000 slow heads (a request head never finished), default cap" slowheads
if (($(ulimit -Hn) >= 12000)); then
  flood "10,000 slow heads, all held (--web.max-connections=12000)" slowheads --web.max-connections=12000
else
  echo "== skipped: 10,000 held connections need an open-file limit of 12000, not $(ulimit -Hn)"
fi

echo "== 3. a client sending one byte a second"
start_agent
out=$("${load[@]}" trickle "$addr" 1)
echo "$out"
summary+=("one byte a second: cut after $(json "['cut_after_s']" <<<"$out") s with \"$(json "['answer']" <<<"$out")\"")
stop_agent

echo "== 4. open-file limit 1024, 1,100 connections"
(
  ulimit -n 1024
  start_agent
  echo "$pid $addr" >"$tmp/limited"
  wait "$pid"
) &
limited=$!
for _ in $(seq 100); do [ -s "$tmp/limited" ] && break; sleep 0.1; done
read -r pid addr <"$tmp/limited"
failed_before=$(failures_total)
"${load[@]}" halfopen "$addr" 1100 15 >"$tmp/flood" &
flood=$!
sleep 1
# Over the cap the agent answers 503 (a few at a time) or closes at once.
during=$(curl -s -o /dev/null --max-time 5 -w '%{http_code} in %{time_total}s' "http://$addr/healthz" || true)
during=${during/#000/closed}
wait "$flood"
cat "$tmp/flood"
after=$(curl -s -o /dev/null --max-time 5 -w '%{http_code}' "http://$addr/healthz")
failed_after=$(failures_total)
emfile=$(grep -c 'Too many open files' "$tmp/agent.log" || true)
summary+=("1,100 connections under a 1,024 fd limit: /healthz $during while full, $after after; collector failures $failed_before -> $failed_after, EMFILE log lines $emfile")
kill -TERM "$pid"
wait "$limited" || true
pid=""

echo
echo "== figures"
printf '%s\n' "${summary[@]}"
