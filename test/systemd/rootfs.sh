#!/usr/bin/env bash
# Builds (once) the Debian 12 rootfs that test/support/nspawn.ts boots with systemd-nspawn,
# and prints its path. Cached under a name keyed by a hash of this script, so an edit
# here makes a fresh one; built in a temporary folder and renamed into place, so an
# interrupted build never leaves a half rootfs behind under the final name.
set -euo pipefail
CACHE=${NFH_ROOTFS_CACHE:-/var/cache/nf-healthd-test}
MIRROR=${NFH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# libatomic1, init-system-helpers: dependencies of the nf-healthd package that minbase lacks, and
# nftables its recommendation, so test/package.test.ts installs it with no network.
PACKAGES=systemd,systemd-sysv,dbus,procps,libatomic1,init-system-helpers,nftables
hash=$(sha256sum "$0" | cut -c1-16)
root="$CACHE/rootfs-$hash"
if [ -x "$root/usr/lib/systemd/systemd" ]; then echo "$root"; exit 0; fi
mkdir -p "$CACHE"
tmp=$(mktemp -d "$CACHE/.build-XXXXXX")
trap 'rm -rf --one-file-system "$tmp"' EXIT
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$tmp/root" "$MIRROR" >"$tmp/log" 2>&1 || { tail -20 "$tmp/log" >&2; exit 1; }
# The test reads the journal and the unit state only; no getty, no network setup in there.
chroot "$tmp/root" systemctl mask console-getty.service getty@tty1.service systemd-networkd-wait-online.service >/dev/null 2>&1 || true
echo nfh-test >"$tmp/root/etc/hostname"
mv -T "$tmp/root" "$root" 2>/dev/null || { [ -x "$root/usr/lib/systemd/systemd" ] || exit 1; }
echo "$root"
