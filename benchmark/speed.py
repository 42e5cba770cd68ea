"""Speed of a variant under several option sets, side by side in one run: SPS and where an iteration's time goes.

Each option set runs the script for a few iterations (in a subprocess, its own runs folder) and the per-iteration
timings it logs to TensorBoard (perf/*) are read back. The first iteration is warm-up (and compilation) and is left
out of the steady-state figures. Usage: python benchmark/speed.py [--script ppo_procgen.py] [--iterations 3] [-- extra]
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FP32 = ["--amp", "none", "--no-channels-last", "--no-compile", "--no-cuda-graph"]
DEFAULT = ["--amp", "auto", "--channels-last", "--no-compile", "--cuda-graph"]  # auto: bf16 where native (README)
OPTION_SETS = {  # --retain-memory is on unless a set turns it off; --cuda-graph acts on cuda only
    "fp32": FP32,
    "fp32_no_retain": [*FP32, "--no-retain-memory"],
    "channels_last": ["--amp", "none", "--channels-last", "--no-compile", "--no-cuda-graph"],
    "channels_last+bf16": ["--amp", "bf16", "--channels-last", "--no-compile", "--no-cuda-graph"],  # bf16 even if emulated
    "default": DEFAULT,
    "default_no_retain": [*DEFAULT, "--no-retain-memory"],
    "default_no_graph": ["--amp", "auto", "--channels-last", "--no-compile", "--no-cuda-graph"],
    "default+nondeterministic": [*DEFAULT, "--no-torch-deterministic"],
    "default+compile": ["--amp", "auto", "--channels-last", "--compile"],
    "default+env16": [*DEFAULT, "--env-threads", "16"],  # procgen on 16 threads (the GPU machines' cores)
    "default+env16+compile": ["--amp", "auto", "--channels-last", "--compile", "--env-threads", "16"],
}
OPTION_SETS["default+env16+compile+nondeterministic"] = [*OPTION_SETS["default+env16+compile"], "--no-torch-deterministic"]


def scalars(run_dir):
    acc = EventAccumulator(run_dir)
    acc.Reload()
    return {tag: np.array([e.value for e in acc.Scalars(tag)]) for tag in acc.Tags()["scalars"]}


def measure(script, options, iterations, num_envs, num_steps, extra):
    with tempfile.TemporaryDirectory() as runs:
        steps = iterations * num_envs * num_steps
        cmd = [sys.executable, os.path.join(ROOT, script), "--num-envs", str(num_envs), "--num-steps", str(num_steps),
               "--total-timesteps", str(steps), "--eval-frequency", str(10 * steps), "--checkpoint-frequency", str(steps),
               "--runs-dir", runs, *options, *extra]  # fmt: skip
        print("$", " ".join(cmd[1:]), flush=True)
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
            _, status, usage = os.wait4(proc.pid, 0)  # this run's own peak memory
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                err.seek(0)
                sys.exit(f"speed.py: error: the run failed:\n{err.read()[-2000:]}")
        s = scalars(os.path.join(runs, os.listdir(runs)[0]))
    steady = slice(1, None) if iterations > 1 else slice(None)
    t = {k: s[f"perf/{k}_time"][steady].mean() for k in ["rollout", "env", "inference", "update"]}
    sps = num_envs * num_steps / (t["rollout"] + t["update"])
    gpu = s["perf/gpu_memory_gib"].max() if "perf/gpu_memory_gib" in s else None  # cuda: the allocator's peak
    return {"sps": sps, **t, "eval": s["perf/eval_time"].mean(), "peak_gb": usage.ru_maxrss / 2**20, "gpu_gb": gpu}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--script", default="ppo_procgen.py")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--num-steps", type=int, default=64, help="per iteration; the update's cost per sample is the same")
    parser.add_argument("--sets", nargs="+", default=list(OPTION_SETS), choices=list(OPTION_SETS))
    parser.add_argument("extra", nargs="*", help="passed to every run (after --)")
    args = parser.parse_args()
    rows = {name: measure(args.script, OPTION_SETS[name], args.iterations, args.num_envs, args.num_steps, args.extra)
            for name in args.sets}  # fmt: skip
    base = rows[args.sets[0]]["sps"]
    print(f"\n{args.script}, {args.num_envs} envs x {args.num_steps} steps, iterations 2..{args.iterations} "
          f"(seconds per iteration; eval: one evaluation of the run's --num-eval-episodes per split)\n")  # fmt: skip
    print("| options | SPS | speed-up | rollout | env | inference | update | eval | peak memory (GiB) | GPU memory (GiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():  # times to 3 significant digits: a tiny run's env time would read 0.00 at .2f
        print(f"| {name} | {r['sps']:.0f} | {r['sps'] / base:.2f}x | {r['rollout']:.3g} | {r['env']:.3g} | "
              f"{r['inference']:.3g} | {r['update']:.3g} | {r['eval']:.1f} | {r['peak_gb']:.1f} | "
              f"{'-' if r['gpu_gb'] is None else format(r['gpu_gb'], '.1f')} |")  # fmt: skip


if __name__ == "__main__":
    main()
