#!/usr/bin/env bash
# Rootless benchmark: the build benchmark's Dockerfile and Debian base
# (scripts/bench-build.sh) built by kbuild as root and by kbuild as an
# ordinary user with subordinate ids (rootless: a user namespace, overlayfs
# with userxattr):
#   cold         fresh store, base already imported, nothing cached
#   cached       the same build again
#   incremental  after changing one COPY source (app.conf)
# Each figure is the median wall time of RUNS rounds; every round starts
# from fresh stores for both. Needs root (to make the user), uidmap, the
# mmdebstrap fixture (built by the tests) and the Debian mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
user=kbuild-bench
base=target/fixtures/debian-minbase-bookworm.tar
[ -f "$base" ] || { echo "run the tests once first: $base is built by them" >&2; exit 1; }
cargo build --release --locked --quiet

id "$user" >/dev/null 2>&1 || useradd --create-home --user-group --shell /bin/sh "$user"
grep -q "^$user:" /etc/subuid || usermod --add-subuids 500000-565535 --add-subgids 500000-565535 "$user"
home=$(getent passwd "$user" | cut -d: -f6)
work=$home/bench-rootless
rm -rf "$work" && mkdir -p "$work/context/big" "$work/bin"
cp target/release/kbuild "$work/bin/kbuild"
cp "$base" "$work/base.tar"
kbuild=$work/bin/kbuild

# shellcheck source=scripts/bench-build-context.sh
. scripts/bench-build-context.sh
write_build_context "$work/context"
chown -R "$user:" "$work"

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }
# kbuild as root, or as the user (a clean environment, its own HOME).
as_root() { "$kbuild" "$@"; }
as_user() { setpriv --reuid="$user" --regid="$user" --init-groups -- env -i PATH=/usr/bin:/bin HOME="$home" "$kbuild" "$@"; }

fresh() {
  local who=$1
  "as_$who" cache prune --all --store "$work/store-$who" >/dev/null 2>&1 || true
  rm -rf "$work/store-$who"
  "as_$who" import "$work/base.tar" -t localhost/kbuild-base:latest --store "$work/store-$who" >/dev/null 2>&1
}
run() {
  local who=$1 t
  sync
  t=$(now)
  "as_$who" build --store "$work/store-$who" -t bench "$work/context" >"$work/$who.log" 2>&1
  elapsed "$t"
}

declare -A times
for round in $(seq 1 "$RUNS"); do
  for who in root user; do
    echo "port = 1" >"$work/context/app.conf"
    fresh "$who"
    times[$who-cold]+="$(run "$who") "
    times[$who-cached]+="$(run "$who") "
    echo "port = $((round + 1))" >"$work/context/app.conf"
    times[$who-incremental]+="$(run "$who") "
  done
  echo "round $round done" >&2
done
root_digest=$(tail -1 "$work/root.log")
user_digest=$(tail -1 "$work/user.log")
[ "$root_digest" = "$user_digest" ] || echo "note: digests differ: root $root_digest, rootless $user_digest (apt-get's clock-stamped files)" >&2

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '| build | kbuild as root | kbuild rootless | rootless / root |\n|---|---|---|---|\n'
for kind in cold cached incremental; do
  r=$(echo "${times[root-$kind]}" | median)
  u=$(echo "${times[user-$kind]}" | median)
  printf '| %s | %.2f s | %.2f s | %.3fx |\n' "$kind" "$r" "$u" "$(echo "$u / $r" | bc -l)"
done
