#!/usr/bin/env bash
# The brief's benchmark: variants x seeds on CoinRun (200 training levels, unbounded test levels), then the gap table.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: bash benchmark/coinrun.sh [options] [-- args passed to every run]

  --seeds S [S ...]       seeds (default: 1 2 3)
  --variants V [V ...]    scripts without .py (default: ppo_procgen ppo_procgen_aug ppo_procgen_nobn)
  --name N                with one variant: name its runs N instead (their --exp-name and table row), so
                          configurations of one script (flags after --) sit side by side in one --out (ablation.sh)
  --total-timesteps N     steps per run (default: 25000000, the brief's)
  --workers N             runs in parallel (default: 1)
  --threads N             torch/OpenMP threads per run (default: cores / workers)
  --device D              auto|cpu|cuda|mps (default: auto)
  --out DIR               output folder: runs in DIR/runs, logs in DIR/logs, table in DIR (default: benchmark/out)
  --dry-run               print the commands, run nothing (with --slurm: write the job scripts, submit nothing)
  --slurm                 submit the runs as one Slurm array job, then an aggregation job (afterany) that fails
                          loudly, naming each run that is missing or unfinished
  --partition P  --time T  --gpus N  --cpus N  --mem M     Slurm resources per run (--cpus defaults to --threads)

Re-running skips finished runs and resumes interrupted ones from their latest checkpoint (args after -- go to
resumed runs too: a resumed run takes a changed speed option such as --amp, and refuses any other changed setting).
A failed run makes the
harness exit non-zero, naming the run and its log; the table is still aggregated from what finished.
EOF
}

