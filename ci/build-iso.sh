#!/usr/bin/env bash
# The README's main job: on a fresh Debian 12 machine, set up and build the
# Debian core ISO into out/, then print its path and sha256.
#
# The base image is made by mmdebstrap from the machine's apt mirror and
# passed as --base-image, so no container registry is needed for it (on a
# connected machine `kbuild iso --flavor debian --variant core` pulls the
# flavor's default base, docker.io/library/debian:bookworm-slim, instead).
#
# The core layer needs the Kairos framework image (quay.io/kairos/framework,
# pinned in packages/framework.yaml). When quay.io cannot be reached, this
# script says so and builds with a clearly named stand-in instead: a
# one-file image under kbuild.local/standin/, in a copy of the project
# under target/main-job/project. That ISO boots and carries the composed
# kairos-release, but not the real framework.
set -euo pipefail
cd "$(dirname "$0")/.."

ci/setup.sh
cargo build --release --locked
kbuild="$PWD/target/release/kbuild"
work="$PWD/target/main-job"
export KBUILD_STORE="${KBUILD_STORE:-$work/store}"
mkdir -p "$work"

base="$work/debian-bookworm-minbase.tar"
if [ ! -f "$base" ]; then
  mmdebstrap --variant=minbase --quiet bookworm "$work/base.partial.tar"
  mv "$work/base.partial.tar" "$base"
fi
"$kbuild" import "$base" -t debian:bookworm --compression zstd >/dev/null

project="$PWD"
framework="$(sed -n 's/^ *image: *//p' packages/framework.yaml | head -n 1)"
if ! "$kbuild" pull "$framework" --platform linux/amd64 >/dev/null 2>&1; then
  echo "notice: $framework cannot be pulled from this machine; the core layer" >&2
  echo "notice: uses kbuild.local/standin/framework instead (one marker file," >&2
  echo "notice: not the Kairos framework). See ci/build-iso.sh." >&2
  standin="$work/standin"
  rm -rf "$standin" "$work/project"
  mkdir -p "$standin/etc/kairos" "$work/project"
  echo "kbuild main-job stand-in for $framework" > "$standin/etc/kairos/framework-standin"
  tar -C "$standin" --owner=0 --group=0 --numeric-owner --mtime=@1700000000 \
    -cf "$work/standin.tar" etc
  "$kbuild" import "$work/standin.tar" -t kbuild.local/standin/framework:latest >/dev/null
  cp -r kbuild.yaml images flavors packages templates "$work/project/"
  sed -i "s#image: $framework#image: kbuild.local/standin/framework:latest#" \
    "$work/project/packages/framework.yaml"
  project="$work/project"
fi

"$kbuild" iso --project "$project" --flavor debian --variant core \
  --base-image debian:bookworm -o "$PWD/out"
