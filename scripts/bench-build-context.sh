# Sourced by the build benchmarks (bench-build.sh, bench-rootless.sh):
# write_build_context DIR writes their shared Dockerfile and context (40
# files of 1 MiB and app.conf) into DIR.
write_build_context() {
  local dir=$1
  mkdir -p "$dir/big"
  cat >"$dir/Dockerfile" <<'SPEC'
FROM localhost/kbuild-base:latest
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q && apt-get install -y -q --no-install-recommends rsync && rm -rf /var/lib/apt/lists/*
RUN useradd -m app
WORKDIR /srv
COPY big/ ./big/
COPY app.conf ./
RUN sha256sum app.conf big/* > sums && chown -R app /srv
SPEC
  for i in $(seq 1 40); do head -c 1048576 /dev/urandom >"$dir/big/blob-$i"; done
  echo "port = 1" >"$dir/app.conf"
}
