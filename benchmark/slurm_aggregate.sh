#!/usr/bin/env bash
# After the array job (afterany): name every run that is missing or unfinished and fail, then aggregate what is there.
# coinrun.sh --slurm copies this file to OUT/slurm/ and submits it with --dependency=afterany:ARRAY_JOB.
set -uo pipefail
slurm_dir=${1:?usage: $0 OUT/slurm}  # Slurm runs a copy of this script, so the folder is an argument
source "$slurm_dir/config.sh"  # REPO, OUT, TOTAL, HORIZON, PY, EXPECTED (variant__seed ...)
cd "$REPO"
missing=()
for name in $EXPECTED; do
  last=$(ls "$OUT/runs/coinrun__${name%__*}__${name##*__}__"*/checkpoints/step_*.pt 2>/dev/null | tail -n 1)
  step=$(basename "${last:-step_0}" .pt)
  step=$((10#${step#step_}))
  [ "$step" -ge "$TOTAL" ] || missing+=("$name (at step $step of $TOTAL; log: $OUT/logs/$name.log)")
done
"$PY" benchmark/aggregate.py "$OUT" --max-step "$HORIZON" || missing+=("aggregation")  # $TOTAL rounded up to whole batches
if [ ${#missing[@]} -gt 0 ]; then
  echo "coinrun.sh: error: ${#missing[@]} missing or failed:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi
