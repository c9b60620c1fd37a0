#!/usr/bin/env bash
# build-image.sh OUT: the nodediag container image as an OCI archive, without a
# Docker engine or a registry.
#
#   deploy/build-image.sh nodediag.tar
#   ctr -n k8s.io images import nodediag.tar          # on a containerd node
#   skopeo copy oci-archive:nodediag.tar docker://registry.example.com/nodediag:0.1.0
#
# It builds the release binary with build-release.sh (statically linked on glibc),
# lays out the image's files with stage-rootfs.sh (the binary and any libraries it
# links, the same files deploy/Dockerfile produces) and assembles the archive with
# oci-archive.sh.
#
# Environment:
#   NODEDIAG_BIN    use this binary instead of building one
#   NODEDIAG_IMAGE  image name (default: the DaemonSet's, ghcr.io/nodediag/nodediag,
#                   tagged with the version in Cargo.toml)
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUT" >&2
  exit 64
fi
out=$1
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

bin=${NODEDIAG_BIN:-}
if [ -z "$bin" ]; then
  bin=$("$here/build-release.sh")
fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)
ref=${NODEDIAG_IMAGE:-ghcr.io/nodediag/nodediag:$version}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
"$here/stage-rootfs.sh" "$bin" "$stage/rootfs"

# The same run configuration as deploy/Dockerfile: uid 65532 unless the pod says
# otherwise (the DaemonSet runs it as root), /nodediag serve, port 10360.
config='{
  "User": "65532:65532",
  "Entrypoint": ["/nodediag"],
  "Cmd": ["serve"],
  "ExposedPorts": {"10360/tcp": {}},
  "Labels": {
    "org.opencontainers.image.title": "nodediag",
    "org.opencontainers.image.description": "Per-node Kubernetes diagnostic agent",
    "org.opencontainers.image.source": "https://github.com/nodediag/nodediag",
    "org.opencontainers.image.licenses": "Apache-2.0"
  }
}'
"$here/oci-archive.sh" "$stage/rootfs" "$ref" "$config" "$out"
echo "$ref -> $out"
