#!/usr/bin/env bash
# Builds (once) the base image test/docker.test.ts builds the Dockerfile on, as a
# tarball for `docker import`, and prints its path. Docker Hub cannot be reached here,
# so instead of node:*-slim: a Debian 12 minbase (debootstrap) plus the host's node and
# npm where the official images have them (/usr/local), and the host's CA store
# (npm ci inside the build fails with SELF_SIGNED_CERT_IN_CHAIN without it).
# Cached under a name keyed by this script, the node version and the CA store; built in
# a temporary folder and renamed into place.
set -euo pipefail
CACHE=${NFH_ROOTFS_CACHE:-/var/cache/nf-healthd-test}
MIRROR=${NFH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA=/etc/ssl/certs/ca-certificates.crt
node=$(readlink -f "$(command -v node)")
npm_dir=$(readlink -f "$(dirname "$node")/../lib/node_modules/npm")
[ -f "$npm_dir/bin/npm-cli.js" ] || { echo "base-image.sh: no npm next to $node" >&2; exit 1; }
hash=$({ cat "$0"; "$node" --version; sha256sum "$CA"; } | sha256sum | cut -c1-16)
out="$CACHE/docker-base-$hash.tar"
if [ -f "$out" ]; then echo "$out"; exit 0; fi
mkdir -p "$CACHE"
tmp=$(mktemp -d "$CACHE/.build-XXXXXX")
trap 'rm -rf --one-file-system "$tmp"' EXIT
debootstrap --variant=minbase bookworm "$tmp/root" "$MIRROR" >"$tmp/log" 2>&1 || { tail -20 "$tmp/log" >&2; exit 1; }
r=$tmp/root
install -m 0755 "$node" "$r/usr/local/bin/node"
mkdir -p "$r/usr/local/lib/node_modules"
cp -a "$npm_dir" "$r/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$r/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$r/usr/local/bin/npx"
mkdir -p "$r/etc/ssl/certs"
install -m 0644 "$CA" "$r/etc/ssl/certs/ca-certificates.crt"
rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*
tar -C "$r" --numeric-owner -cf "$tmp/base.tar" .
mv "$tmp/base.tar" "$out"
echo "$out"
