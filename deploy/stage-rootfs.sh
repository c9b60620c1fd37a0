#!/usr/bin/env bash
# stage-rootfs.sh BINARY DEST: lay out the nodediag image's files in DEST.
#
# The image holds the binary at /nodediag and the shared libraries it links, each at
# the path the dynamic loader resolves (as `ldd` lists them), and nothing else: no
# shell, no package manager. build-image.sh and deploy/Dockerfile both call this
# script, so the two images have the same files by construction.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 BINARY DEST" >&2
  exit 64
fi
bin=$1
dest=$2
[ -x "$bin" ] || { echo "$0: $bin is not an executable file" >&2; exit 66; }
if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
  echo "$0: $dest is not empty" >&2
  exit 73
fi

install -D -m 0755 "$bin" "$dest/nodediag"

# ldd prints "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" for each library
# and "/lib64/ld-linux-x86-64.so.2 (0x...)" for the loader; the vDSO has no file.
# A static binary ("statically linked" for static-pie, as build-release.sh makes
# on glibc; "not a dynamic executable", exit 1, otherwise) needs no library.
libs=$(ldd "$bin" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' || true)
for lib in $libs; do
  # Copy the file's content to the path the loader asks for: on a merged-/usr host
  # /lib64 and /lib are symlinks, which the image does not need.
  install -D -m 0755 "$(readlink -f "$lib")" "$dest$lib"
done
