"""Aggregate a benchmark's runs into the gap table (gap_table.md / .json) and curves.png.

    python benchmark/aggregate.py OUT_DIR [--last 3] [--max-step N]
    python benchmark/aggregate.py DIR DIR ... --out OUT_DIR   # runs from several benchmark folders in one table

Reads OUT_DIR/runs/{env}__{variant}__{seed}__{time}/eval.jsonl ({variant} is the run's --exp-name, so ablations of one
script are rows of their own; with several folders, the runs of all of them: a variant's seed in two is an error). A
run's cell is the mean of its last --last evaluations (up to step --max-step, to compare runs of different lengths at
one horizon; the seeds of one row at the last step all of them reached, the plot drawing any seed that went further on
its own); across seeds: mean +- std, the per-seed values, and a 95% Student-t CI over seeds (honest with 3 seeds:
t(0.975, 2) = 4.30, not 1.96). A random-policy row is added from OUT_DIR/random/report.json when present
(`eval_generalization.py --random --out OUT_DIR/random`; with several folders, the first that has one).
"""

import argparse
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from vs_reference import WINDOW, reference, training_episodes, window_mean  # noqa: E402

VARIANTS = ["ppo_procgen", "ppo_procgen_aug", "ppo_procgen_nobn"]
TARGETS = {"train": 8.0, "test": 6.5, "gap": 2.0, "gap_reduction": 0.5}  # the brief's done-when gates
# The brief's "learning stability: no catastrophic forgetting", measured on the training-episode curve as a fall that
# lasts: how far the mean of a 65,536-step window and of the two after it (all three) stays below the best earlier
# 262,144-step mean. In the gap tables of benchmark/results/{ablation,variants_1m,long_seed1} (this script on each):
# <= 0.40 for every run that kept learning (runs of up to 1M steps), 0.60 on the default's long run (long_seed1); the
# collapsed flatten run 1.94, the no-BN long run that collapsed at 2.7M 6.04. (The earlier statistic, one window below
# the best single window, grew with run length: 1.46 on that run at 5.1M, from one noisy window.)
SUSTAIN, SMOOTH = 3, 4  # windows
MAX_DROP = 1.0


def largest_drop(episodes, horizon):
    """Largest fall of the training-episode mean below its best earlier SMOOTH-window mean that lasts SUSTAIN
    consecutive WINDOW-step windows (those left, at the end of the run), over the windows up to `horizon`: 0 while a
    run keeps learning, the fall itself for a collapse; nan without TensorBoard events."""
    if episodes is None:
        return float("nan")
    means = np.array([window_mean(episodes, step) for step in range(WINDOW, horizon + 1, WINDOW)])
    means = means[~np.isnan(means)]
    if not len(means):
        return float("nan")
    smooth = np.array([means[max(0, t - SMOOTH + 1) : t + 1].mean() for t in range(len(means))])
    best = np.maximum.accumulate(smooth)
    return float(max([0.0] + [best[t - 1] - means[t : t + SUSTAIN].max() for t in range(1, len(means))]))


def t_quantile(p, df):
    """Student-t quantile by bisection on a numerically integrated CDF (no scipy needed)."""
    logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(t):
        x = np.linspace(0.0, t, 20001)
        pdf = np.exp(logc - (df + 1) / 2 * np.log1p(x**2 / df))
        return 0.5 + np.sum((pdf[1:] + pdf[:-1]) / 2 * np.diff(x))

    lo, hi = 0.0, 1000.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def seed_stats(values):
    v = np.asarray(values, dtype=float)
    out = {"mean": float(v.mean()), "values": v.tolist(), "n": len(v)}
    if len(v) > 1:
        sd = float(v.std(ddof=1))
        half = t_quantile(0.975, len(v) - 1) * sd / math.sqrt(len(v))
        out.update(std=sd, ci95=[out["mean"] - half, out["mean"] + half])
    else:
        out.update(std=None, ci95=None)
    return out


