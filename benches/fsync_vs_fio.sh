#!/bin/sh
# nodediag's fsync probe against etcd's fio recipe, on the same directory in the same
# run: sequential 2300-byte writes, each followed by fdatasync, into a preallocated
# file. Prints p50 and p99 of both side by side with their ratio.
#
# usage: benches/fsync_vs_fio.sh [DIR] [SIZE] [ROUNDS]
#   DIR     directory on the disk to measure (default: a new one under /var/tmp)
#   SIZE    bytes written by each tool (default 22m, as in etcd's recipe)
#   ROUNDS  the two tools take turns this many times (default 40), each writing
#           SIZE/ROUNDS, so both see the same background load on a shared disk
#
# fio reports the fdatasync latency alone; the probe times write + fdatasync. The
# buffered 2300-byte write costs microseconds. Percentiles of both are nearest-rank
# over all rounds (fio's from its json+ latency bins, about 1.5% wide).
set -eu

cd "$(dirname "$0")/.."
SIZE=${2:-22m}
ROUNDS=${3:-40}
if [ -n "${1:-}" ]; then
    DIR=$1
    CLEAN=
else
    DIR=$(mktemp -d /var/tmp/nodediag-fsync-bench.XXXXXX)
    CLEAN=$DIR
fi
WORK=$(mktemp -d)
trap 'rm -f "$DIR"/fsync-bench.0.0; rm -rf "$WORK"; [ -n "$CLEAN" ] && rm -rf "$CLEAN"' EXIT

if ! command -v fio >/dev/null 2>&1; then
    echo "fio not found: installing it (Debian package fio)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y fio >/dev/null
fi
command -v jq >/dev/null 2>&1 || { echo "jq is needed to read fio's JSON" >&2; exit 1; }

# A debug build is enough: the time is spent in the kernel waiting for the disk.
cargo build --quiet --example fsync_probe
BYTES=$(numfmt --from=iec "$(echo "$SIZE" | tr 'kmg' 'KMG')")
PER_ROUND=$((BYTES / 2300 / ROUNDS))
ROUND_BYTES=$((PER_ROUND * 2300))
FILE_BYTES=$((ROUND_BYTES > 65536 ? ROUND_BYTES : 65536))

echo "directory: $DIR on $(df --output=source "$DIR" | tail -1); $ROUNDS rounds of $PER_ROUND writes of 2300 bytes per tool" >&2
r=0
while [ "$r" -lt "$ROUNDS" ]; do
    target/debug/examples/fsync_probe "$DIR" "$PER_ROUND" "$FILE_BYTES" raw >>"$WORK/probe.json"
    fio --rw=write --ioengine=sync --fdatasync=1 --directory="$DIR" --size="$ROUND_BYTES" \
        --bs=2300 --name=fsync-bench --output-format=json+ 2>/dev/null |
        jq -c '.jobs[0].sync.lat_ns.bins' >>"$WORK/fio.json"
    rm -f "$DIR"/fsync-bench.0.0
    r=$((r + 1))
done

jq -n -r --slurpfile probe "$WORK/probe.json" --slurpfile fio "$WORK/fio.json" '
  def pct($q): (length) as $n | .[((($q * $n) | ceil) | if . < 1 then 1 else . end) - 1];
  ($probe | add | sort) as $p
  | ([$fio[] | to_entries[] | {v: (.key | tonumber), n: .value}]
     | [.[] | . as $b | range(0; $b.n) | $b.v] | sort) as $f
  | [[0.5, "p50"], [0.99, "p99"]] as $qs
  | "       nodediag (ms)   fio (ms)   ratio   (\($p | length) and \($f | length) syncs)",
    ($qs[] | . as [$q, $name]
      | ($p | pct($q) / 1e6) as $a | ($f | pct($q) / 1e6) as $b
      | "\($name)   \($a * 1000 | round / 1000 | tostring | .[0:9] | " " * (9 - length) + .)     \($b * 1000 | round / 1000 | tostring | .[0:9] | " " * (9 - length) + .)   \($a / $b * 100 | round / 100)")'
