#!/usr/bin/env bash
# `npm run demo`: installs and builds when needed, then runs the demo (demo/, not part
# of the production build: it drives the built daemon, bin/nf-healthd.js, as a user would).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh >&2
npx tsc -p demo/tsconfig.json
exec node demo/dist/main.js
