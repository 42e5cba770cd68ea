#!/usr/bin/env bash
# One-factor-at-a-time ablations from the default configuration (issue 7), each run through coinrun.sh under its own
# name, then one table and one plot at a common horizon.
set -euo pipefail
cd "$(dirname "$0")/.."

# tag | script | flags that differ from ppo_procgen.py's defaults, in three groups of one-factor changes:
# 1. from "brief": the brief's network (IMPALA-small, global average pooling), 64 envs x 512 steps, 512-sample
#    minibatches, rewards scaled by the return's std as the first default had them; it learned slower than the
#    published PPO;
# 2. from "impala_gap": the brief's network with what group 1 found (256 steps, minibatch 2048) and the brief's raw
#    rewards, the second default; it fell behind the published PPO after ~700k steps;
# 3. from "default": what group 2 found (the published IMPALA-CNN, flattened), the default now.
BRIEF="--arch impala --pool gap --num-steps 512 --minibatch-size 512 --norm-reward"
IMPALA_GAP="--arch impala --pool gap"
CONFIGS=(
  "brief|ppo_procgen|$BRIEF"
  "pool_flatten|ppo_procgen|--arch impala --pool flatten --num-steps 512 --minibatch-size 512 --norm-reward"
  "nobn|ppo_procgen_nobn|$BRIEF"
  "no_clip_vloss|ppo_procgen|$BRIEF --no-clip-vloss"
  "steps256|ppo_procgen|$IMPALA_GAP --num-steps 256 --minibatch-size 512 --norm-reward"
  "mb2048|ppo_procgen|$IMPALA_GAP --num-steps 512 --minibatch-size 2048 --norm-reward"
  "impala_gap|ppo_procgen|$IMPALA_GAP"
  "norm_reward|ppo_procgen|$IMPALA_GAP --norm-reward"
  "espeholt|ppo_procgen|--arch espeholt --pool gap"
  "flatten|ppo_procgen|--arch impala --pool flatten"
  "impala_gap_nobn|ppo_procgen_nobn|$IMPALA_GAP"
  "default|ppo_procgen|"
  "amp_none|ppo_procgen|--amp none"
  "bn_act_batch|ppo_procgen|--bn-act batch"
  "bn_update_running|ppo_procgen|--bn-update running"
  "nature|ppo_procgen|--arch nature"
  "reference|ppo_procgen_nobn|--arch espeholt --pool flatten --num-steps 256 --minibatch-size 2048"
  "reference_norm_reward|ppo_procgen_nobn|--arch espeholt --pool flatten --num-steps 256 --minibatch-size 2048 --norm-reward"
)

usage() {
  cat <<EOF
usage: bash benchmark/ablation.sh [--only TAG [TAG ...]] [--seeds S [S ...]] [--total-timesteps N] [--out DIR]
                                  [--threads N] [--dry-run] [-- args passed to every run]

Runs each configuration below for the given seeds (default: 1) to --total-timesteps (default: 524288), evaluating
every 131072 steps, one run at a time, into DIR/runs (default: benchmark/out/ablation); re-running resumes. Then
DIR/gap_table.md and DIR/curves.png compare them all at that horizon. Those listed before "impala_gap" change one
thing from "brief" (the brief's network, 512-step rollouts and 512-sample minibatches, with rewards scaled as the
first default had them); those before "default" one thing from "impala_gap" (the brief's network at the default's
rollouts and raw rewards); the rest one thing from "default" (README, "Design choices"). "reference" is the
published PPO configuration (openai/train-procgen): on CoinRun its +-10 clip of the scaled reward gives back the
raw +10 while the return's std is below 1 (see README), so it runs with raw rewards; "reference_norm_reward" with our
scaling. Configurations:
$(for c in "${CONFIGS[@]}"; do IFS='|' read -r t s f <<<"$c"; printf '  %-22s %s %s\n' "$t:" "$s.py" "$f"; done)
EOF
}

only=() seeds=(1) total=524288 out=benchmark/out/ablation threads="" dry=() extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --only) shift; while [ $# -gt 0 ] && [[ "$1" != --* ]]; do only+=("$1"); shift; done; continue ;;
    --seeds) shift; seeds=(); while [ $# -gt 0 ] && [[ "$1" != --* ]]; do seeds+=("$1"); shift; done; continue ;;
    --total-timesteps) total="$2"; shift ;;
    --out) out="$2"; shift ;;
    --threads) threads="$2"; shift ;;
    --dry-run) dry=(--dry-run) ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "ablation.sh: error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
known=" $(for c in "${CONFIGS[@]}"; do printf '%s ' "${c%%|*}"; done)"
for t in "${only[@]}"; do
  [[ "$known" == *" $t "* ]] || { echo "ablation.sh: error: unknown configuration '$t'; known:$known" >&2; exit 2; }
done

PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
failed=() horizon=$total
for c in "${CONFIGS[@]}"; do
  IFS='|' read -r tag script flags <<<"$c"
  [ ${#only[@]} -eq 0 ] || [[ " ${only[*]} " == *" $tag "* ]] || continue
  read -ra flags <<<"$flags"
  if [ ${#dry[@]} -eq 0 ]; then  # the table's horizon: where the longest configuration's runs end (whole batches)
    end=$("$PY" benchmark/end_step.py "$script" "$total" "${flags[@]}" "${extra[@]}") || { failed+=("$tag"); continue; }
    [ "$end" -gt "$horizon" ] && horizon=$end
  fi
  bash benchmark/coinrun.sh --variants "$script" --name "$tag" --seeds "${seeds[@]}" --total-timesteps "$total" \
    --out "$out" ${threads:+--threads "$threads"} "${dry[@]}" -- \
    --eval-frequency 131072 --checkpoint-frequency 131072 "${flags[@]}" "${extra[@]}" || failed+=("$tag")
done
[ ${#dry[@]} -gt 0 ] || "$PY" benchmark/aggregate.py "$out" --max-step "$horizon" || failed+=("aggregation")
if [ ${#failed[@]} -gt 0 ]; then
  echo "ablation.sh: error: failed: ${failed[*]} (logs in $out/logs)" >&2
  exit 1
fi
