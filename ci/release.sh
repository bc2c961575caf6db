#!/usr/bin/env bash
# The release job's one script: GitHub Actions (ci/github-release.yml),
# GitLab CI (ci/gitlab-release.yml) and tests/release.rs all run this very
# file, so what CI does is what the tests run.
#
#   ci/release.sh shard I/N   build the I-th of N slices of the matrix into
#                             $RELEASE_DIR/shard-I (manifest-shard-I-of-N.json
#                             and the cells' directories)
#   ci/release.sh merge       join $RELEASE_DIR/shard-* into $RELEASE_DIR/merged
#                             (manifest.json, SHA256SUMS), check the sums and
#                             print that directory
#
# Environment:
#   KBUILD              the kbuild binary [default: kbuild from PATH]
#   RELEASE_DIR         where the shards and the merged release go
#                       [default: out/release]
#   KBUILD_RELEASE_ARGS more `kbuild release` arguments for a shard, e.g.
#                       `--only kairos-debian-* --base-image debian:bookworm
#                       --project DIR --store DIR`. Split on whitespace only:
#                       no quote removal and no globbing, so write a glob
#                       without quotes, and no argument may hold a space.
#   KBUILD_CACHE        a registry repository without a tag, e.g.
#                       ghcr.io/org/kbuild-cache: shard I of N imports and
#                       exports its step cache as KBUILD_CACHE:shard-I-of-N
#   KBUILD_CACHE_FROM   import this reference instead (e.g. one cache that
#                       every shard starts from)
#
# Relative paths (KBUILD, RELEASE_DIR, paths in KBUILD_RELEASE_ARGS) are
# taken from the repository root, where CI's working directory is too.
# Nothing is installed or built here: the workflows run ci/setup.sh and
# `cargo build --release --locked` in their own steps.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: ci/release.sh shard I/N | ci/release.sh merge" >&2
  exit 2
}

kbuild="${KBUILD:-kbuild}"
release_dir="${RELEASE_DIR:-out/release}"

need_kbuild() {
  command -v "$kbuild" >/dev/null || {
    echo "ci/release.sh: $kbuild not found; build it and set KBUILD (e.g. KBUILD=target/release/kbuild)" >&2
    exit 1
  }
}

case "${1:-}" in
  shard)
    [ $# -eq 2 ] || usage
    # No leading zeros: the numbers name directories and cache tags, and
    # `shard 01/3` and `shard 1/3` must not be two shards.
    if ! [[ "$2" =~ ^([1-9][0-9]{0,5})/([1-9][0-9]{0,5})$ ]] ||
      [ "${BASH_REMATCH[1]}" -gt "${BASH_REMATCH[2]}" ]; then
      echo "ci/release.sh: shard takes I/N with 1 <= I <= N (e.g. 1/3), not \"$2\"" >&2
      usage
    fi
    i="${BASH_REMATCH[1]}"
    n="${BASH_REMATCH[2]}"

    # -d '': the whole value, newlines included (read stops at the NUL it
    # never finds, hence the `|| true`).
    read -r -d '' -a args <<<"${KBUILD_RELEASE_ARGS:-}" || true
    # Quotes would reach kbuild as part of the argument: a quoted --only
    # glob matches no cell, and an empty shard is not an error, so the
    # release would come out empty. Refuse instead.
    for arg in "${args[@]}"; do
      case "$arg" in
        *\'* | *\"*)
          echo "ci/release.sh: KBUILD_RELEASE_ARGS is split on whitespace only; drop the quotes in $arg" >&2
          exit 2
          ;;
      esac
    done

    cache=()
    if [ -n "${KBUILD_CACHE:-}" ]; then
      # A shard's slice of the matrix is the same on every run, so its own
      # cache from the last run is the one whose steps it will hit. A
      # reference that does not exist yet (first run) is only a warning.
      tag="$KBUILD_CACHE:shard-$i-of-$n"
      cache=(--cache-from "${KBUILD_CACHE_FROM:-$tag}" --cache-to "$tag")
    elif [ -n "${KBUILD_CACHE_FROM:-}" ]; then
      cache=(--cache-from "$KBUILD_CACHE_FROM")
    fi

    need_kbuild
    "$kbuild" release --shard "$i/$n" -o "$release_dir/shard-$i" "${args[@]}" "${cache[@]}"
    ;;
  merge)
    [ $# -eq 1 ] || usage
    shopt -s nullglob
    shards=("$release_dir"/shard-*/)
    if [ ${#shards[@]} -eq 0 ]; then
      echo "ci/release.sh: no shard directories in $release_dir (run ci/release.sh shard I/N first)" >&2
      exit 1
    fi
    need_kbuild
    # kbuild checks that every shard 1..N is there exactly once. Its stdout
    # (the SHA256SUMS path) goes to stderr so that ours is the one line
    # naming the merged release.
    "$kbuild" release merge "${shards[@]}" -o "$release_dir/merged" >&2
    # Check the merged release the way its users will, with sha256sum.
    (cd "$release_dir/merged" && sha256sum -c --quiet SHA256SUMS)
    echo "$release_dir/merged"
    ;;
  *)
    usage
    ;;
esac
