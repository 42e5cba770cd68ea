"""Print a run's evaluations next to the published PPO reference curve (openai/train-procgen, CoinRun easy, 200 levels).

Usage: python benchmark/vs_reference.py RUN_DIR_OR_EVAL_JSONL [...] [--block STEPS]
The reference (benchmark/reference_train_procgen_coinrun_easy200.csv) is the mean +- std over 3 seeds of
train-procgen's `eprewmean` (last 100 training episodes), linearly interpolated here onto each evaluation step.
When the run folder holds its TensorBoard events, the "training episodes" column is the like-for-like measure: the
mean return of this run's training episodes that ended in the WINDOW steps up to the evaluation (hundreds of
episodes, so much less noisy than 100 evaluation episodes, but lagging by about half the window).
--block STEPS (e.g. 1048576, for a long run): one row per block of evaluations (the evaluations after step (k-1) x STEPS
up to k x STEPS; step 0 on its own), each column the mean over the block's evaluations, the reference's included
(taken at the same steps). A block of n evaluations has ~1/sqrt(n) of one evaluation's noise.
"""

import argparse
import csv
import glob
import json
import os
import sys

import numpy as np

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_train_procgen_coinrun_easy200.csv")


def reference():
    rows = list(csv.DictReader(line for line in open(REFERENCE) if not line.startswith("#")))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def interpolate(ref, key, step):
    steps = np.concatenate([[0], ref["step"]])  # before training: the random policy's ~2.7-3.0, see README
    return float(np.interp(step, steps, np.concatenate([[np.nan], ref[key]]))) if step >= ref["step"][0] else float("nan")


WINDOW = 65536


def read_scalars(run_dir, tags):
    """{tag: (steps, values)} of the TensorBoard scalars under these tags in a run folder (all its event files, a
    resumed run's included), for the tags it has; None without event files."""
    if not glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
        return None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    found = {tag: acc.Scalars(tag) for tag in tags if tag in acc.Tags()["scalars"]}
    return {tag: (np.array([e.step for e in events]), np.array([e.value for e in events])) for tag, events in found.items()}


def training_episodes(run_dir):
    """(steps, returns) of the training episodes logged to TensorBoard, or None without them."""
    return (read_scalars(run_dir, ["charts/episodic_return"]) or {}).get("charts/episodic_return")


def window_mean(episodes, step):
    """Mean return of the training episodes that ended in (step - WINDOW, step], or nan if none did (or no events)."""
    if episodes is None:
        return float("nan")
    ended = (episodes[0] > step - WINDOW) & (episodes[0] <= step)
    return float(episodes[1][ended].mean()) if ended.any() else float("nan")


def blocks(rows, size):
    """Evaluation rows grouped by the block (step 0 alone, then ((k-1) x size, k x size]) they fall in, in order."""
    groups = {}
    for r in rows:
        groups.setdefault(-(-r["global_step"] // size), []).append(r)
    return [(k * size, group) for k, group in sorted(groups.items())]


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", metavar="RUN_DIR_OR_EVAL_JSONL")
    p.add_argument("--block", type=int, default=None, help="average the evaluations over blocks of this many steps")
    opts = p.parse_args(argv)
    if opts.block is not None and opts.block <= 0:
        p.error(f"--block must be positive, got {opts.block}")
    ref = reference()
    fmt = lambda v: "-" if np.isnan(v) else f"{v:.2f}"  # noqa: E731
    for path in opts.paths:
        path = os.path.join(path, "eval.jsonl") if os.path.isdir(path) else path
        if not os.path.isfile(path):
            sys.exit(f"vs_reference.py: error: no such file: {path}")
        rows = [json.loads(line) for line in open(path)]
        episodes = training_episodes(os.path.dirname(path))
        print(f"\n{path}\n")
        if opts.block is None:
            print("| step | train | test | gap | training episodes | reference train | reference test |")
            print("|---|---|---|---|---|---|---|")
            for r in rows:
                s = r["global_step"]
                rt, rs = interpolate(ref, "train_mean", s), interpolate(ref, "test_mean", s)
                ep = window_mean(episodes, s)
                print(
                    f"| {s} | {r['train_return']:.2f} | {r['test_return']:.2f} | {r['gap']:+.2f} | {fmt(ep)} | "
                    f"{fmt(rt)} | {fmt(rs)} |"
                )
            continue
        print("| steps up to | evaluations | train | test | gap | training episodes | reference train | reference test |")
        print("|---|---|---|---|---|---|---|---|")
        for end, group in blocks(rows, opts.block):
            steps = [r["global_step"] for r in group]
            mean = lambda values: float(np.mean(values))  # noqa: E731 (nan when any value is: no partial averages)
            print(
                f"| {end} | {len(group)} | {mean([r['train_return'] for r in group]):.2f} | "
                f"{mean([r['test_return'] for r in group]):.2f} | {mean([r['gap'] for r in group]):+.2f} | "
                f"{fmt(mean([window_mean(episodes, s) for s in steps]))} | "
                f"{fmt(mean([interpolate(ref, 'train_mean', s) for s in steps]))} | "
                f"{fmt(mean([interpolate(ref, 'test_mean', s) for s in steps]))} |"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
