#!/usr/bin/env bash
# Release benchmark (issue 14): the 3-cell Debian release against the sum
# of its parts, each from an empty store (see benches/release.rs). Needs
# root, the Debian fixture the tests build, mksquashfs, xorriso, mtools and
# the Debian mirror. Prints a Markdown table for docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
base=target/fixtures/debian-minbase-bookworm.tar
[ -f "$base" ] || { echo "run the tests once first: $base is built by them" >&2; exit 1; }
exec cargo bench --locked --bench release
