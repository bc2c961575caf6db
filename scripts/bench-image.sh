#!/usr/bin/env bash
# Image benchmark: the standard (provider) layer composed on a cached core.
#   kbuild   `kbuild image --variant standard --k8s k3s` with the flavor
#            image and core already in the store: it downloads and verifies
#            k3s, composes provider-kairos, edgevpn, k3s, its services and
#            kairos-release as one layer, runs `kbuild check`, tags.
#   buildah  the same layer by hand on the same core: `buildah from` core,
#            curl + sha256sum -c of k3s, `buildah copy` of each file
#            (provider and edgevpn `--from` their images), `buildah config`
#            labels, `buildah commit` (overlay storage driver).
# Every round changes the k3s fixture, so both rebuild the layer and
# neither reuses the previous round's. Figures are medians of RUNS rounds.
# The packages are local fixtures (as in tests/image.rs): the real
# artifacts are not reachable from the benchmark machine.
# Needs root, buildah, docker-registry, python3, the mmdebstrap fixture
# (built by the tests) and the Debian mirror (the flavor build runs apt).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
base=target/fixtures/debian-minbase-bookworm.tar
[ -f "$base" ] || { echo "run the tests once first: $base is built by them" >&2; exit 1; }
cargo build --release --locked --quiet
kbuild=$PWD/target/release/kbuild
work=$PWD/target/bench/image
rm -rf "$work" && mkdir -p "$work/fx" "$work/http"
store=$work/store
reg_port=5071
http_port=5072
host=127.0.0.1:$reg_port

cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $host
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
(cd "$work/http" && exec python3 -m http.server "$http_port" --bind 127.0.0.1 >"$work/http.log" 2>&1) &
http_pid=$!
trap 'kill $registry_pid $http_pid 2>/dev/null || true' EXIT
sleep 1

# Fixture package images, pushed where the project copy points.
fixture() { # name target path content
  local dir=$work/fx/$1
  mkdir -p "$dir/$(dirname "$3")"
  printf '%s\n' "$4" >"$dir/$3"
  chmod 0755 "$dir/$3"
  tar -C "$dir" --owner=0 --group=0 -cf "$dir.tar" .
  "$kbuild" import "$dir.tar" -t "fixture/$1:1" --store "$store" >/dev/null 2>&1
  "$kbuild" push "fixture/$1:1" "$2" --store "$store" >/dev/null 2>&1
}
fixture framework "$host/kairos/framework:v2.14.8" etc/kairos/fixture "framework fixture"
fixture provider "$host/kairos/packages:provider-kairos-system-2.7.5" \
  system/providers/agent-provider-kairos '#!/bin/sh
echo provider fixture'
fixture edgevpn "$host/kairos/packages:edgevpn-utils-0.28.4" usr/bin/edgevpn '#!/bin/sh
echo edgevpn fixture'
"$kbuild" import "$base" -t debian:bookworm --store "$store" >/dev/null 2>&1

project=$work/project
mkdir -p "$project"
cp -r images flavors packages templates kbuild.yaml "$project/"
sed -i "s|^registry: .*|registry: $host/kairos|; s|^arches: .*|arches: [amd64]|" "$project/kbuild.yaml"
image_pkg() { # name version image path mode
  printf 'name: %s\nversion: %s\nsources:\n  amd64: { image: "%s" }\nfiles:\n  - { from: "%s", to: "%s"%s }\n' \
    "$1" "$2" "$3" "$4" "$4" "$5" >"$project/packages/$1.yaml"
}
image_pkg framework v2.14.8 "$host/kairos/framework:v2.14.8" / ""
image_pkg provider-kairos v2.7.5 "$host/kairos/packages:provider-kairos-system-2.7.5" \
  /system/providers/agent-provider-kairos ', mode: "0755"'
image_pkg edgevpn v0.28.4 "$host/kairos/packages:edgevpn-utils-0.28.4" /usr/bin/edgevpn ', mode: "0755"'
k3s_round() { # round: a new k3s fixture and its pin
  printf '#!/bin/sh\necho "k3s version v1.31.4+k3s1 (benchmark fixture, round %s)"\n' "$1" >"$work/http/k3s"
  local sha
  sha=$(sha256sum "$work/http/k3s" | cut -d' ' -f1)
  printf 'name: k3s\nversion: v1.31.4+k3s1\nsources:\n  amd64: { url: "http://127.0.0.1:%s/k3s", sha256: "%s", format: raw }\nfiles:\n  - { from: k3s, to: /usr/bin/k3s, mode: "0755" }\n' \
    "$http_port" "$sha" >"$project/packages/k3s.yaml"
  echo "$sha"
}
k3s_round 0 >/dev/null

