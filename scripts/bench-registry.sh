#!/usr/bin/env bash
# Registry benchmark: push and pull of the benchmark image (the ~700 MB
# Debian tree of scripts/bench-tree.sh as one gzip layer) to a local
# docker-registry, kbuild against `skopeo copy` of the same blobs.
# Each run gets a fresh registry (so nothing is skipped or mounted) and a
# fresh destination; the figure is the median of RUNS wall times.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
tree=$(scripts/bench-tree.sh)
work=target/bench/registry
rm -rf "$work" && mkdir -p "$work"
cargo build --release --locked --quiet
kbuild=$PWD/target/release/kbuild

tarball=target/bench/debian-rootfs.tar
[ -f "$tarball" ] || tar -C "$tree" --numeric-owner -cf "$tarball" .
export KBUILD_STORE=$work/store
"$kbuild" import "$tarball" -t bench:1 >/dev/null 2>&1
"$kbuild" export bench:1 "oci:$work/oci:bench" >/dev/null 2>&1
layer_bytes=$(du -sb "$work/oci/blobs" | cut -f1)

port=${PORT:-5111}
registry_pid=
start_registry() {
  stop_registry
  rm -rf "$work/registry"
  mkdir -p "$work/registry"
  cat >"$work/registry/config.yml" <<CONF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $PWD/$work/registry/data}}
http: {addr: 127.0.0.1:$port}
CONF
  docker-registry serve "$work/registry/config.yml" >"$work/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return; sleep 0.1; done
  echo "registry did not start" >&2; exit 1
}
stop_registry() { [ -z "$registry_pid" ] || { kill "$registry_pid"; wait "$registry_pid" 2>/dev/null || true; registry_pid=; }; }
trap stop_registry EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ref=127.0.0.1:$port/bench/debian:1

declare -A times
for run in $(seq "$RUNS"); do
  start_registry
  t=$(now); "$kbuild" push ${PUSH_FLAGS:-} bench:1 "$ref" >/dev/null 2>&1; times[kpush]+="$(since "$t") "
  rm -rf "$work/pulled"; t=$(now)
  KBUILD_STORE=$work/pulled "$kbuild" pull "$ref" >/dev/null 2>&1
  times[kpull]+="$(since "$t") "

  start_registry
  t=$(now); skopeo copy -q --dest-tls-verify=false "oci:$work/oci:bench" "docker://$ref"; times[spush]+="$(since "$t") "
  rm -rf "$work/skopeo-pulled"; t=$(now)
  skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/skopeo-pulled:bench"
  times[spull]+="$(since "$t") "
done

m() { echo "${times[$1]}" | tr ' ' '\n' | grep . | median; }
printf 'image: %s bytes of blobs; %s runs, median wall time\n\n' "$layer_bytes" "$RUNS"
printf '| operation | kbuild | skopeo copy | ratio |\n|---|---|---|---|\n'
for op in push pull; do
  k=$(m "k$op"); s=$(m "s$op")
  printf '| %s | %.2f s | %.2f s | %.2fx |\n' "$op" "$k" "$s" "$(awk -v k="$k" -v s="$s" 'BEGIN {print k / s}')"
done
