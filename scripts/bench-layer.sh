#!/usr/bin/env bash
# Layer-writer benchmark: times kbuild against tar|pigz and tar|zstd on the
# benchmark tree (scripts/bench-tree.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(scripts/bench-tree.sh)
cargo bench --bench layer -- "$tree"