image() {
  "$kbuild" image --flavor debian --base-image debian:bookworm --project "$project" --store "$store" "$@"
}
echo "warming: flavor image and core (not timed)" >&2
image --variant core >/dev/null 2>"$work/core.log"
core=$(grep '^core ' "$work/core.log" | awk '{print $NF}')

# buildah gets the same core and package images in its own storage.
bstore=(--root "$work/buildah/root" --runroot "$work/buildah/run" --storage-driver overlay)
"$kbuild" export "$core" "oci-archive:$work/core.tar" --store "$store" >/dev/null 2>&1
core_id=$(buildah "${bstore[@]}" pull -q "oci-archive:$work/core.tar")
for p in provider edgevpn; do
  "$kbuild" export "fixture/$p:1" "oci-archive:$work/$p.tar" --store "$store" >/dev/null 2>&1
  id=$(buildah "${bstore[@]}" pull -q "oci-archive:$work/$p.tar")
  buildah "${bstore[@]}" tag "$id" "localhost/fixture-$p:1"
done
"$kbuild" image --variant standard --k8s k3s --flavor debian --base-image debian:bookworm \
  --project "$project" --store "$store" --report "$work/standard.json" >/dev/null 2>&1
# The standard layer's own files, as kbuild rendered them, for buildah.
mkdir -p "$work/files"
standard=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"])' "$work/standard.json")
"$kbuild" export "$standard" "oci:$work/standard-oci:img" --store "$store" >/dev/null 2>&1
umoci unpack --image "$work/standard-oci:img" "$work/standard-bundle" >/dev/null 2>&1
root=$work/standard-bundle/rootfs
cp "$root/etc/kairos-release" "$work/files/kairos-release"
cp "$root/etc/systemd/system/k3s.service" "$work/files/k3s.service"
cp "$root/etc/systemd/system/k3s-agent.service" "$work/files/k3s-agent.service"

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

kb_times=() ba_times=()
for round in $(seq 1 "$RUNS"); do
  sha=$(k3s_round "$round")
  start=$(now)
  image --variant standard --k8s k3s >/dev/null 2>"$work/kbuild-$round.log"
  kb_times+=("$(echo "$(now) - $start" | bc)")
  grep -q '^standard  1 steps, 0 cached' "$work/kbuild-$round.log" ||
    { echo "round $round: kbuild did not rebuild the standard layer" >&2; exit 1; }

  start=$(now)
  ctr=$(buildah "${bstore[@]}" from "$core_id")
  curl -sf -o "$work/k3s" "http://127.0.0.1:$http_port/k3s"
  echo "$sha  $work/k3s" | sha256sum -c --quiet
  buildah "${bstore[@]}" copy --from localhost/fixture-provider:1 --chmod 0755 "$ctr" \
    /system/providers/agent-provider-kairos /system/providers/agent-provider-kairos >/dev/null
  buildah "${bstore[@]}" copy --from localhost/fixture-edgevpn:1 --chmod 0755 "$ctr" \
    /usr/bin/edgevpn /usr/bin/edgevpn >/dev/null
  buildah "${bstore[@]}" copy --chmod 0755 "$ctr" "$work/k3s" /usr/bin/k3s >/dev/null
  buildah "${bstore[@]}" copy --chmod 0644 "$ctr" "$work/files/kairos-release" /etc/kairos-release >/dev/null
  buildah "${bstore[@]}" copy --chmod 0644 "$ctr" "$work/files/k3s.service" /etc/systemd/system/k3s.service >/dev/null
  buildah "${bstore[@]}" copy --chmod 0644 "$ctr" "$work/files/k3s-agent.service" /etc/systemd/system/k3s-agent.service >/dev/null
  buildah "${bstore[@]}" config --label io.kairos.variant=standard --label io.kairos.software-version=v1.31.4+k3s1 "$ctr"
  buildah "${bstore[@]}" commit -q "$ctr" "localhost/standard:round-$round" >/dev/null
  buildah "${bstore[@]}" rm "$ctr" >/dev/null
  ba_times+=("$(echo "$(now) - $start" | bc)")
  echo "round $round: kbuild ${kb_times[-1]}s, buildah ${ba_times[-1]}s" >&2
done
kb=$(printf '%s\n' "${kb_times[@]}" | median)
ba=$(printf '%s\n' "${ba_times[@]}" | median)
printf '| standard layer on a cached core | %.2f s | %.2f s | %.2fx |\n' "$kb" "$ba" "$(echo "$kb / $ba" | bc -l)"
