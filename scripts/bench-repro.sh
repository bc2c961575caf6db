#!/usr/bin/env bash
# Reproducibility benchmarks (issue 21): no-op `kbuild iso` and `kbuild
# release` against their cold runs, the ISO stage against the hand-made
# floor with its checksum, and `kbuild verify` against a cold build (see
# benches/repro.rs). Needs root, the Debian fixture the tests build,
# umoci, mksquashfs, xorriso, mtools and the Debian mirror. Prints a
# Markdown table for docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
base=target/fixtures/debian-minbase-bookworm.tar
[ -f "$base" ] || { echo "run the tests once first: $base is built by them" >&2; exit 1; }
exec cargo bench --locked --bench repro
