#!/usr/bin/env bash
# Installs the npm dependencies (when node_modules is missing or older than the
# lock file) and builds dist/. Shared by `npm test`, `npm run demo` and `npm run bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npx tsc -p tsconfig.json
