#!/usr/bin/env bash
# One-factor-at-a-time ablations from the default configuration (issue 7), each run through coinrun.sh under its own
# name, then one table and one plot at a common horizon.
set -euo pipefail
cd "$(dirname "$0")/.."

# tag | script | flags that differ from ppo_procgen.py's defaults. The first group are one-factor changes from
# "brief": the brief's 64 envs x 512 steps and 512-sample minibatches, with rewards scaled by the return's std as the
# first default had them; it learned slower than the published PPO. "default" (256 steps, minibatch 2048, the brief's
# raw rewards) is what they found; the second group are one-factor changes from it ("norm_reward": the previous default).
BRIEF="--num-steps 512 --minibatch-size 512 --norm-reward"
CONFIGS=(
  "brief|ppo_procgen|$BRIEF"
  "pool_flatten|ppo_procgen|$BRIEF --pool flatten"
  "nobn|ppo_procgen_nobn|$BRIEF"
  "no_clip_vloss|ppo_procgen|$BRIEF --no-clip-vloss"
  "steps256|ppo_procgen|--num-steps 256 --minibatch-size 512 --norm-reward"
  "mb2048|ppo_procgen|--num-steps 512 --minibatch-size 2048 --norm-reward"
  "default|ppo_procgen|"
  "norm_reward|ppo_procgen|--norm-reward"
  "espeholt|ppo_procgen|--arch espeholt"
  "flatten|ppo_procgen|--pool flatten"
  "espeholt_flatten|ppo_procgen|--arch espeholt --pool flatten"
  "default_nobn|ppo_procgen_nobn|"
  "amp_none|ppo_procgen|--amp none"
  "bn_act_batch|ppo_procgen|--bn-act batch"
  "bn_update_running|ppo_procgen|--bn-update running"
  "reference|ppo_procgen_nobn|--arch espeholt --pool flatten --num-steps 256 --minibatch-size 2048"
  "reference_norm_reward|ppo_procgen_nobn|--arch espeholt --pool flatten --num-steps 256 --minibatch-size 2048 --norm-reward"
)

usage() {
  cat <<EOF
usage: bash benchmark/ablation.sh [--only TAG [TAG ...]] [--seeds S [S ...]] [--total-timesteps N] [--out DIR]
                                  [--threads N] [--dry-run] [-- args passed to every run]

Runs each configuration below for the given seeds (default: 1) to --total-timesteps (default: 524288), evaluating
every 131072 steps, one run at a time, into DIR/runs (default: benchmark/out/ablation); re-running resumes. Then
DIR/gap_table.md and DIR/curves.png compare them all at that horizon. Those listed before "default" change one
thing from "brief" (the brief's 512-step rollouts and 512-sample minibatches, with rewards scaled as the first
default had them), the rest one thing from "default". "reference" is the published PPO configuration
(openai/train-procgen): on CoinRun its +-10 clip of the scaled reward gives back the raw +10 while the return's std is
below 1 (see README), so it runs with raw rewards; "reference_norm_reward" with our scaling. Configurations:
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

failed=()
for c in "${CONFIGS[@]}"; do
  IFS='|' read -r tag script flags <<<"$c"
  [ ${#only[@]} -eq 0 ] || [[ " ${only[*]} " == *" $tag "* ]] || continue
  read -ra flags <<<"$flags"
  bash benchmark/coinrun.sh --variants "$script" --name "$tag" --seeds "${seeds[@]}" --total-timesteps "$total" \
    --out "$out" ${threads:+--threads "$threads"} "${dry[@]}" -- \
    --eval-frequency 131072 --checkpoint-frequency 131072 "${flags[@]}" "${extra[@]}" || failed+=("$tag")
done
[ ${#dry[@]} -gt 0 ] || "${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}" \
  benchmark/aggregate.py "$out" --max-step "$total" || failed+=("aggregation")
if [ ${#failed[@]} -gt 0 ]; then
  echo "ablation.sh: error: failed: ${failed[*]} (logs in $out/logs)" >&2
  exit 1
fi
