#!/usr/bin/env bash
# Creates (once) a virtual environment and installs coopnets into it, non-editable.
# Sourced by scripts/demo.sh and scripts/test.sh; usable alone: `bash scripts/setup-env.sh [test]`.
#   COOP_VENV        where the environment lives (default: .venv in the repository)
#   COOP_TORCH_SPEC  the torch requirement installed first when torch is missing
#                    (default torch==2.13.0; e.g. "torch" for the newest build for your GPU)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${COOP_VENV:-$repo/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtual environment in $venv" >&2
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "installing ${COOP_TORCH_SPEC:-torch==2.13.0}" >&2
  "${pip[@]}" install "${COOP_TORCH_SPEC:-torch==2.13.0}"
fi
extra=""
if [ "${1:-}" = "test" ]; then extra="[test]"; fi
echo "installing coopnets$extra from $repo" >&2
"${pip[@]}" install --upgrade --force-reinstall --no-deps "$repo"
"${pip[@]}" install "$repo$extra"
export PATH="$venv/bin:$PATH"
