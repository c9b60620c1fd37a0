#!/usr/bin/env bash
# oci-archive.sh ROOTFS REF CONFIG_JSON OUT: an OCI image archive of one layer.
#
# ROOTFS is the directory that becomes the image's only layer (files owned by root,
# modes kept), REF the image's full name (registry/repository:tag), CONFIG_JSON the
# image's run configuration (the "config" object of the OCI image config:
# Entrypoint, Cmd, User, ExposedPorts, Labels). OUT is a tar of an OCI image layout
# (oci-layout, index.json, blobs/sha256/...) that `ctr images import`, `podman load`,
# `docker load` (Docker 25 and later) and `skopeo copy oci-archive:OUT ...` read.
# No Docker engine, registry or network is used: tar, sha256sum and python3 only.
#
# SOURCE_DATE_EPOCH (default 0) dates the files and the image, so the same ROOTFS
# gives the same digests.
set -euo pipefail

if [ $# -ne 4 ]; then
  echo "usage: $0 ROOTFS REF CONFIG_JSON OUT" >&2
  exit 64
fi
rootfs=$1
ref=$2
config=$3
out=$4
[ -d "$rootfs" ] || { echo "$0: $rootfs is not a directory" >&2; exit 66; }
case $ref in
  */*:*) ;;
  *) echo "$0: $ref is not a full image name (registry/repository:tag)" >&2; exit 64 ;;
esac
epoch=${SOURCE_DATE_EPOCH:-0}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/blobs/sha256"

# The layer: an uncompressed tar, so its digest is also its diff id.
tar --create --file "$work/layer.tar" --directory "$rootfs" \
  --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
  --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  .

blob() { # blob FILE MEDIATYPE: move FILE into blobs/, print its descriptor as JSON
  local digest size
  digest=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$work/blobs/sha256/$digest"
  printf '{"mediaType": "%s", "digest": "sha256:%s", "size": %s}' "$2" "$digest" "$size"
}

layer=$(blob "$work/layer.tar" application/vnd.oci.image.layer.v1.tar)

python3 - "$work/config.json" "$config" "$layer" "$epoch" <<'PY'
import json, sys, datetime, platform
path, run, layer, epoch = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
created = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
config = {
    "created": created,
    "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
    "os": "linux",
    "config": run,
    "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    "history": [{"created": created, "created_by": "deploy/oci-archive.sh"}],
}
with open(path, "w") as f:
    json.dump(config, f, sort_keys=True, separators=(",", ":"))
PY
config_desc=$(blob "$work/config.json" application/vnd.oci.image.config.v1+json)

python3 - "$work/manifest.json" "$config_desc" "$layer" <<'PY'
import json, sys
path, config, layer = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": config,
    "layers": [layer],
}
with open(path, "w") as f:
    json.dump(manifest, f, sort_keys=True, separators=(",", ":"))
PY
manifest=$(blob "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)

python3 - "$work" "$manifest" "$ref" <<'PY'
import json, sys, platform
work, manifest, ref = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
manifest["platform"] = {"architecture": arch, "os": "linux"}
# containerd names the image after io.containerd.image.name; the OCI annotation
# carries the tag for tools that read only the standard one.
manifest["annotations"] = {
    "io.containerd.image.name": ref,
    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1],
}
index = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [manifest],
}
with open(f"{work}/index.json", "w") as f:
    json.dump(index, f, sort_keys=True, indent=2)
with open(f"{work}/oci-layout", "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
PY

tar --create --file "$out.tmp" --directory "$work" \
  --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
  oci-layout index.json blobs
mv "$out.tmp" "$out"
