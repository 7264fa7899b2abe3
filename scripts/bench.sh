#!/usr/bin/env bash
# `npm run bench [-- options]`: nf-healthd against HAProxy's checker (see bench/main.ts
# for the options). Installs the Debian packages it needs when missing (as root), the
# npm dependencies, builds, then runs the harness on the banner server's core.
set -euo pipefail
cd "$(dirname "$0")/.."
wanted=(haproxy gcc libc6-dev iproute2 util-linux)
bash scripts/debian-packages.sh bench.sh "${wanted[@]}"
bash scripts/ensure-deps.sh >&2
# The daemon plus its samples hook (test/instrument/): what the harness runs.
node test/instrument/build.mjs
npx tsc -p bench/tsconfig.json
# 10,000 backends are 10,000 listening sockets plus the connections in flight.
ulimit -n "$(ulimit -Hn)"
if [ "$(nproc)" -lt 2 ]; then
  echo "bench.sh: one core only: nothing pinned, the numbers mix checker and backends" >&2
  exec node bench/dist/main.js --checker-cpu -1 --backend-cpu -1 "$@"
fi
# The harness sleeps through the windows; it shares core 0 with the banner server.
exec taskset -c 0 node bench/dist/main.js "$@"
