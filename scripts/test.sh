#!/usr/bin/env bash
# The whole test suite from a fresh Debian machine: installs the Debian packages the
# tests need (as root, when missing), the npm dependencies, builds (dist/ and the
# instrumented entry), runs vitest.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^\s*$/d' scripts/test-packages.txt | awk '{print $1}')
bash scripts/debian-packages.sh test.sh "${wanted[@]}"
bash scripts/ensure-deps.sh
# The daemon plus its test hooks (test/instrument/), next to dist/ and never in it.
node test/instrument/build.mjs
npx biome check .
npx tsc -p test/tsconfig.json --noEmit
exec npx vitest run "$@"
