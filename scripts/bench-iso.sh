#!/usr/bin/env bash
# ISO benchmarks (issue 13), all in one run on one machine:
#
# 1. squashfs table: mksquashfs of the Debian core rootfs (1 MiB blocks)
#    with zstd levels 1..19, gzip-9 and xz: seconds and size. It chose
#    kbuild's default zstd level.
# 2. warm: `kbuild iso --from <core>` with the image in the store but no
#    ISO parts cached (GRUB step from the step cache, kernel/initrd copy,
#    mksquashfs, ESP, xorriso) against the floor: bare `mksquashfs` +
#    `xorriso` on the same tree (mounted by buildah) with the same options.
# 3. cold: `kbuild iso --flavor debian --variant core` into a store holding
#    only the base image, against `buildah bud` of the same spec followed
#    by the same bare mksquashfs + xorriso. Debian 12's buildah 1.28 has no
#    heredocs: this script turns each `RUN <<EOF ... EOF` into a plain RUN
#    that decodes the same script (base64) and runs it with sh. buildah
#    builds the flavor spec only; kbuild also composes and checks core.
# 4. memory: kbuild's own peak RSS (VmHWM; mksquashfs and xorriso are
#    separate processes) for the core image and for the core image plus
#    1 GiB of incompressible data.
#
# The framework package is a local stand-in (one file in the store), as in
# tests/iso.rs. Needs root, buildah, skopeo, mksquashfs, xorriso,
# mtools, the mmdebstrap fixture (built by the tests) and the Debian mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
base=target/fixtures/debian-minbase-bookworm.tar
[ -f "$base" ] || { echo "run the tests once first: $base is built by them" >&2; exit 1; }
cargo build --release --locked --quiet
kbuild=$PWD/target/release/kbuild
work=$PWD/target/bench/iso
rm -rf "$work" && mkdir -p "$work"
export SOURCE_DATE_EPOCH=1700000000
LEVELS=${LEVELS:-"1 3 6 9 15 19"}
# Layer compression of kbuild's cold build. buildah's containers-storage
# keeps layers uncompressed and compresses only on push; kbuild's store
# holds push-ready blobs, and zstd is the compressor to pick for speed.
COMPRESSION=${COMPRESSION:-zstd}

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

# Peak RSS (kB) of a command's own process, sampled from /proc.
peak_rss() { # out-file command...
  local out=$1; shift
  "$@" &
  local pid=$! hwm=0 line
  while kill -0 "$pid" 2>/dev/null; do
    line=$(grep VmHWM "/proc/$pid/status" 2>/dev/null | awk '{print $2}') || true
    [ -n "${line:-}" ] && hwm=$line
    sleep 0.1
  done
  wait "$pid"
  echo "$hwm" >"$out"
}

project() { # dir store
  mkdir -p "$1/fw/etc/kairos"
  echo "bench stand-in for the framework" >"$1/fw/etc/kairos/framework-standin"
  tar -C "$1/fw" --owner=0 --group=0 --numeric-owner --mtime=@1700000000 -cf "$1/fw.tar" etc
  "$kbuild" import "$1/fw.tar" -t kbuild.local/standin/framework:latest --store "$2" >/dev/null
  mkdir -p "$1/project"
  cp -r kbuild.yaml images flavors packages templates "$1/project/"
  sed -i 's#image: quay.io/kairos/framework:v2.14.8#image: kbuild.local/standin/framework:latest#' \
    "$1/project/packages/framework.yaml"
}

iso_flags=(-volid KBUILD -joliet on -rockridge on)

# --- 3 (kbuild half, cold) -------------------------------------------------
store=$work/store
"$kbuild" import "$base" -t debian:bookworm --store "$store" >/dev/null
project "$work" "$store"
t0=$(now)
"$kbuild" iso --project "$work/project" --store "$store" --flavor debian --variant core \
  --compression "$COMPRESSION" --base-image debian:bookworm -o "$work/out-cold" --report "$work/cold.json" >/dev/null 2>"$work/cold.log"
t1=$(now)
kbuild_cold=$(secs "$t0" "$t1")
core=$(python3 -c "import json;print(json.load(open('$work/cold.json'))['image'])")

