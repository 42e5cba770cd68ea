"""Where a script's device time goes, operator by operator: runs SCRIPT with its arguments under torch.profiler and
prints the operators with the most self time on the GPU (on a machine without one: on the CPU), e.g. over a few
iterations of a training script. Usage: python benchmark/kernel_profile.py [--rows 25] SCRIPT [SCRIPT'S ARGUMENTS ...]
"""

import argparse
import os
import runpy
import sys

import torch
from torch.profiler import ProfilerActivity, profile


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=25, help="how many operators to list")
    parser.add_argument("script", help="the Python script to run, e.g. ppo_procgen.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    args = parser.parse_args()
    if args.rows <= 0:
        parser.error("--rows must be positive")
    if not os.path.isfile(args.script):
        parser.error(f"no script {args.script}")
    cuda = torch.cuda.is_available()
    sys.argv = [args.script, *args.args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(args.script)))
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:
        runpy.run_path(args.script, run_name="__main__")
    sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(f"\ntorch.profiler of {' '.join(sys.argv)}: operators by {sort_by}")
    print(prof.key_averages().table(sort_by=sort_by, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
