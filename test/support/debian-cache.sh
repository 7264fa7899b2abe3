# Sourced by the scripts that build a Debian 12 tree for a test once and cache it
# (test/systemd/rootfs.sh, test/vm/image.sh). Not executable on its own.
#
#   cached_build PREFIX MARKER BUILD_FUNCTION
#     Prints $CACHE/PREFIX-HASH, building it first when MARKER (a path inside it) is
#     missing. HASH covers the calling script and this file, so an edit to either makes
#     a fresh one. BUILD_FUNCTION DIR fills DIR (which does not exist yet) inside a
#     temporary folder that is renamed into place at the end: an interrupted build never
#     leaves a half tree under the final name, and is removed on exit.
#   debootstrap_minbase ROOT PACKAGES LOG
#     debootstrap --variant=minbase bookworm into ROOT with the comma-separated PACKAGES,
#     from the Debian mirror apt uses on this machine; on failure, the end of LOG.
CACHE=${NFH_ROOTFS_CACHE:-/var/cache/nf-healthd-test}

# The mirror apt is configured with (deb822 .sources or one-line .list), else Debian's.
debian_mirror() {
  if [ -n "${NFH_DEBIAN_MIRROR:-}" ]; then echo "$NFH_DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ { u = $2 } /^Suites:/ && / bookworm( |$)/ && u !~ /security/ { print u; exit }')
  [ -n "$uri" ] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1 == "deb" && $3 == "bookworm" && $2 !~ /security/ { print $2; exit }')
  echo "${uri:-http://deb.debian.org/debian}"
}

debootstrap_minbase() {
  local root=$1 packages=$2 log=$3
  debootstrap --variant=minbase --include="$packages" bookworm "$root" "$(debian_mirror)" >"$log" 2>&1 ||
    { tail -20 "$log" >&2; return 1; }
}

cached_build() {
  local prefix=$1 marker=$2 build=$3 hash out tmp
  hash=$(cat "$0" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
  out="$CACHE/$prefix-$hash"
  if [ -e "$out/$marker" ]; then echo "$out"; return 0; fi
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/.build-XXXXXX")
  # shellcheck disable=SC2064 # expand $tmp now: it is local
  trap "rm -rf --one-file-system '$tmp'" EXIT
  "$build" "$tmp/out" "$tmp" >&2 # stdout is the path alone
  # A parallel run may have renamed its copy into place first: keep that one.
  mv -T "$tmp/out" "$out" 2>/dev/null || [ -e "$out/$marker" ] || return 1
  echo "$out"
}
