#!/usr/bin/env bash
# Layer-writer benchmark: builds a ~600 MB Debian tree once (minbase plus a
# kernel and python3), then times kbuild against tar|pigz and tar|zstd.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=target/bench/debian-rootfs
if [ ! -d "$tree" ]; then
  mkdir -p target/bench
  mmdebstrap --variant=minbase --quiet --mode=root \
    --include=linux-image-amd64,python3,perl,locales bookworm "$tree.partial"
  mv "$tree.partial" "$tree"
fi
cargo bench --bench layer -- "$PWD/$tree"
