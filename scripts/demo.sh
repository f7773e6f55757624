#!/usr/bin/env bash
# The main job: set up (first time only), then train CoopNets on the embedded digits and
# write sample grids.  Extra arguments go to `coop train` (e.g. --set run.iterations=100).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup-env.sh"
cd "$repo"
coop train coopnets-digits "$@"
