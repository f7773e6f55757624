#!/usr/bin/env bash
# The prepared GPU check: on a CUDA machine with this repository, in about eight minutes,
#   1. install the package (no network needed: torch and the dependencies must be there),
#   2. run the CUDA tests (every test whose id names cuda),
#   3. `coop bench` on every built-in objective (framework vs a plain PyTorch loop),
#   4. TPAMI Table 2 at `short` scale (`coop repro coopnets:table2 --scale short`),
# writing everything it measured into one folder: provenance.json, nvidia-smi.txt, one log per
# step, bench.json + bench.md, table2/ (the repro report) and summary.json (each step's exit
# status and seconds).  Each step gets a time limit, so one slow step cannot eat the others'.
#
# Usage: scripts/gpu_check.sh [--quick] [--no-install] [OUT]
#   OUT           the folder to write (default: $OUT, else gpu-check-<UTC time>)
#   --quick       tiny settings (seconds on a CPU): the test suite of the script itself
#   --no-install  use the package as already installed
# Environment: PYTHON (default python3), COOP_DATA (datasets root; MNIST for Table 2),
#   BUDGET_S (total seconds, default 470).
# Without CUDA the script says so, skips the CUDA tests and runs the rest on the CPU.
set -u -o pipefail

QUICK=0
INSTALL=1
DEST=""
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --no-install) INSTALL=0 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "gpu_check: unknown option $arg" >&2; exit 2 ;;
    *) DEST="$arg" ;;
  esac
done
PY="${PYTHON:-python3}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${DEST:-${OUT:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
BUDGET="${BUDGET_S:-470}"
START=$(date +%s)
STEPS="$DEST/steps.tsv"
: > "$STEPS"

# run_step NAME CAP_SECONDS COMMAND...: run with a limit of min(CAP, what is left of the budget),
# log to NAME.log, record "name rc seconds skipped" in steps.tsv.
run_step() {
  local name="$1" cap="$2"; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) ))
  local limit=$(( cap < left ? cap : left ))
  if (( limit < 5 )); then
    echo "gpu_check: $name: no time left in the ${BUDGET}s budget, skipped"
    printf '%s\t%s\t%s\t%s\n' "$name" 124 0 "out of time" >> "$STEPS"
    return
  fi
  echo "gpu_check: $name (limit ${limit}s): $*"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$DEST/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "" >> "$STEPS"
  echo "gpu_check: $name: exit $rc after $(( $(date +%s) - t0 ))s (log: $DEST/$name.log)"
  tail -n 5 "$DEST/$name.log" | sed 's/^/    /'
}

cd "$REPO"
# Every python -m command below runs from another folder (env -C): `python -m` puts the working
# directory first on sys.path, and in the checkout that is the source tree's coopcore/, which is
# not the installed package (its recipes and tables are mapped in only by the install).
# The datasets: $COOP_DATA, else the shared folder next to the checkout (as the tests look for it).
if [[ -z "${COOP_DATA:-}" && -d "$REPO/../shared/data" ]]; then
  export COOP_DATA="$(cd "$REPO/../shared/data" && pwd)"
fi
if [[ -n "${COOP_DATA:-}" ]]; then echo "gpu_check: datasets: $COOP_DATA"; else echo "gpu_check: COOP_DATA is unset: each recipe's data.root applies"; fi
if (( INSTALL )); then
  # --no-deps / --no-build-isolation: the machine may have no network; torch is already there.
  run_step install 120 "$PY" -m pip install --no-deps --no-build-isolation -e "$REPO"
fi

CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [[ "$CUDA" == "1" ]]; then
  DEVICE=cuda
  nvidia-smi > "$DEST/nvidia-smi.txt" 2>&1 || true
else
  DEVICE=cpu
  echo "gpu_check: WARNING: no CUDA on this machine: the CUDA tests are skipped and the benchmark and"
  echo "gpu_check: WARNING: Table 2 run on the CPU (their numbers say nothing about a GPU)."
fi

"$PY" - "$DEST/provenance.json" "$REPO" "$DEVICE" "$QUICK" <<'EOF'
import json, os, platform, subprocess, sys, datetime
import torch
out, repo, device, quick = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
def git(*a):
    try:
        return subprocess.run(["git", "-C", repo, *a], capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return None
cuda = torch.cuda.is_available()
json.dump({
    "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "device": device, "quick": quick,
    "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
    "cuda_devices": torch.cuda.device_count() if cuda else 0,
    "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
    "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
    "coop_data": os.environ.get("COOP_DATA"),
    "commit": git("rev-parse", "HEAD"), "modified": bool(git("status", "--porcelain", "--untracked-files=no")),
}, open(out, "w"), indent=2)
EOF

if [[ "$CUDA" == "1" ]]; then
  run_step tests 100 env -C "$REPO/tests" COOP_PORTABLE_NUMERICS=0 "$PY" -m pytest -q -p no:cacheprovider -k cuda .
else
  echo "gpu_check: tests: no CUDA, the CUDA tests are skipped"
  printf '%s\t%s\t%s\t%s\n' tests 0 0 "skipped: no CUDA" >> "$STEPS"
fi

if (( QUICK )); then
  run_step bench 120 env -C "$DEST" "$PY" -m coopcore.cli bench --recipe coopnets-digits --device "$DEVICE" --threads 1 \
    --set data.batch_size=8 --set objective.options.n_chains=8 --set samplers.revision.options.n_steps=2 \
    --repeats 2 --warmup 1 --json "$DEST/bench.json" --markdown "$DEST/bench.md"
  run_step table2 240 env -C "$DEST" "$PY" -m coopcore.cli repro coopnets:table2 --scale smoke --device "$DEVICE" \
    --out "$DEST/table2" --no-progress --set run.iterations=2 --set run.eval_every=2 --set run.log_every=1
else
  run_step bench 150 env -C "$DEST" "$PY" -m coopcore.cli bench --objective all --device "$DEVICE" --repeats 20 \
    --json "$DEST/bench.json" --markdown "$DEST/bench.md"
  run_step table2 420 env -C "$DEST" "$PY" -m coopcore.cli repro coopnets:table2 --scale short --device "$DEVICE" \
    --out "$DEST/table2" --no-progress
fi

"$PY" - "$DEST" "$CUDA" "$BUDGET" "$(( $(date +%s) - START ))" <<'EOF'
import json, sys
dest, cuda, budget, total = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
steps = []
for line in open(f"{dest}/steps.tsv"):
    name, rc, secs, note = line.rstrip("\n").split("\t")
    steps.append({"name": name, "rc": int(rc), "seconds": int(secs), "note": note})
json.dump({"cuda": cuda, "budget_s": budget, "total_s": total, "steps": steps}, open(f"{dest}/summary.json", "w"),
          indent=2)
EOF
echo "gpu_check: done in $(( $(date +%s) - START ))s; everything is in $DEST"
# Exit non-zero when a step failed or ran out of time (the folder holds what it measured anyway).
awk -F'\t' '$2 != 0 { bad = 1 } END { exit bad }' "$STEPS"
