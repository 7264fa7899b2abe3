#!/usr/bin/env bash
# Builds (once) the base image test/docker.test.ts builds the Dockerfile on, as a tarball
# for `docker import`, and prints its path. Docker Hub cannot be reached from the test
# machines, so instead of node:*-slim: a Debian 12 minbase plus the host's node and npm
# where the official images have them (/usr/local), and the host's CA store (npm ci inside
# the build fails with SELF_SIGNED_CERT_IN_CHAIN without it). Cached per node version:
# see test/support/debian-cache.sh.
set -euo pipefail
source "$(dirname "$0")/../support/debian-cache.sh"
CA=/etc/ssl/certs/ca-certificates.crt
node=$(readlink -f "$(command -v node)")
npm_dir=$(readlink -f "$(dirname "$node")/../lib/node_modules/npm")
[ -f "$npm_dir/bin/npm-cli.js" ] || { echo "base-image.sh: no npm next to $node" >&2; exit 1; }

build() {
  local out=$1 work=$2 r=$2/root
  debootstrap_minbase "$r" ca-certificates "$work/log"
  install -m 0755 "$node" "$r/usr/local/bin/node"
  mkdir -p "$r/usr/local/lib/node_modules" "$r/etc/ssl/certs" "$out"
  cp -a "$npm_dir" "$r/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$r/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$r/usr/local/bin/npx"
  install -m 0644 "$CA" "$r/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*
  tar -C "$r" --numeric-owner -cf "$out/base.tar" .
  rm -rf --one-file-system "$r"
}
dir=$(cached_build "docker-base-node$("$node" --version)" base.tar build)
echo "$dir/base.tar"