def load_runs(out_dirs, max_step=None):
    """{variant: {seed: eval rows}}, and {variant: {seed: (steps, returns) of its training episodes, or None}}, from the
    runs/ folder of each of `out_dirs` (one folder or a list)."""
    runs, episodes_of, found_in = {}, {}, {}
    roots = [os.path.join(d, "runs") for d in ([out_dirs] if isinstance(out_dirs, str) else out_dirs)]
    for root in roots:
        if not os.path.isdir(root):
            sys.exit(f"aggregate.py: error: no runs folder {root}")
    for root, name in [(root, name) for root in roots for name in sorted(os.listdir(root))]:
        parts = name.split("__")
        path = os.path.join(root, name, "eval.jsonl")
        if len(parts) != 4 or not os.path.isfile(path):
            continue
        if found_in.setdefault((parts[1], parts[2]), root) != root:
            sys.exit(f"aggregate.py: error: {parts[1]} seed {parts[2]} is in both {found_in[parts[1], parts[2]]} and {root}")
        rows = [row for row in map(json.loads, open(path)) if max_step is None or row["global_step"] <= max_step]
        episodes = training_episodes(os.path.join(root, name))
        if episodes is not None and max_step is not None:
            episodes = tuple(a[episodes[0] <= max_step] for a in episodes)
        for row in rows:
            row["train_episodes"] = window_mean(episodes, row["global_step"])
        if rows:
            runs.setdefault(parts[1], {})[int(parts[2])] = rows
            episodes_of.setdefault(parts[1], {})[int(parts[2])] = episodes
    if not runs:
        sys.exit(f"aggregate.py: error: no runs with eval.jsonl under {', '.join(roots)}")
    return runs, episodes_of


def aggregate(runs, last, episodes_of=None):
    table = {}
    for variant, seeds in runs.items():
        cells = {k: [] for k in ["train", "test", "gap", "train_completion", "test_completion", "train_episodes"]}
        horizon = min(rows[-1]["global_step"] for rows in seeds.values())  # seeds compared at one step
        for rows in seeds.values():
            tail = [r for r in rows if r["global_step"] <= horizon][-last:]
            cells["train"].append(np.mean([r["train_return"] for r in tail]))
            cells["test"].append(np.mean([r["test_return"] for r in tail]))
            cells["gap"].append(np.mean([r["gap"] for r in tail]))
            cells["train_completion"].append(np.mean([r["train_completion"] for r in tail]))
            cells["test_completion"].append(np.mean([r["test_completion"] for r in tail]))
            known = [r["train_episodes"] for r in tail if not np.isnan(r["train_episodes"])]
            cells["train_episodes"].append(np.mean(known) if known else np.nan)
        row = {k: seed_stats(v) for k, v in cells.items() if not np.isnan(v).any()}
        row["seeds"] = sorted(seeds)
        row["steps"] = [horizon] * len(seeds)
        row["beyond"] = {s: rows[-1]["global_step"] for s, rows in sorted(seeds.items()) if rows[-1]["global_step"] > horizon}
        drops = [largest_drop((episodes_of or {}).get(variant, {}).get(seed), horizon) for seed in sorted(seeds)]
        row["largest_drop"] = None if np.isnan(drops).any() else drops  # per seed
        row["normalized_test"] = (row["test"]["mean"] - 5.0) / 5.0  # CoinRun easy [5, 10]
        row["sample_efficiency"] = first_step_reaching(seeds)
        row["every_seed_meets_targets"] = all(
            tr >= TARGETS["train"] and te >= TARGETS["test"] and g < TARGETS["gap"]
            for tr, te, g in zip(cells["train"], cells["test"], cells["gap"])
        )
        table[variant] = row
    return table


def first_step_reaching(seeds):
    """First evaluation step at which the seed-mean train >= 8.0 and test >= 6.5 (steps all seeds evaluated)."""
    common = sorted(set.intersection(*[{r["global_step"] for r in rows} for rows in seeds.values()]))
    for step in common:
        at = [next(r for r in rows if r["global_step"] == step) for rows in seeds.values()]
        if (
            np.mean([r["train_return"] for r in at]) >= TARGETS["train"]
            and np.mean([r["test_return"] for r in at]) >= TARGETS["test"]
        ):
            return step
    return None