seeds=(1 2 3)
variants=(ppo_procgen ppo_procgen_aug ppo_procgen_nobn)
total=25000000 workers=1 threads="" device=auto out=benchmark/out dry=0 extra=() name=""
slurm=0 partition="" walltime="" gpus="" cpus="" mem=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) shift; seeds=(); while [ $# -gt 0 ] && [[ "$1" != --* ]]; do seeds+=("$1"); shift; done; continue ;;
    --variants) shift; variants=(); while [ $# -gt 0 ] && [[ "$1" != --* ]]; do variants+=("${1%.py}"); shift; done; continue ;;
    --total-timesteps) total="$2"; shift ;;
    --name) name="$2"; shift ;;
    --workers) workers="$2"; shift ;;
    --threads) threads="$2"; shift ;;
    --device) device="$2"; shift ;;
    --out) out="$2"; shift ;;
    --dry-run) dry=1 ;;
    --slurm) slurm=1 ;;
    --partition) partition="$2"; shift ;;
    --time) walltime="$2"; shift ;;
    --gpus) gpus="$2"; shift ;;
    --cpus) cpus="$2"; shift ;;
    --mem) mem="$2"; shift ;;
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
[[ "$name" =~ ^[A-Za-z0-9_.-]*$ ]] || { echo "coinrun.sh: error: --name takes letters, digits, _ . - only" >&2; exit 2; }
[ -z "$name" ] || [ ${#variants[@]} -eq 1 ] || { echo "coinrun.sh: error: --name needs exactly one variant" >&2; exit 2; }
for v in "${variants[@]}"; do
  [ -f "$v.py" ] || { echo "coinrun.sh: error: no variant script $v.py" >&2; exit 2; }
done
threads=${threads:-$(( $(nproc) / workers > 0 ? $(nproc) / workers : 1 ))}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

# The command for one run: fresh, resumed from its latest checkpoint, or nothing if it already finished.
command_for() {
  local v=$1 s=$2 n=${name:-$1} dir last step
  dir=$(ls -d "$out/runs/coinrun__${n}__${s}__"* 2>/dev/null | tail -n 1 || true)
  if [ -n "$dir" ] && last=$(ls "$dir/checkpoints/"step_*.pt 2>/dev/null | tail -n 1) && [ -n "$last" ]; then
    step=$(basename "$last" .pt); step=$((10#${step#step_}))
    [ "$step" -ge "$total" ] && return 0
    echo "$PY $v.py --resume $dir --total-timesteps $total --device $device --threads $threads ${extra[*]:-}"
  else
    echo "$PY $v.py --seed $s --exp-name $n --total-timesteps $total --device $device --threads $threads" \
      "--runs-dir $out/runs ${extra[*]:-}"
  fi
}

# The table's horizon: where a run of $total steps ends (rounded up to whole batches), so its last evaluation counts.
horizon=$total
if [ "$dry" = 0 ] || [ "$slurm" = 1 ]; then
  for v in "${variants[@]}"; do
    end=$("$PY" benchmark/end_step.py "$v" "$total" ${extra[@]+"${extra[@]}"}) ||
      { echo "coinrun.sh: error: $v.py refuses the arguments after -- (above)" >&2; exit 2; }
    [ "$end" -gt "$horizon" ] && horizon=$end
  done
fi

mkdir -p "$out/logs"
names=() cmds=()
for v in "${variants[@]}"; do
  for s in "${seeds[@]}"; do
    cmd=$(command_for "$v" "$s")
    if [ -z "$cmd" ]; then echo "done already: ${name:-$v} seed $s"; continue; fi
    names+=("${name:-$v}__$s") cmds+=("$cmd")
  done
done
if [ "$slurm" = 1 ]; then
  command -v sbatch >/dev/null || [ "$dry" = 1 ] || { echo "coinrun.sh: error: --slurm needs sbatch on PATH" >&2; exit 2; }
  sdir="$out/slurm"
  mkdir -p "$sdir"
  cp benchmark/slurm_array.sh "$sdir/array.sh"
  cp benchmark/slurm_aggregate.sh "$sdir/aggregate.sh"
  printf '%s\n' "${names[@]}" > "$sdir/names.txt"
  printf '%s\n' "${cmds[@]}" > "$sdir/commands.txt"
  expected=$(for v in "${variants[@]}"; do for s in "${seeds[@]}"; do printf '%s ' "${name:-$v}__$s"; done; done)
  printf 'REPO=%q\nOUT=%q\nTHREADS=%q\nTOTAL=%q\nHORIZON=%q\nPY=%q\nEXPECTED=%q\n' "$(pwd)" "$(cd "$out" && pwd)" \
    "$threads" "$total" "$horizon" \
    "$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" "$expected" > "$sdir/config.sh"
  opts=(--job-name=coinrun --cpus-per-task="${cpus:-$threads}" --output="$sdir/%A_%a.out")
  [ -n "$partition" ] && opts+=(--partition="$partition")
  [ -n "$walltime" ] && opts+=(--time="$walltime")
  [ -n "$gpus" ] && opts+=(--gres="gpu:$gpus")
  [ -n "$mem" ] && opts+=(--mem="$mem")
  array=(sbatch --parsable --array="0-$((${#cmds[@]} - 1))" "${opts[@]}" "$sdir/array.sh" "$(cd "$sdir" && pwd)")
  agg=(sbatch --parsable --job-name=coinrun-aggregate --output="$sdir/aggregate.out" "$sdir/aggregate.sh" "$(cd "$sdir" && pwd)")
  if [ "$dry" = 1 ]; then
    [ ${#cmds[@]} -gt 0 ] && echo "${array[*]}"
    echo "${agg[0]} --dependency=afterany:ARRAY_JOB_ID ${agg[*]:1}"
    exit 0
  fi
  dep=()
  if [ ${#cmds[@]} -gt 0 ]; then
    array_id=$("${array[@]}")
    dep=(--dependency="afterany:$array_id")
    echo "submitted array job $array_id (${#cmds[@]} runs; logs in $out/logs)"
  fi
  agg_id=$("${agg[0]}" "${dep[@]}" "${agg[@]:1}")
  echo "submitted aggregation job $agg_id: $sdir/aggregate.out, then $out/gap_table.md"
  exit 0
fi

if [ "$dry" = 1 ]; then
  for i in "${!cmds[@]}"; do echo "OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE ${cmds[$i]} >> $out/logs/${names[$i]}.log 2>&1"; done
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
  OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE ${cmds[$i]} >> "$out/logs/${names[$i]}.log" 2>&1 &
  pid_name[$!]=${names[$i]}
done
while [ "${#pid_name[@]}" -gt 0 ]; do reap; done

"$PY" benchmark/aggregate.py "$out" --max-step "$horizon" || failed+=("aggregation")  # one horizon for all runs
if [ ${#failed[@]} -gt 0 ]; then
  printf 'coinrun.sh: error: %d failed:\n' "${#failed[@]}" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
