#!/usr/bin/env bash
# Builds (once) the Debian 12 rootfs that test/support/nspawn.ts boots with systemd-nspawn,
# and prints its path (cached: see test/support/debian-cache.sh).
set -euo pipefail
source "$(dirname "$0")/../support/debian-cache.sh"

build() {
  local root=$1 work=$2
  # man-db: systemd-analyze verify runs man for the unit's Documentation=man:... pages.
  # libatomic1, init-system-helpers: dependencies of the nf-healthd package that minbase
  # lacks, and nftables its recommendation, so test/package.test.ts installs it with no network.
  debootstrap_minbase "$root" systemd,systemd-sysv,dbus,procps,man-db,libatomic1,init-system-helpers,nftables "$work/log"
  # The test reads the journal and the unit state only; no getty, no network setup in there.
  chroot "$root" systemctl mask console-getty.service getty@tty1.service systemd-networkd-wait-online.service >/dev/null 2>&1 || true
  echo nfh-test >"$root/etc/hostname"
}
cached_build rootfs usr/lib/systemd/systemd build
