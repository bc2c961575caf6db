#!/usr/bin/env bash
# Build benchmark: the same Dockerfile and Debian base built by kbuild and
# by `buildah bud --layers --isolation=chroot` (overlay storage driver):
#   cold         fresh store / fresh buildah storage, base already imported
#   cached       the same build again
#   incremental  after changing one COPY source (app.conf)
# Each figure is the median wall time of RUNS rounds; every round starts
# from fresh storage for both tools. Needs root, buildah, the mmdebstrap
# fixture (built by the tests) and the Debian mirror for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
base=target/fixtures/debian-minbase-bookworm.tar
[ -f "$base" ] || { echo "run the tests once first: $base is built by them" >&2; exit 1; }
cargo build --release --locked --quiet
kbuild=$PWD/target/release/kbuild
work=$PWD/target/bench/build
rm -rf "$work" && mkdir -p "$work/context/big"

# shellcheck source=scripts/bench-build-context.sh
. scripts/bench-build-context.sh
write_build_context "$work/context"

buildah_storage=(--root "$work/buildah/root" --runroot "$work/buildah/run" --storage-driver overlay)

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }

fresh_kbuild() {
  rm -rf "$work/store"
  "$kbuild" import "$base" -t localhost/kbuild-base:latest --store "$work/store" >/dev/null 2>&1
}
fresh_buildah() {
  buildah "${buildah_storage[@]}" rm --all >/dev/null 2>&1 || true
  rm -rf "$work/buildah"
  [ -f "$work/base.tar" ] || "$kbuild" export localhost/kbuild-base:latest "oci-archive:$work/base.tar" --store "$work/store" >/dev/null 2>&1
  local id
  id=$(buildah "${buildah_storage[@]}" pull -q "oci-archive:$work/base.tar")
  buildah "${buildah_storage[@]}" tag "$id" localhost/kbuild-base:latest
}
run_kbuild() {
  local t; t=$(now)
  "$kbuild" build --store "$work/store" -t bench "$work/context" >"$work/kbuild.log" 2>&1
  elapsed "$t"
}
run_buildah() {
  local t; t=$(now)
  buildah "${buildah_storage[@]}" bud --layers --isolation=chroot --pull-never -t bench "$work/context" >"$work/buildah.log" 2>&1
  elapsed "$t"
}

declare -A times
for round in $(seq 1 "$RUNS"); do
  for tool in kbuild buildah; do
    echo "port = 1" >"$work/context/app.conf"
    "fresh_$tool"
    times[$tool-cold]+="$(run_$tool) "
    times[$tool-cached]+="$(run_$tool) "
    echo "port = $((round + 1))" >"$work/context/app.conf"
    times[$tool-incremental]+="$(run_$tool) "
  done
  echo "round $round done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '| build | kbuild | buildah bud --layers | kbuild / buildah |\n|---|---|---|---|\n'
for kind in cold cached incremental; do
  k=$(echo "${times[kbuild-$kind]}" | median)
  b=$(echo "${times[buildah-$kind]}" | median)
  printf '| %s | %.2f s | %.2f s | %.3fx |\n' "$kind" "$k" "$b" "$(echo "$k / $b" | bc -l)"
done