def difference(a, b):
    """a - b of two seed_stats means with a 95% CI: Welch's standard error and the smaller group's degrees of freedom
    (conservative with few seeds). The CI is None when either side has a single seed."""
    d = a["mean"] - b["mean"]
    if a["n"] < 2 or b["n"] < 2:
        return {"difference": d, "ci95": None}
    se = math.hypot(a["std"] / math.sqrt(a["n"]), b["std"] / math.sqrt(b["n"]))
    half = t_quantile(0.975, min(a["n"], b["n"]) - 1) * se
    return {"difference": d, "ci95": [d - half, d + half]}


def comparison(table):
    if "ppo_procgen" not in table or "ppo_procgen_aug" not in table:
        return None
    base, aug = table["ppo_procgen"], table["ppo_procgen_aug"]
    reduction = difference(base["gap"], aug["gap"])
    return {
        "gap_reduction": reduction["difference"],
        "gap_reduction_ci95": reduction["ci95"],
        "train_change": aug["train"]["mean"] - base["train"]["mean"],
        "steps": [min(base["steps"]), min(aug["steps"])],
    }


def batchnorm_effect(table):
    """What removing BatchNorm changes (no-BN - base), for the brief's with/without-BN ablation."""
    if "ppo_procgen" not in table or "ppo_procgen_nobn" not in table:
        return None
    base, nobn = table["ppo_procgen"], table["ppo_procgen_nobn"]
    effect = {k: difference(nobn[k], base[k]) for k in ["train", "test", "gap"]}
    effect["steps"] = [min(base["steps"]), min(nobn["steps"])]
    return effect


def main_variant(table):
    """The variant the brief's checklist is about: the augmented one, or the first there is."""
    return "ppo_procgen_aug" if "ppo_procgen_aug" in table else next(iter(table))


def checklist(table, comp):
    main = table[main_variant(table)]
    items = [
        ("train >= 8.0", main["train"]["mean"] >= TARGETS["train"]),
        ("test >= 6.5", main["test"]["mean"] >= TARGETS["test"]),
        ("gap < 2.0", main["gap"]["mean"] < TARGETS["gap"]),
        ("gap reduction from augmentation >= 0.5", comp is not None and comp["gap_reduction"] >= TARGETS["gap_reduction"]),
        ("augmentation does not hurt training", comp is not None and comp["train_change"] >= 0),
        ("consistent across seeds (every seed meets train/test/gap)", main["every_seed_meets_targets"]),
        (
            f"learning stable (no seed's training-episode mean stays > {MAX_DROP} below its best earlier mean)",
            main["largest_drop"] is not None and max(main["largest_drop"]) <= MAX_DROP,
        ),
    ]
    return [{"check": c, "pass": bool(p)} for c, p in items]


def fmt(s, pct=False):
    f = (lambda x: f"{x:.1%}") if pct else (lambda x: f"{x:.2f}")
    if s["std"] is None:
        return f(s["mean"])
    return f"{f(s['mean'])} +- {f(s['std'])} [{f(s['ci95'][0])}, {f(s['ci95'][1])}]"


def ci_text(ci):
    return f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def steps_text(steps, names):
    """A warning when two rows are compared at different steps (runs of different lengths: use --max-step)."""
    if steps[0] == steps[1]:
        return ""
    return f" Not like for like: {names[0]} at step {steps[0]}, {names[1]} at step {steps[1]} (--max-step sets one horizon)."


