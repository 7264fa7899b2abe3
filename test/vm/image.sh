#!/usr/bin/env bash
# Builds (once) the disk, kernel and initramfs of the VM that test/condition-vm.test.ts
# boots, and prints the folder holding them (cached: see test/support/debian-cache.sh):
#   disk.img    raw ext4 root: Debian 12 minbase, Debian's kernel, xt_condition built by
#               DKMS for that kernel (not the host's), iptables (legacy), iproute2, python3
#   vmlinuz, initrd.img   the image's own kernel and initramfs, booted by QEMU directly
#   kernel      the kernel version; versions.txt the package versions that matter
# The image's PID 1 is /sbin/nfh-init (below): it mounts the run's second disk (/dev/vdb)
# at /nfh, runs /nfh/guest.sh and powers off. Everything that changes from run to run
# (the project, node, the guest scripts) is on that second disk, not here.
set -euo pipefail
source "$(dirname "$0")/../support/debian-cache.sh"

PACKAGES=linux-image-amd64,linux-headers-amd64,xtables-addons-dkms,xtables-addons-common,iptables,iproute2,kmod,python3

build() {
  local out=$1 work=$2 root=$2/root kver ko
  local t0=$SECONDS
  debootstrap_minbase "$root" "$PACKAGES" "$work/log"
  echo "image.sh: debootstrap $((SECONDS - t0))s" >&2
  kver=$(basename "$(ls -d "$root"/lib/modules/*-amd64 | sort -V | tail -1)")
  # DKMS builds for the running kernel when it is installed; here that is the host's, so
  # build for the image's kernel explicitly.
  ko=$(find "$root/lib/modules/$kver" -name xt_condition.ko 2>/dev/null | head -1)
  if [ -z "$ko" ]; then
    local ver
    ver=$(basename "$(ls -d "$root"/usr/src/xtables-addons-* | tail -1)")
    chroot "$root" dkms install "xtables-addons/${ver#xtables-addons-}" -k "$kver" >"$work/dkms.log" 2>&1 ||
      { tail -30 "$work/dkms.log" >&2; return 1; }
    ko=$(find "$root/lib/modules/$kver" -name xt_condition.ko | head -1)
  fi
  [ -n "$ko" ] || { echo "image.sh: DKMS built no xt_condition.ko for $kver" >&2; return 1; }
  chroot "$root" depmod -a "$kver"
  echo "image.sh: xt_condition for $kver $((SECONDS - t0))s" >&2
  chroot "$root" update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
  echo nfh-vm >"$root/etc/hostname"
  cat >"$root/sbin/nfh-init" <<'INIT'
#!/bin/sh
# PID 1 of the nf-healthd test VM: mounts what the initramfs did not, runs the run's
# /nfh/guest.sh from the second disk, powers off. Output: ttyS0 (console), ttyS1 (results).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mountpoint -q /run || mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/netns /nfh
hostname nfh-vm
ip link set lo up
if mount -o ro /dev/vdb /nfh; then
  /bin/sh /nfh/guest.sh
  echo "nfh-init: guest.sh exited $?"
else
  echo "nfh-init: no /dev/vdb"
fi
echo o >/proc/sysrq-trigger
sleep 60
INIT
  chmod 755 "$root/sbin/nfh-init"
  mkdir -p "$out"
  cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
  cp "$root/boot/initrd.img-$kver" "$out/initrd.img"
  echo "$kver" >"$out/kernel"
  chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' linux-image-amd64 xtables-addons-dkms iptables iproute2 python3 >"$out/versions.txt"
  # Not needed at run time: the build tree, caches, docs (the image is about half smaller).
  rm -rf "$root"/usr/src/linux-* "$root"/var/lib/dkms/*/*/build "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/lib/apt/lists/* "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale "$root/boot"/*
  local mb
  mb=$(du -sm "$root" | cut -f1)
  mkfs.ext4 -q -F -L nfh-root -d "$root" "$out/disk.img" "$((mb + mb / 4 + 64))M"
  echo "image.sh: done $((SECONDS - t0))s, root ${mb}MB" >&2
}
cached_build vm-image disk.img build
