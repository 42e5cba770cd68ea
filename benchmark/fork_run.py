"""Fork a run at one of its checkpoints into a new run folder, with some of PPO's settings changed from there on.

    python benchmark/fork_run.py RUN_DIR STEP FORK_DIR --set norm_reward=true [--set ent_coef=0.02 ...]
    python ppo_procgen_nobn.py --resume FORK_DIR --total-timesteps 25000000   # the script that wrote RUN_DIR

The counterfactual experiment on a long run ("would it have collapsed with reward normalization from 2.49M on?"): the
fork starts from exactly the original's state at STEP (weights, optimizer, RNG, envs, counters) and copies its
eval.jsonl and TensorBoard events, so its curves read as one run; the resume drops what the original logged after STEP.
Only settings that leave the network, the batch and the envs as they were may change (FORKABLE); settings a resume
may change anyway (the speed options, --total-timesteps, ...) are given to the resume itself.
"""

import argparse
import glob
import os
import shutil
import sys

import torch

FORKABLE = {
    "learning_rate": float,
    "anneal_lr": bool,
    "gamma": float,
    "gae_lambda": float,
    "update_epochs": int,
    "norm_adv": bool,
    "norm_reward": bool,
    "clip_coef": float,
    "clip_vloss": bool,
    "ent_coef": float,
    "vf_coef": float,
    "max_grad_norm": float,
    "target_kl": float,
}


def fail(msg):
    sys.exit(f"fork_run.py: error: {msg}")


def parse_value(name, text):
    kind = FORKABLE[name]
    if name == "target_kl" and text.lower() == "none":
        return None
    if kind is bool:
        if text.lower() not in ("true", "false"):
            fail(f"{name} takes true or false, got {text!r}")
        return text.lower() == "true"
    try:
        return kind(text)
    except ValueError:
        fail(f"{name} takes a {kind.__name__}, got {text!r}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", help="the run to fork (a folder with checkpoints/)")
    p.add_argument("step", type=int, help="the step of the checkpoint to fork at")
    p.add_argument("fork_dir", help="the new run folder (must not exist)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a setting changed in the fork")
    args = p.parse_args(argv)
    src = os.path.join(args.run_dir, "checkpoints", f"step_{args.step:010d}.pt")
    if not os.path.isfile(src):
        found = sorted(glob.glob(os.path.join(args.run_dir, "checkpoints", "step_*.pt")))
        fail(f"no checkpoint {src}; there are: {', '.join(os.path.basename(f) for f in found) or 'none'}")
    if os.path.exists(args.fork_dir):
        fail(f"{args.fork_dir} exists; a fork starts a new run folder")
    if not args.set:
        fail("nothing to change: give --set NAME=VALUE (a plain copy is `--resume` of the run itself)")
    changes = {}
    for item in args.set:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in FORKABLE:
            fail(f"--set {item!r}: give NAME=VALUE with NAME one of {', '.join(sorted(FORKABLE))}")
        changes[name] = parse_value(name, text.strip())
    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or holding arbitrary pickled objects
        fail(f"{src} is not a readable checkpoint ({type(e).__name__})")
    if not isinstance(ckpt, dict) or not {"variant", "args", "model"} <= ckpt.keys():
        fail(f"{src} is not a checkpoint of this project")
    before = {name: ckpt["args"].get(name, "(the default)") for name in changes}
    ckpt["args"].update(changes)
    ckpt["args"]["resume"] = None
    tmp = args.fork_dir.rstrip("/") + ".tmp"  # built aside, then renamed: no half-made fork folder
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "checkpoints"))
    for path in glob.glob(os.path.join(args.run_dir, "events.out.tfevents.*")) + [os.path.join(args.run_dir, "eval.jsonl")]:
        if os.path.isfile(path):
            shutil.copy2(path, tmp)
    torch.save(ckpt, os.path.join(tmp, "checkpoints", os.path.basename(src)))
    os.replace(tmp, args.fork_dir)
    for name, value in changes.items():
        print(f"{name}: {before[name]} -> {value}")
    print(f"forked {src} -> {args.fork_dir}; continue it with: python {ckpt['variant']}.py --resume {args.fork_dir}")


if __name__ == "__main__":
    main()