def markdown(table, comp, bn, checks, random_row, last):
    lines = [
        f"# Gap table\n\nCell: mean of a run's last {last} evaluations; across seeds mean +- std [95% Student-t CI]. "
        f"Training episodes: mean return of the training episodes that ended in the {WINDOW} steps before each of those "
        "evaluations (the measure the published reference uses; '-' without TensorBoard events).\n",
        "| variant | seeds | steps | train | test | gap | training episodes | train completion | test completion "
        "| normalized test |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v, r in table.items():
        lines.append(
            f"| {v} | {','.join(map(str, r['seeds']))} | {min(r['steps'])} | {fmt(r['train'])} | {fmt(r['test'])} | "
            f"{fmt(r['gap'])} | {fmt(r['train_episodes']) if 'train_episodes' in r else '-'} | "
            f"{fmt(r['train_completion'], True)} | {fmt(r['test_completion'], True)} | "
            f"{r['normalized_test']:.2f} |"
        )
    if random_row:
        lines.append(
            f"| random policy | - | - | {random_row['train']['mean']:.2f} | {random_row['test']['mean']:.2f} | "
            f"{random_row['gap']['mean']:.2f} | - | {random_row['train']['completion']:.1%} | "
            f"{random_row['test']['completion']:.1%} | {(random_row['test']['mean'] - 5) / 5:.2f} |"
        )
    beyond = [f"{v} seed {s} to {n}" for v, r in table.items() for s, n in r["beyond"].items()]
    if beyond:
        lines.append(f"\nSeeds of one row are compared at the last step all of them reached; evaluations beyond it: "
                     f"{', '.join(beyond)} (their curves go on in curves.png).")  # fmt: skip
    if comp:
        lines.append(
            f"\nGap reduction from augmentation (no-aug gap - aug gap): {comp['gap_reduction']:.2f}"
            f"{ci_text(comp['gap_reduction_ci95'])}; "
            f"train change with augmentation: {comp['train_change']:+.2f}."
            + steps_text(comp["steps"], ["ppo_procgen", "ppo_procgen_aug"])
        )
    if bn:
        lines.append(
            "\nWithout BatchNorm (no-BN - base, 95% CI): "
            + ", ".join(f"{k} {bn[k]['difference']:+.2f}{ci_text(bn[k]['ci95'])}" for k in ["train", "test", "gap"])
            + "."
            + steps_text(bn["steps"], ["ppo_procgen", "ppo_procgen_nobn"])
        )
    lines.append(
        "\nSample efficiency (first step with seed-mean train >= 8.0 and test >= 6.5): "
        + ", ".join(
            f"{v}: {r['sample_efficiency'] if r['sample_efficiency'] is not None else 'not reached'}" for v, r in table.items()
        )
    )
    drops = [f"{v}: {', '.join(f'{d:.2f}' for d in r['largest_drop'])}" for v, r in table.items() if r["largest_drop"]]
    if drops:
        lines.append(
            f"\nLearning stability (per seed, the largest fall of the training-episode mean that lasts {SUSTAIN} consecutive "
            f"{WINDOW}-step windows, below its best earlier {SMOOTH * WINDOW}-step mean; > {MAX_DROP}: a collapse): "
            + "; ".join(drops)
        )
    lines.append(f"\nThe brief's checklist, for {main_variant(table)} (computed from the data):\n")
    lines += [f"- [{'x' if c['pass'] else ' '}] {c['check']}" for c in checks]
    return "\n".join(lines) + "\n"


def plot(runs, episodes_of, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = reference()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5), sharey=True)
    label = "PPO reference (openai/train-procgen, 3 seeds)"
    for ax, split in zip(axes, ["train", "test"]):
        ax.plot(ref["step"], ref[f"{split}_mean"], "k--", lw=1, label=label)
        for i, (variant, seeds) in enumerate(sorted(runs.items())):
            steps = sorted(set.intersection(*[{r["global_step"] for r in rows} for rows in seeds.values()]))
            vals = np.array(
                [[next(r[f"{split}_return"] for r in rows if r["global_step"] == s) for s in steps] for rows in seeds.values()]
            )
            ax.plot(
                steps, vals.mean(0), "o-", ms=3, color=f"C{i}", label=f"{variant} ({len(seeds)} seed{'s' * (len(seeds) > 1)})"
            )
            if len(seeds) > 1:
                ax.fill_between(steps, vals.min(0), vals.max(0), color=f"C{i}", alpha=0.2)
                for rows in seeds.values():  # a seed that went further than the others: its own thin line on
                    more = [r for r in rows if r["global_step"] >= steps[-1]]
                    if len(more) > 1:
                        ax.plot([r["global_step"] for r in more], [r[f"{split}_return"] for r in more], ":", color=f"C{i}")
        ax.set_title(f"evaluation, {split} levels" + (" (200)" if split == "train" else " (unbounded)"))
    # The training episodes, windowed as the reference's own eprewmean (its last 100 episodes) is: hundreds of
    # episodes per point, so far less noisy than a 100-episode evaluation.
    axes[2].plot(ref["step"], ref["train_mean"], "k--", lw=1, label=label)
    for i, variant in enumerate(sorted(runs)):
        curves = [e for e in episodes_of[variant].values() if e is not None and len(e[0])]
        if not curves:
            continue
        steps = np.arange(WINDOW, min(e[0][-1] for e in curves) + 1, WINDOW // 2)
        vals = np.array([[window_mean(e, s) for s in steps] for e in curves])
        axes[2].plot(steps, vals.mean(0), "-", color=f"C{i}")
        if len(curves) > 1:
            axes[2].fill_between(steps, vals.min(0), vals.max(0), color=f"C{i}", alpha=0.2)
            for e in curves:
                more = np.arange(steps[-1], e[0][-1] + 1, WINDOW // 2)
                if len(more) > 1:
                    axes[2].plot(more, [window_mean(e, s) for s in more], ":", color=f"C{i}")
    axes[2].set_title(f"training episodes (200 levels), mean over each {WINDOW:,} steps")
    max_step = max(r[-1]["global_step"] for seeds in runs.values() for r in seeds.values())
    for ax in axes:
        ax.set_xlim(0, max(max_step, 1) * 1.05)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("return (band: min-max over seeds)")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=100)
    os.replace(path + ".tmp.png", path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dirs", nargs="+", metavar="DIR", help="benchmark folder(s) holding runs/")
    p.add_argument("--out", default=None, help="where the table and plot go (needed with several folders)")
    p.add_argument("--last", type=int, default=3, help="evaluations averaged per run")
    p.add_argument("--max-step", type=int, default=None, help="ignore evaluations after this step")
    args = p.parse_args(argv)
    if args.last <= 0 or (args.max_step is not None and args.max_step < 0):
        p.error("--last must be positive and --max-step >= 0")
    if args.out is None and len(args.dirs) > 1:
        p.error("with several folders, --out names the folder for the table and plot")
    runs, episodes_of = load_runs(args.dirs, args.max_step)
    out = args.out or args.dirs[0]
    os.makedirs(out, exist_ok=True)
    table = aggregate(runs, args.last, episodes_of)
    comp, bn = comparison(table), batchnorm_effect(table)
    checks = checklist(table, comp)
    random_row = None
    for random_path in [os.path.join(d, "random", "report.json") for d in [out] + args.dirs]:
        if os.path.isfile(random_path):
            random_row = json.load(open(random_path))["checkpoints"].get("random")
            break
    data = {
        "last": args.last,
        "variants": table,
        "augmentation": comp,
        "batchnorm": bn,
        "checklist": checks,
        "random": random_row,
    }
    for name, text in [
        ("gap_table.json", json.dumps(data, indent=2)),
        ("gap_table.md", markdown(table, comp, bn, checks, random_row, args.last)),
    ]:
        with open(os.path.join(out, name + ".tmp"), "w") as f:
            f.write(text)
        os.replace(os.path.join(out, name + ".tmp"), os.path.join(out, name))
    plot(runs, episodes_of, os.path.join(out, "curves.png"))
    print(open(os.path.join(out, "gap_table.md")).read())


if __name__ == "__main__":
    main()
