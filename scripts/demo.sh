#!/usr/bin/env bash
# `npm run demo`: installs and builds when needed, then runs the embedded demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh >&2
exec node dist/demo/main.js
