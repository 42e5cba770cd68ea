import json
import os
import subprocess
import sys

import pytest
import torch

# One thread per process: torch's OpenMP threads spin-wait, and two multi-threaded processes on 2 cores stall each
# other by orders of magnitude (measured: 365 ms vs 4 ms per inference step).
torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Tiny settings: behaviour, not learning. 4 envs x 32 steps = one 128-sample iteration of two 64-sample minibatches.
TINY = ["--num-envs", "4", "--num-steps", "32", "--minibatch-size", "64", "--num-eval-episodes", "3", "--threads", "1"]


def run_script(script, *args, check=True, timeout=600, cwd=None):
    """Run a project script (or, given an absolute path, a copy of one) in a subprocess, as a user would."""
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_dirs(runs_dir):
    return sorted(os.path.join(runs_dir, d) for d in os.listdir(runs_dir))


def read_eval(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, "eval.jsonl"))]


def final_weights(run_dir):
    ckpt = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))[-1]
    return torch.load(os.path.join(run_dir, "checkpoints", ckpt), weights_only=True)["model"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One tiny training run of the base script: 3 iterations, evals at 0/256/384, checkpoints at 256/384."""
    runs = tmp_path_factory.mktemp("runs")
    args = [*TINY, "--total-timesteps", "384", "--eval-frequency", "256", "--checkpoint-frequency", "256"]
    proc = run_script("ppo_procgen.py", *args, "--runs-dir", runs)
    (run_dir,) = run_dirs(runs)
    return run_dir, proc
