#!/usr/bin/env bash
# arm64 benchmark (issue 22), all in one run on one amd64 machine:
#
# 1. kbuild arm64: `kbuild image --flavor debian --variant core --arch
#    arm64` cold (a store holding only the arm64 base and the framework
#    stand-in), every RUN step under qemu-user through binfmt_misc.
# 2. kbuild amd64: the same cell for amd64, natively, cold: the ratio of
#    1 to 2 is the cost of emulation.
# 3. buildah arm64: `buildah bud --platform linux/arm64` of the same spec
#    from the same arm64 base (chroot isolation, overlay storage). Debian
#    12's buildah 1.28 has no heredocs: as in scripts/bench-iso.sh, each
#    `RUN <<EOF ... EOF` becomes a plain RUN that decodes the same script
#    (base64) and runs it with sh. buildah builds the flavor spec only;
#    kbuild also composes and checks core.
#
# The framework package is a local stand-in (one file in the store), as in
# the tests. Needs root, buildah, skopeo, qemu-user-static registered with
# binfmt_misc, the mmdebstrap fixtures of both architectures (built by the
# tests: cargo test --test arm64) and the Debian mirror. Prints a Markdown
# table for docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
base_amd64=target/fixtures/debian-minbase-bookworm.tar
base_arm64=target/fixtures/debian-minbase-bookworm-arm64.tar
for f in "$base_amd64" "$base_arm64"; do
  [ -f "$f" ] || { echo "run the tests once first: $f is built by them" >&2; exit 1; }
done
cargo build --release --locked --quiet
kbuild=$PWD/target/release/kbuild
work=$PWD/target/bench/arm64
rm -rf "$work" && mkdir -p "$work"
export SOURCE_DATE_EPOCH=1700000000

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# A project copy whose framework is a stand-in image of each architecture.
project=$work/project
mkdir -p "$project" "$work/fx/etc/kairos"
cp -r images flavors packages templates kbuild.yaml "$project/"
printf 'framework fixture\n' >"$work/fx/etc/kairos/framework-fixture"
tar -C "$work/fx" --owner=0 --group=0 -cf "$work/framework.tar" .
printf 'name: framework\nversion: v2.14.8\nsources:\n  amd64: { image: "fixture/framework:1" }\n  arm64: { image: "fixture/framework:1" }\nfiles:\n  - { from: "/", to: "/" }\n' \
  >"$project/packages/framework.yaml"

store_for() { # arch: a store with only that base and the stand-in
  local store=$work/store-$1 base=$base_amd64
  [ "$1" = arm64 ] && base=$base_arm64
  rm -rf "$store"
  "$kbuild" import "$base" -t debian:bookworm --platform "linux/$1" --store "$store" >/dev/null 2>&1
  "$kbuild" import "$work/framework.tar" -t fixture/framework:1 --platform "linux/$1" \
    --store "$store" >/dev/null 2>&1
  echo "$store"
}

cold_image() { # arch: seconds of a cold `kbuild image` of core
  local store t0 t1
  store=$(store_for "$1")
  t0=$(now)
  "$kbuild" image --project "$project" --store "$store" --flavor debian --variant core \
    --arch "$1" --base-image debian:bookworm >/dev/null 2>"$work/image-$1.log"
  t1=$(now)
  secs "$t0" "$t1"
}

echo "kbuild arm64 (cold, emulated)..." >&2
kbuild_arm64=$(cold_image arm64)
echo "kbuild amd64 (cold, native)..." >&2
kbuild_amd64=$(cold_image amd64)

echo "buildah bud --platform linux/arm64 (cold, emulated)..." >&2
scripts/plain-heredocs.py "$work/Dockerfile.buildah"
bstore=(--root "$work/buildah/root" --runroot "$work/buildah/run" --storage-driver overlay)
"$kbuild" export debian:bookworm "oci:$work/base-oci:base" --store "$work/store-arm64" >/dev/null 2>&1
skopeo copy --quiet "oci:$work/base-oci:base" \
  "containers-storage:[overlay@$work/buildah/root+$work/buildah/run]localhost/kbuild-bench-base-arm64:1"
t0=$(now)
buildah "${bstore[@]}" bud --quiet --layers=false --isolation chroot --platform linux/arm64 \
  --build-arg BASE_IMAGE=localhost/kbuild-bench-base-arm64:1 \
  --build-arg LIVE_ROOT_PASSWORD=kairos --build-arg TARGETARCH=arm64 \
  --build-arg SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" \
  -f "$work/Dockerfile.buildah" -t localhost/kbuild-bench-debian-arm64:1 "$work" >/dev/null
t1=$(now)
buildah_arm64=$(secs "$t0" "$t1")
buildah "${bstore[@]}" rmi -a -f >/dev/null 2>&1 || true

printf '| run | seconds | against | seconds | ratio |\n|---|---|---|---|---|\n'
printf '| kbuild image core --arch arm64, cold, emulated | %s | the same for amd64, native | %s | %s |\n' \
  "$kbuild_arm64" "$kbuild_amd64" "$(ratio "$kbuild_arm64" "$kbuild_amd64")"
printf '| kbuild image core --arch arm64, cold, emulated | %s | buildah bud --platform linux/arm64 | %s | %s |\n' \
  "$kbuild_arm64" "$buildah_arm64" "$(ratio "$kbuild_arm64" "$buildah_arm64")"
