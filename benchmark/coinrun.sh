#!/usr/bin/env bash
# The brief's benchmark: variants x seeds on CoinRun (200 training levels, unbounded test levels), then the gap table.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: bash benchmark/coinrun.sh [options] [-- args passed to every run]

  --seeds S [S ...]       seeds (default: 1 2 3)
  --variants V [V ...]    scripts without .py (default: ppo_procgen ppo_procgen_aug ppo_procgen_nobn)
  --total-timesteps N     steps per run (default: 25000000, the brief's)
  --workers N             runs in parallel (default: 1)
  --threads N             torch/OpenMP threads per run (default: cores / workers)
  --device D              auto|cpu|cuda|mps (default: auto)
  --out DIR               output folder: runs in DIR/runs, logs in DIR/logs, table in DIR (default: benchmark/out)
  --dry-run               print the commands, run nothing

Re-running skips finished runs and resumes interrupted ones from their latest checkpoint. A failed run makes the
harness exit non-zero, naming the run and its log; the table is still aggregated from what finished.
EOF
}

seeds=(1 2 3)
variants=(ppo_procgen ppo_procgen_aug ppo_procgen_nobn)
total=25000000 workers=1 threads="" device=auto out=benchmark/out dry=0 extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) shift; seeds=(); while [ $# -gt 0 ] && [[ "$1" != --* ]]; do seeds+=("$1"); shift; done; continue ;;
    --variants) shift; variants=(); while [ $# -gt 0 ] && [[ "$1" != --* ]]; do variants+=("${1%.py}"); shift; done; continue ;;
    --total-timesteps) total="$2"; shift ;;
    --workers) workers="$2"; shift ;;
    --threads) threads="$2"; shift ;;
    --device) device="$2"; shift ;;
    --out) out="$2"; shift ;;
    --dry-run) dry=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "coinrun.sh: error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for n in "$total" "$workers" ${threads:+"$threads"}; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "coinrun.sh: error: expected a positive integer, got '$n'" >&2; exit 2; }
done
[ ${#seeds[@]} -gt 0 ] && [ ${#variants[@]} -gt 0 ] || { echo "coinrun.sh: error: need at least one seed and variant" >&2; exit 2; }
for v in "${variants[@]}"; do
  [ -f "$v.py" ] || { echo "coinrun.sh: error: no variant script $v.py" >&2; exit 2; }
done
threads=${threads:-$(( $(nproc) / workers > 0 ? $(nproc) / workers : 1 ))}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

# The command for one run: fresh, resumed from its latest checkpoint, or nothing if it already finished.
command_for() {
  local v=$1 s=$2 dir last step
  dir=$(ls -d "$out/runs/coinrun__${v}__${s}__"* 2>/dev/null | tail -n 1 || true)
  if [ -n "$dir" ] && last=$(ls "$dir/checkpoints/"step_*.pt 2>/dev/null | tail -n 1) && [ -n "$last" ]; then
    step=$(basename "$last" .pt); step=$((10#${step#step_}))
    [ "$step" -ge "$total" ] && return 0
    echo "$PY $v.py --resume $dir --total-timesteps $total --device $device --threads $threads"
  else
    echo "$PY $v.py --seed $s --total-timesteps $total --device $device --threads $threads --runs-dir $out/runs ${extra[*]:-}"
  fi
}

mkdir -p "$out/logs"
names=() cmds=()
for v in "${variants[@]}"; do
  for s in "${seeds[@]}"; do
    cmd=$(command_for "$v" "$s")
    if [ -z "$cmd" ]; then echo "done already: $v seed $s"; continue; fi
    names+=("${v}__$s") cmds+=("$cmd")
  done
done
if [ "$dry" = 1 ]; then
  for i in "${!cmds[@]}"; do echo "OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE ${cmds[$i]} > $out/logs/${names[$i]}.log 2>&1"; done
  exit 0
fi

declare -A pid_name=()
failed=()
reap() {  # wait for one run to end; record it if it failed
  local pid rc=0
  wait -n -p pid || rc=$?
  [ "$rc" -eq 0 ] || failed+=("${pid_name[$pid]} (exit $rc, log: $out/logs/${pid_name[$pid]}.log)")
  unset "pid_name[$pid]"
}
for i in "${!cmds[@]}"; do
  while [ "${#pid_name[@]}" -ge "$workers" ]; do reap; done
  echo "start: ${names[$i]}: ${cmds[$i]}"
  # PASSIVE: idle OpenMP threads sleep instead of spinning, so parallel runs do not stall each other.
  OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE ${cmds[$i]} > "$out/logs/${names[$i]}.log" 2>&1 &
  pid_name[$!]=${names[$i]}
done
while [ "${#pid_name[@]}" -gt 0 ]; do reap; done

"$PY" benchmark/aggregate.py "$out" || failed+=("aggregation")
if [ ${#failed[@]} -gt 0 ]; then
  printf 'coinrun.sh: error: %d failed:\n' "${#failed[@]}" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
