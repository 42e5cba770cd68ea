"""Per-block means of a run's TensorBoard scalars: how PPO's own diagnostics move over a long run.

Usage: python benchmark/scalars.py RUN_DIR [...] [--block STEPS] [--tags TAG ...] [--plot FIGURE.png]
One table per run: a row per block of STEPS steps ((k-1) x STEPS, k x STEPS], a column per tag, each the mean of the
values the run logged in that block ("-" where it logged none). --plot also draws them: a panel per tag, a line per
run. The default tags are the update's: approx_kl (the last minibatch's KL from the acting policy), clipfrac, entropy
(ln 15 = 2.71 is uniform over CoinRun's 15 actions), explained_variance and rollout_kl (acting vs. updating policy
before the first gradient step).
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


def run_label(run):
    """'ppo_procgen_aug seed 1' for a run folder named as the scripts name them (ENV__EXP__SEED__TIME), else its name."""
    parts = os.path.basename(os.path.normpath(run)).split("__")
    return f"{parts[1]} seed {parts[2]}" if len(parts) == 4 else parts[0]


def plot(tables, tags, path):
    """A panel per tag, a line per run: its block means against the blocks' last steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tags), figsize=(4.5 * len(tags), 3.8), squeeze=False)
    for ax, tag in zip(axes[0], tags):
        for i, (run, means) in enumerate(tables.items()):
            ends = sorted(means[tag])
            ax.plot(ends, [means[tag][end] for end in ends], "-", lw=1.2, color=f"C{i}", label=run_label(run))
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=100)
    os.replace(path + ".tmp.png", path)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--block", type=int, default=524288, help="steps per row")
    p.add_argument("--tags", nargs="+", default=TAGS, help="TensorBoard scalar tags, one column each")
    p.add_argument("--plot", metavar="FIGURE.png", help="also draw the block means: a panel per tag, a line per run")
    opts = p.parse_args(argv)
    if opts.block <= 0:
        p.error(f"--block must be positive, got {opts.block}")
    if opts.plot and (not opts.plot.endswith(".png") or not os.path.isdir(os.path.dirname(opts.plot) or ".")):
        p.error(f"--plot needs a .png file in an existing folder, got {opts.plot}")
    tables = {}
    for run in opts.runs:
        scalars = read_scalars(run, opts.tags)
        if not scalars:
            sys.exit(f"scalars.py: error: no TensorBoard events with {', '.join(opts.tags)} in {run}")
        means = tables[run] = {tag: block_means(*scalars[tag], opts.block) if tag in scalars else {} for tag in opts.tags}
        print(f"\n{run}\n")
        print("| steps up to | " + " | ".join(tag.split("/")[-1] for tag in opts.tags) + " |")
        print("|---|" + "---|" * len(opts.tags))
        for end in sorted(set().union(*means.values())):
            cells = [f"{means[tag][end]:.4g}" if end in means[tag] else "-" for tag in opts.tags]
            print(f"| {end} | " + " | ".join(cells) + " |")
    if opts.plot:
        plot(tables, opts.tags, opts.plot)


if __name__ == "__main__":
    main(sys.argv[1:])
