#!/usr/bin/env bash
# build-release.sh: builds the nodediag binary that ships (the image's /nodediag) and
# prints its path. The Dockerfile, build-image.sh and the benches that measure what
# ships all build it here, so they measure and ship the same binary.
#
# On glibc it is linked statically (`+crt-static`): the shared glibc and its loader
# stayed 1.5 and 0.2 MiB resident for the few functions nodediag calls, and the
# static binary took the agent's RSS at 500 pods from 15.5 to 14.9 MiB (file-backed
# 6.7 -> 6.0 MiB; two agents side by side at the default interval). nodediag does
# not resolve names or users through glibc (NSS), which is what static glibc cannot
# do. The flag needs an explicit --target: with it, cargo builds proc macros and
# build scripts for the host without the flag, as they cannot be static. The binary
# is then under target/<triple>/release/.
#
# Extra arguments go to cargo build (e.g. --quiet).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

host=$(rustc -vV | sed -n 's/^host: //p')
[ -n "$host" ] || { echo "$0: rustc -vV names no host" >&2; exit 1; }
case $host in
  *-linux-gnu*) export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" ;;
esac
cargo build --release --locked --bin nodediag --target "$host" "$@" >&2
# Where cargo put it: CARGO_TARGET_DIR or the build config may move target/.
target=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
echo "$target/$host/release/nodediag"
