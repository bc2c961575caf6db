#!/usr/bin/env bash
# Disk benchmark (issue 23): `kbuild disk --format raw` from a cached
# image against the hand-made floor (mksquashfs + mke2fs -d + sha256sum);
# see benches/disk.rs. Needs root, the Debian fixture the tests build,
# umoci, mksquashfs, mtools, e2fsprogs and the Debian mirror. Prints a
# Markdown table for docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
base=target/fixtures/debian-minbase-bookworm.tar
[ -f "$base" ] || { echo "run the tests once first: $base is built by them" >&2; exit 1; }
exec cargo bench --locked --bench disk