# The core tree for the floor and the table: the same image, mounted by
# buildah (containers-storage reads zstd layers; umoci 0.4 does not).
"$kbuild" export "$core" "oci:$work/core-oci:core" --store "$store" >/dev/null
buildah rmi -f localhost/kbuild-bench-core:1 >/dev/null 2>&1 || true
skopeo copy --quiet "oci:$work/core-oci:core" containers-storage:localhost/kbuild-bench-core:1
core_container=$(buildah from localhost/kbuild-bench-core:1)
tree=$(buildah mount "$core_container")
trap 'buildah umount "$core_container" >/dev/null 2>&1; buildah rm "$core_container" >/dev/null 2>&1; buildah rmi -f localhost/kbuild-bench-core:1 >/dev/null 2>&1' EXIT
parts=$(ls -d "$store"/derived/*/)

floor() { # tree out.iso -> seconds
  local t0 t1
  t0=$(now)
  mksquashfs "$1" "$work/floor.squashfs" -noappend -no-progress -quiet -b 1M \
    -comp zstd -Xcompression-level 3 >/dev/null
  xorriso -report_about SORRY "${iso_flags[@]}" -outdev "$2" \
    -map "$work/floor.squashfs" /live/filesystem.squashfs \
    -map "$parts/kernel" /boot/kernel -map "$parts/initrd" /boot/initrd \
    -map "$parts/eltorito.img" /boot/grub/eltorito.img \
    -boot_image grub bin_path=/boot/grub/eltorito.img \
    -boot_image grub "grub2_mbr=$parts/boot_hybrid.img" -boot_image any grub2_boot_info=on \
    -boot_image any partition_offset=16 -boot_image any cat_path=/boot/boot.catalog \
    -boot_image any boot_info_table=on -boot_image any platform_id=0x00 \
    -boot_image any emul_type=no_emulation -boot_image any load_size=2048 \
    -boot_image any next -append_partition 2 0xef "$parts/efi.img" \
    -boot_image any efi_path=--interval:appended_partition_2:all:: \
    -boot_image any platform_id=0xef -boot_image any emul_type=no_emulation \
    -boot_image any appended_part_as=gpt >/dev/null 2>&1
  t1=$(now)
  rm -f "$work/floor.squashfs" "$2"
  secs "$t0" "$t1"
}

# --- 2: warm ------------------------------------------------------------------
warm_kbuild=() warm_floor=()
for round in 1 2 3; do
  rm -rf "$store/derived" "$work/out-warm"
  t0=$(now)
  "$kbuild" iso --project "$work/project" --store "$store" --flavor debian --variant core \
    --from "$core" -o "$work/out-warm" >/dev/null 2>&1
  t1=$(now)
  warm_kbuild+=("$(secs "$t0" "$t1")")
  warm_floor+=("$(floor "$tree" "$work/floor.iso")")
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
wk=$(median "${warm_kbuild[@]}") wf=$(median "${warm_floor[@]}")

# --- 3 (peer half): buildah bud + floor ---------------------------------------
scripts/plain-heredocs.py "$work/Dockerfile.buildah"
"$kbuild" export debian:bookworm "oci:$work/base-oci:base" --store "$store" >/dev/null
buildah rmi -f localhost/kbuild-bench-base:1 localhost/kbuild-bench-debian:1 >/dev/null 2>&1 || true
skopeo copy --quiet "oci:$work/base-oci:base" containers-storage:localhost/kbuild-bench-base:1
t0=$(now)
buildah bud --quiet --layers=false --isolation chroot --build-arg BASE_IMAGE=localhost/kbuild-bench-base:1 \
  --build-arg LIVE_ROOT_PASSWORD=kairos --build-arg TARGETARCH=amd64 \
  -f "$work/Dockerfile.buildah" -t localhost/kbuild-bench-debian:1 "$work" >/dev/null
container=$(buildah from localhost/kbuild-bench-debian:1)
mnt=$(buildah mount "$container")
peer_floor=$(floor "$mnt" "$work/peer.iso")
t1=$(now)
buildah umount "$container" >/dev/null; buildah rm "$container" >/dev/null
buildah rmi -f localhost/kbuild-bench-debian:1 localhost/kbuild-bench-base:1 >/dev/null 2>&1 || true
peer_cold=$(secs "$t0" "$t1")

# --- 1: squashfs table ----------------------------------------------------------
table="| compression | seconds | size (MiB) |\n|---|---|---|\n"
for level in $LEVELS; do
  t0=$(now)
  mksquashfs "$tree" "$work/t.squashfs" -noappend -no-progress -quiet -b 1M -comp zstd -Xcompression-level "$level" >/dev/null
  t1=$(now)
  table+="| zstd-$level | $(secs "$t0" "$t1") | $(( $(stat -c %s "$work/t.squashfs") / 1048576 )) |\n"
done
for comp in "gzip -Xcompression-level 9" "xz"; do
  t0=$(now)
  # shellcheck disable=SC2086
  mksquashfs "$tree" "$work/t.squashfs" -noappend -no-progress -quiet -b 1M -comp $comp >/dev/null
  t1=$(now)
  table+="| ${comp%% *} | $(secs "$t0" "$t1") | $(( $(stat -c %s "$work/t.squashfs") / 1048576 )) |\n"
done
rm -f "$work/t.squashfs"
tree_mib=$(du -sm "$tree" | cut -f1)

# --- 4: memory ------------------------------------------------------------------
rm -rf "$store/derived"
peak_rss "$work/rss-core" "$kbuild" iso --project "$work/project" --store "$store" --flavor debian \
  --variant core --from "$core" -o "$work/out-mem" >/dev/null 2>&1
mkdir -p "$work/big"
printf 'FROM %s\nRUN head -c 1073741824 /dev/urandom > /big.bin\n' "$core" >"$work/big/Dockerfile"
"$kbuild" build --store "$store" -t kbuild.bench/big:1 "$work/big" >/dev/null 2>&1
peak_rss "$work/rss-big" "$kbuild" iso --project "$work/project" --store "$store" --flavor debian \
  --variant core --from kbuild.bench/big:1 --skip-check -o "$work/out-mem" --name big >/dev/null 2>&1

echo "rootfs: $tree_mib MiB (Debian core)"
echo
printf '%b' "$table"
echo
echo "| run | kbuild (s) | peer (s) | ratio |"
echo "|---|---|---|---|"
echo "| warm: kbuild iso --from cached image vs bare mksquashfs + xorriso (median of 3) | $wk | $wf | $(ratio "$wk" "$wf") |"
echo "| cold: kbuild iso --flavor debian (--compression $COMPRESSION) vs buildah bud + mksquashfs + xorriso | $kbuild_cold | $peer_cold | $(ratio "$kbuild_cold" "$peer_cold") |"
echo
echo "kbuild peak RSS: core $(cat "$work/rss-core") kB, core + 1 GiB $(cat "$work/rss-big") kB"
