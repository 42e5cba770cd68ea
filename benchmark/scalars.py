"""Per-block means of a run's TensorBoard scalars: how PPO's own diagnostics move over a long run.

Usage: python benchmark/scalars.py RUN_DIR [...] [--block STEPS] [--tags TAG ...]
One table per run: a row per block of STEPS steps ((k-1) x STEPS, k x STEPS], a column per tag, each the mean of the
values the run logged in that block ("-" where it logged none). The default tags are the update's: approx_kl (the
last minibatch's KL from the acting policy), clipfrac, entropy (ln 15 = 2.71 is uniform over CoinRun's 15 actions),
explained_variance and rollout_kl (acting vs. updating policy before the first gradient step).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vs_reference import read_scalars  # noqa: E402

TAGS = ["losses/approx_kl", "losses/clipfrac", "losses/entropy", "losses/explained_variance", "losses/rollout_kl"]


def block_means(steps, values, size):
    """{k x size: mean of the values logged at steps in ((k-1) x size, k x size]}."""
    ends = -(-steps // size) * size
    return {int(end): float(values[ends == end].mean()) for end in np.unique(ends)}


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--block", type=int, default=524288, help="steps per row")
    p.add_argument("--tags", nargs="+", default=TAGS, help="TensorBoard scalar tags, one column each")
    opts = p.parse_args(argv)
    if opts.block <= 0:
        p.error(f"--block must be positive, got {opts.block}")
    for run in opts.runs:
        scalars = read_scalars(run, opts.tags)
        if not scalars:
            sys.exit(f"scalars.py: error: no TensorBoard events with {', '.join(opts.tags)} in {run}")
        means = {tag: block_means(*scalars[tag], opts.block) if tag in scalars else {} for tag in opts.tags}
        print(f"\n{run}\n")
        print("| steps up to | " + " | ".join(tag.split("/")[-1] for tag in opts.tags) + " |")
        print("|---|" + "---|" * len(opts.tags))
        for end in sorted(set().union(*means.values())):
            cells = [f"{means[tag][end]:.4g}" if end in means[tag] else "-" for tag in opts.tags]
            print(f"| {end} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
