#!/usr/bin/env bash
# One benchmark run as one task of a Slurm array job; coinrun.sh --slurm copies this file to OUT/slurm/ and submits it.
# Task i runs line i+1 of OUT/slurm/commands.txt (run name in names.txt), logged to OUT/logs/NAME.log.
set -euo pipefail
slurm_dir=${1:?usage: $0 OUT/slurm}  # Slurm runs a copy of this script, so the folder is an argument
source "$slurm_dir/config.sh"  # REPO, OUT, THREADS
cd "$REPO"
i=$((SLURM_ARRAY_TASK_ID + 1))
name=$(sed -n "${i}p" "$slurm_dir/names.txt")
cmd=$(sed -n "${i}p" "$slurm_dir/commands.txt")
echo "run $name on $(hostname): $cmd"
OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=PASSIVE $cmd >> "$OUT/logs/$name.log" 2>&1
