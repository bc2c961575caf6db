#!/usr/bin/env bash
# Builds the benchmark tree once and prints its path: a ~700 MB Debian
# rootfs (minbase plus a kernel, python3, perl and locales).
set -euo pipefail
cd "$(dirname "$0")/.."
tree=target/bench/debian-rootfs
if [ ! -d "$tree" ]; then
  mkdir -p target/bench
  mmdebstrap --variant=minbase --quiet --mode=root \
    --include=linux-image-amd64,python3,perl,locales bookworm "$tree.partial" >&2
  mv "$tree.partial" "$tree"
fi
echo "$PWD/$tree"
