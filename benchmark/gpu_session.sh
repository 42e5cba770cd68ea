#!/bin/bash
# A short GPU session in one command (~9 min), for a lent machine reached by a single shell command:
#   0. the cuda-only tests (tests/test_speed_options.py -k cuda): if they fail, the learning run goes --no-cuda-graph
#   1. host.md: procgen's stepping on 1, 4 and 16 threads, alone and with each step's frames copied by torch (which
#      spins torch's CPU threads) or numpy (benchmark/env_speed.py), a cProfile of 4 iterations and
#      their device time by operator (benchmark/kernel_profile.py; with RESUME, 2 iterations of that run)
#   2. host.md, continued: the update alone (benchmark/update_speed.py) for UPDATE_SETS (default: the defaults, cuDNN's
#      benchmarked algorithms, the compiled update), ms per minibatch and each set's operators by device time; then
#      the first set with --sync (the host waiting for the GPU twice a minibatch, as the scripts did before session 26)
#   3. benchmark/speed.py on cuda, 8 iterations a row (with 3 timed ones, two default rows on one H200 differed by
#      14%): SETS (the defaults, then with procgen on 16 threads and the compiled update: the split shows each one's
#      effect), then VARIANTS at the defaults (each in its own call with its own timeout, so a
#      set that hangs or compiles too long loses only its row; fp32, the graph and the variants were measured on the
#      H200: SETS="fp32 default_no_graph default" VARIANTS="ppo_procgen_aug.py ppo_procgen_nobn.py" repeats them)
#   4. SCRIPT's default configuration learning on cuda (evaluations and checkpoints every 131072 steps) until END_S seconds
#      after this script started, then stopped with SIGINT
# Results go to $OUT (machine.txt, tests.txt, host.md, speed.md, run/: 8 files, the device tool's limit). Run
# from the repo root. On a machine without internet, put cp312 wheels of procgen-mirror, gym3, gym, gym-notices, cffi,
# pycparser, tyro, docstring-parser, shtab and typeguard in $WHEELS (default .whl), and the shared libraries procgen's
# libenv.so needs (libGL.so.1, libGLX, libGLdispatch, glib, X11, xcb: `ldd .../procgen/data/prebuilt/libenv.so`) in
# $WHEELS/lib; only those the machine lacks are used (`bash benchmark/gpu_wheels.sh` makes both, where pip reaches an
# index). With everything installed: NO_INSTALL=1. Made
# benchmark/results/gpu_h100/ (END_S=560, an H100) and gpu_h200/ (END_S=540, an H200).
# SETS and VARIANTS choose the speed rows (empty: none); SCRIPT is the learning run's (default ppo_procgen.py);
# RESUME=RUN_FOLDER continues that run (made by SCRIPT) instead of a new one.
# Local dry run: PY=.venv/bin/python NO_INSTALL=1 DEVICE=cpu TINY=1 OUT=/tmp/gpu_out bash benchmark/gpu_session.sh
set -u
export PYTHONUNBUFFERED=1
: "${OUT:?set OUT to the folder for the results}"
PY=${PY:-python3}; WHEELS=${WHEELS:-.whl}; DEVICE=${DEVICE:-cuda}; END_S=${END_S:-545}; SPEED_S=${SPEED_S:-75}; COMPILE_S=${COMPILE_S:-180}; FP32_S=${FP32_S:-100}
SETS=${SETS-default default+env16+compile}; VARIANTS=${VARIANTS-}; SCRIPT=${SCRIPT:-ppo_procgen.py}
UPDATE_SETS=${UPDATE_SETS-$([ -n "${TINY:-}" ] && echo default || echo "default default+nondeterministic default+compile")}
[ -z "${RESUME:-}" ] || ls "$RESUME"/checkpoints/*.pt > /dev/null 2>&1 ||
  { echo "gpu_session.sh: cannot copy RESUME=$RESUME: no checkpoints/*.pt in it" >&2; exit 1; }
if [ -z "${NO_INSTALL:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
# procgen's libenv.so needs libGL, X11 and glib: carried from the CPU machine, used only where the device lacks them
XLIB=$(mktemp -d); [ -d "$WHEELS"/lib ] && for f in "$WHEELS"/lib/*; do ldconfig -p | grep -q "^\s*$(basename $f) " || cp $f $XLIB/; done
echo "carried libraries used: $(ls $XLIB | tr '\n' ' ')"; export LD_LIBRARY_PATH=$XLIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if ! $PY -c "from procgen import ProcgenEnv; ProcgenEnv(num_envs=1, env_name='coinrun').reset(); print('procgen ok')" 2>/dev/null; then
  ldd $($PY -c "import procgen, os; print(os.path.dirname(procgen.__file__))")/data/prebuilt/libenv.so | grep "not found"; exit 1
fi
mkdir -p "$OUT/run"
LX=()  # the learning run's extra options
if [ -z "${TINY:-}" ]; then
  timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_speed_options.py -k cuda > "$OUT/tests.txt" 2>&1
  [ $? = 0 ] || { echo "cuda tests failed: the learning run goes --no-cuda-graph" >> "$OUT/tests.txt"; LX=(--no-cuda-graph); }
  tail -4 "$OUT/tests.txt"
fi
{ nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null; nproc
  $PY -c "import torch, numpy, procgen; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tail -1; } | tee "$OUT/machine.txt"
# where the host's time goes: procgen's stepping by thread count (a few seconds), then SCRIPT's defaults for 4
# iterations under cProfile (the functions with the most own time; waits for the GPU show as .cpu(), .item(), ...)
if [ -n "${TINY:-}" ]; then BATCH=128; ES=(--num-envs 4 --steps 20 --threads 1 2); SP=(--iterations 2 --num-envs 4 --num-steps 32)
  EX=(--minibatch-size 64 --num-eval-episodes 3 --threads 1); P=(--num-envs 4 --num-steps 32 "${EX[@]}" --total-timesteps 128)
else BATCH=16384; ES=(--threads 1 4 16 --copy none torch numpy); SP=(--iterations 8 --num-steps 256)
  EX=(--num-eval-episodes 20); P=(--total-timesteps 65536 "${EX[@]}"); fi
timeout 60 $PY benchmark/env_speed.py "${ES[@]}" 2>&1 | grep -v -i "gym\|migration" | tee "$OUT/host.md"
PROF=$(mktemp -d)
timeout ${PROFILE_S:-90} $PY -m cProfile -o $PROF/prof.out $SCRIPT --device $DEVICE "${P[@]}" --eval-frequency 100000000 \
  --checkpoint-frequency 100000000 --runs-dir $PROF > /dev/null 2>&1 &&
  { echo; echo "cProfile of $SCRIPT ${P[*]} --device $DEVICE (whole run, start-up and step-0 evaluation included):"
    $PY -c "import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats('tottime').print_stats(25)" $PROF/prof.out | grep -v "^$" | tail -28
  } >> "$OUT/host.md"
# the device time by operator (torch.profiler): which kernels the update's time is. With RESUME, over 2 iterations of
# that run (trained: no 1000-step untrained evaluation among the events, whose table alone outlasted 120 s on the
# H200); else over the same run as the cProfile, not under TINY (profiling an untrained evaluation on a CPU takes
# minutes)
if [ -n "${RESUME:-}" ]; then
  cp -r "$RESUME" $PROF/kp_run; S=$(basename "$(ls $PROF/kp_run/checkpoints/*.pt | tail -1)" .pt); S=$((10#${S#step_}))
  KP=(--resume $PROF/kp_run --total-timesteps $((S + 2 * BATCH)))
elif [ -z "${TINY:-}" ]; then KP=("${P[@]}" --runs-dir $PROF); else KP=(); fi
[ ${#KP[@]} -gt 0 ] && timeout ${KPROFILE_S:-150} $PY benchmark/kernel_profile.py --rows 30 $SCRIPT --device $DEVICE "${KP[@]}" \
  --eval-frequency 100000000 --checkpoint-frequency 100000000 2>&1 | grep -A 40 "^torch.profiler of" >> "$OUT/host.md"
# the update alone, per option set (benchmark/update_speed.py: ms per minibatch and its operators, seconds per set)
UX=(); [ -n "${TINY:-}" ] && UX=(--steps 1 -- --minibatch-size 8 --threads 1)
[ -n "$UPDATE_SETS" ] && timeout ${UPDATE_S:-240} $PY benchmark/update_speed.py --script $SCRIPT --device $DEVICE \
  --sets $UPDATE_SETS --kernels 30 "${UX[@]}" 2>&1 | grep -v -i "gym\|migration\|USDT" >> "$OUT/host.md"
# the first set again with the host waiting for the GPU twice a minibatch, as the scripts did before session 26
[ -n "$UPDATE_SETS" ] && timeout 90 $PY benchmark/update_speed.py --script $SCRIPT --device $DEVICE \
  --sets ${UPDATE_SETS%% *} --sync "${UX[@]}" 2>&1 | grep -v -i "gym\|migration\|USDT" >> "$OUT/host.md"
for set in $SETS; do  # one call each, so a set that hangs loses only its own row
  T=$SPEED_S; [ $set = fp32 ] && T=$FP32_S; [[ $set = *compile* ]] && T=$COMPILE_S
  timeout $T $PY benchmark/speed.py "${SP[@]}" --sets $set -- --device $DEVICE "${EX[@]}" 2>&1 | grep -v -i "gym\|migration" | tee -a "$OUT/speed.md"
done
for v in $VARIANTS; do  # the other variants at the defaults
  timeout $SPEED_S $PY benchmark/speed.py --script $v "${SP[@]}" --sets default -- --device $DEVICE "${EX[@]}" 2>&1 | grep -v -i "gym\|migration" | tee -a "$OUT/speed.md"
done
# the learning run gets whatever is left until END_S seconds after this script started
LEARN_S=$((END_S - SECONDS)); [ $LEARN_S -lt 30 ] && LEARN_S=30; echo "learning for $LEARN_S s" | tee -a "$OUT/machine.txt"
if [ -n "${TINY:-}" ]; then L=(--num-envs 4 --num-steps 32 --minibatch-size 64 --num-eval-episodes 3 --eval-frequency 256 --checkpoint-frequency 256 --total-timesteps 512 --threads 1)
else L=(--eval-frequency 131072 --checkpoint-frequency 131072); fi
RUNS=$(mktemp -d)  # the learning run's runs folder
if [ -n "${RESUME:-}" ]; then  # continue a run brought along (its folder), e.g. benchmark/results/gpu_h100/run
  cp -r "$RESUME" $RUNS/run || { echo "gpu_session.sh: cannot copy RESUME=$RESUME" >&2; exit 1; }
  L=(--resume $RUNS/run --env-threads 0 "${L[@]}")  # 0: the default since session 26 (older checkpoints say 4)
  [ -n "${TINY:-}" ] && L+=(--total-timesteps 1024)
else L+=(--runs-dir $RUNS); fi
timeout -s INT $LEARN_S $PY $SCRIPT --device $DEVICE "${L[@]}" "${LX[@]}" 2>&1 | grep -v -i "gym\|migration" > "$OUT/run/train.log"
tail -3 "$OUT/run/train.log"
RUN=$(ls -d $RUNS/*/ | head -1)  # back as $OUT/run, laid out as a run folder (latest checkpoint only)
cp "$RUN"/eval.jsonl "$RUN"/events.out.tfevents.* "$OUT/run/"
mkdir -p "$OUT/run/checkpoints" && cp "$(ls "$RUN"/checkpoints/*.pt | tail -1)" "$OUT/run/checkpoints/"
cat "$OUT/run/eval.jsonl"; ls -la "$OUT" "$OUT/run" "$OUT/run/checkpoints"
[ -s "$OUT/run/eval.jsonl" ]  # the exit status: non-zero when the learning run brought nothing back
