#!/usr/bin/env bash
# STUB until the real man page build lands on main: writes the two pages the contract
# names (dist/man/nf-healthd.8, dist/man/nf-healthd.yaml.5) so the package can be built.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist/man
version=$(node -p 'require("./package.json").version')
cat >dist/man/nf-healthd.8 <<ROFF
.TH NF-HEALTHD 8 "" "nf-healthd $version" "System Administration"
.SH NAME
nf-healthd \- health checks that steer netfilter load balancing
.SH SYNOPSIS
.B nf-healthd
.RB { run | check | probe | status | rules }
.RB [ \-c
.IR FILE ]
.SH SEE ALSO
.BR nf-healthd.yaml (5)
ROFF
cat >dist/man/nf-healthd.yaml.5 <<ROFF
.TH NF-HEALTHD.YAML 5 "" "nf-healthd $version" "File Formats"
.SH NAME
nf-healthd.yaml \- nf-healthd configuration file
.SH SEE ALSO
.BR nf-healthd (8)
ROFF
