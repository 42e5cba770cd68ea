"""Print the step at which a variant's run of --total-timesteps ends: the script rounds the total up to whole batches
(--num-envs x --num-steps) and makes its last evaluation and checkpoint there (25,000,000 -> 25,001,984 at the
defaults). The harnesses aggregate up to this step, so a run's last evaluation counts.

Usage: python benchmark/end_step.py VARIANT TOTAL [ARGS ...]   (ARGS: the run's own arguments, as after -- in coinrun.sh)
Arguments the script refuses exit non-zero with its own message.
"""

import contextlib
import importlib
import io
import os
import sys

import tyro

if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__.split("\n\n")[1])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isfile(os.path.join(root, sys.argv[1] + ".py")):
        sys.exit(f"end_step.py: error: no variant script {sys.argv[1]}.py")
    sys.path.insert(0, root)
    with contextlib.redirect_stderr(io.StringIO()):  # gym's notice on import, which every run prints already
        script = importlib.import_module(sys.argv[1])
        from procgen.env import ENV_NAMES  # noqa: F401  (check_args imports it, and it imports gym)
    args = tyro.cli(script.Args, args=["--total-timesteps", *sys.argv[2:]])
    script.check_args(args)
    print(args.num_iterations * args.batch_size)
