"""The generalization report for trained agents: every training level, unseen test levels, the gap, with CIs.

    python eval_generalization.py RUN_DIR_OR_CHECKPOINT [...] [--episodes-per-level 5] [--test-episodes 1000]
    python eval_generalization.py --random            # a uniform random policy, evaluated the same way

Each checkpoint records the variant script that wrote it; the Agent, env construction and evaluation loop are imported
from that script (only the project's own variants are ever imported), so there is no fourth copy of the network.
Train levels: each of the run's training levels k is played --episodes-per-level times in an env with
start_level=k, num_levels=1 (exactly level k), so the train score is over all levels, not a sample. Test levels:
--test-episodes episodes on unbounded levels from a seed unrelated to training; each env plays exactly one episode, so
short episodes are not over-sampled. BN is in eval mode; the policy samples (--greedy: argmax).
"""

import argparse
import glob
import importlib
import json
import os
import sys
import time

import numpy as np
import torch

VARIANTS = ("ppo_procgen", "ppo_procgen_aug", "ppo_procgen_nobn")
# Procgen's normalisation constants (R_min, R_max), easy mode, from openai/train-procgen; others are not reported.
NORMALIZATION = {"coinrun": (5.0, 10.0)}
EVAL_SEED = 0x5EED  # unrelated to any training seed's derivation
MAX_EPISODE_STEPS = 1000  # Procgen's timeout
# Procgen's 15 actions (procgen.env.get_combos) by what they do in a platformer; the rest (down, no-op, the six
# keys D A W S Q E) leave the agent where it is. Uniform: left 0.2, right 0.2, jump 0.2, still 0.6.
ACTION_GROUPS = {"left": [0, 1, 2], "right": [6, 7, 8], "jump": [2, 5, 8]}


def fail(msg):
    sys.exit(f"eval_generalization.py: error: {msg}")


def load_agent(path, device):
    """(variant module, checkpoint args, agent in eval mode) for a checkpoint or a run folder's latest checkpoint."""
    if not os.path.exists(path):
        fail(f"no such checkpoint or run folder: {path}")
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, "checkpoints", "*.pt")))
        if not found:
            fail(f"no checkpoint in {path}/checkpoints/")
        path = found[-1]
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except Exception as e:
        fail(f"{path} is not a readable checkpoint ({type(e).__name__})")
    if not isinstance(ckpt, dict) or not {"variant", "model", "args"} <= set(ckpt):
        fail(f"{path} is not a checkpoint of this project")
    if ckpt["variant"] not in VARIANTS:
        fail(f"{path} was written by {ckpt['variant']!r}, which is not one of this project's scripts {VARIANTS}")
    try:
        module = importlib.import_module(ckpt["variant"])
    except ImportError:
        fail(f"{path} needs {ckpt['variant']}.py, which is not here")
    a = ckpt["args"]
    agent = module.Agent(15, a["arch"], tuple(a["channels"]), a["pool"])
    try:
        agent.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        fail(f"{path} does not fit {ckpt['variant']}.py's {a['arch']} network: {str(e).splitlines()[0]}")
    speed = argparse.Namespace(  # inference only: no big freed blocks to retain
        channels_last=device.type != "mps", amp="auto" if device.type == "cpu" else "none", compile=False, retain_memory=False
    )
    module.set_speed_options(agent.to(device), speed, device)
    return module, a, path, agent.eval(), ckpt["global_step"]


class RandomAgent(torch.nn.Module):
    """Uniform random policy with the Agent's interface (zero logits: evaluate's sampling picks uniformly)."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.zeros(len(x), 15, device=x.device), torch.zeros(len(x), device=x.device)


def per_level_envs(env_id, levels, episodes, distribution_mode, seed):
    """One vector env holding `episodes` envs fixed to each level in `levels` (start_level=k, num_levels=1)."""
    import gym3
    from procgen import ProcgenGym3Env

    parts = [
        ProcgenGym3Env(
            num=episodes,
            env_name=env_id,
            start_level=int(k),
            num_levels=1,
            distribution_mode=distribution_mode,
            rand_seed=(seed + int(k)) % 2**31,
        )
        for k in levels
    ]
    return gym3.ToBaselinesVecEnv(gym3.ConcatEnv(parts))


def summarize(returns, completed, lengths, env_id):
    n = len(returns)
    se = returns.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
    mean = float(returns.mean())
    out = {
        "mean": mean,
        "std": float(returns.std(ddof=1)) if n > 1 else 0.0,
        "ci95": [mean - 1.96 * se, mean + 1.96 * se],
        "se": float(se),
        "completion": float(completed.mean()),
        "timeout": float((~completed & (lengths >= MAX_EPISODE_STEPS)).mean()),  # the rest of the failures died
        "mean_length": float(lengths.mean()),
        "episodes": n,
    }
    if env_id in NORMALIZATION:
        lo, hi = NORMALIZATION[env_id]
        out["normalized"] = (mean - lo) / (hi - lo)
    return out


def evaluate_agent(module, agent, a, opts, device):
    env_id, mode = a["env_id"], a["distribution_mode"]
    generator = torch.Generator(device).manual_seed(EVAL_SEED)
    num_train = a["num_levels"] if opts.num_train_levels is None else min(opts.num_train_levels, a["num_levels"])
    levels = np.arange(a["start_level"], a["start_level"] + num_train)
    train = {"returns": [], "completed": [], "lengths": [], "levels": []}
    chunk = max(1, opts.max_envs // opts.episodes_per_level)
    for i in range(0, len(levels), chunk):
        envs = per_level_envs(env_id, levels[i : i + chunk], opts.episodes_per_level, mode, EVAL_SEED)
        ret, length, completed, played = module.evaluate(agent, envs, generator, opts.greedy)
        envs.close()
        expected = np.repeat(levels[i : i + chunk], opts.episodes_per_level)
        assert (played == expected).all(), "an env did not play its level"
        for key, v in zip(["returns", "completed", "lengths", "levels"], [ret, completed, length, played]):
            train[key].append(v)
        print(f"  train levels {i + len(expected) // opts.episodes_per_level}/{len(levels)}", flush=True)
    train = {k: np.concatenate(v) for k, v in train.items()}
    test = {"returns": [], "completed": [], "lengths": []}
    for i in range(0, opts.test_episodes, opts.max_envs):
        n = min(opts.max_envs, opts.test_episodes - i)
        envs = module.make_env(env_id, n, 0, 0, mode, (EVAL_SEED * 7919 + i) % 2**31)
        ret, length, completed, _ = module.evaluate(agent, envs, generator, opts.greedy)
        envs.close()
        for key, v in zip(["returns", "completed", "lengths"], [ret, completed, length]):
            test[key].append(v)
        print(f"  test episodes {i + n}/{opts.test_episodes}", flush=True)
    test = {k: np.concatenate(v) for k, v in test.items()}
    report = {
        "train": summarize(train["returns"], train["completed"], train["lengths"], env_id),
        "test": summarize(test["returns"], test["completed"], test["lengths"], env_id),
    }
    gap = report["train"]["mean"] - report["test"]["mean"]
    gap_se = np.hypot(report["train"]["se"], report["test"]["se"])
    report["gap"] = {"mean": gap, "ci95": [gap - 1.96 * gap_se, gap + 1.96 * gap_se]}
    per_level = [
        (
            int(k),
            int((train["levels"] == k).sum()),
            float(train["returns"][train["levels"] == k].mean()),
            float(train["completed"][train["levels"] == k].mean()),
        )
        for k in levels
    ]
    return report, per_level


def first_frames(module, env_id, mode, k):
    """The first observation of training levels 0..k-1 and of k unbounded test levels: (2, k, 64, 64, 3) uint8."""
    train = per_level_envs(env_id, range(k), 1, mode, EVAL_SEED).reset()["rgb"]
    test = module.make_env(env_id, k, 0, 0, mode, EVAL_SEED + 1).reset()["rgb"]
    return np.stack([train, test])


def policy_frames(module, agent, env_id, num_levels, mode, n, steps, device):
    """Observations after `steps` steps of the agent's own play, on training levels and on test levels."""
    frames = []
    for levels, seed in [(num_levels, EVAL_SEED + 2), (0, EVAL_SEED + 3)]:
        envs = module.make_env(env_id, n, levels, 0, mode, seed)
        obs = envs.reset()["rgb"]
        with torch.inference_mode():
            for _ in range(steps):
                obs = envs.step(agent(torch.as_tensor(obs).to(device))[0].argmax(-1).cpu().numpy())[0]["rgb"]
        frames.append(obs)
        envs.close()
    return np.stack(frames)


def saliency(agent, frames, device):
    """|d logit(argmax action) / d pixel|, max over colour channels, per frame (vanilla gradient saliency)."""
    x = torch.as_tensor(frames, dtype=torch.float32, device=device).requires_grad_(True)
    amp, agent.amp_dtype = agent.amp_dtype, None
    hidden = agent.network(x.permute(0, 3, 1, 2) / 255.0)
    logits = agent.actor(hidden)
    logits.gather(1, logits.argmax(-1, keepdim=True)).sum().backward()
    agent.amp_dtype = amp
    return x.grad.abs().amax(-1).cpu().numpy()


def action_mix(agent, frames, device):
    """The policy's mean probability of moving left, right and jumping on frames (..., 64, 64, 3): a policy that
    drifts left (right < left) never reaches CoinRun's coin, however high its entropy."""
    with torch.inference_mode():
        probs = torch.softmax(agent(torch.as_tensor(frames.reshape(-1, *frames.shape[-3:])).to(device))[0], -1).cpu()
    return {group: float(probs[:, idx].sum(-1).mean()) for group, idx in ACTION_GROUPS.items()}


def feature_shift(agent, frames, device, seed=0):
    """Held-out accuracy of a logistic-regression probe telling train-level from test-level penultimate features
    (0.5: indistinguishable). frames: (2, n, 64, 64, 3); half of each split trains the probe, the rest scores it."""
    with torch.inference_mode():
        feats = [
            agent.network(torch.as_tensor(f).to(device).permute(0, 3, 1, 2).float() / 255.0).float().cpu() for f in frames
        ]
    n = len(feats[0])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    fit, held = perm[: n // 2], perm[n // 2 :]
    x_fit, x_held = torch.cat([feats[0][fit], feats[1][fit]]), torch.cat([feats[0][held], feats[1][held]])
    y_fit = torch.cat([torch.zeros(len(fit)), torch.ones(len(fit))])
    y_held = torch.cat([torch.zeros(len(held)), torch.ones(len(held))])
    mean, std = x_fit.mean(0), x_fit.std(0) + 1e-6
    x_fit, x_held = (x_fit - mean) / std, (x_held - mean) / std
    w, b = torch.zeros(x_fit.shape[1], requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x_fit @ w + b, y_fit) + 1e-3 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((x_held @ w + b > 0).float() == y_held).float().mean())


def shift_sensitivity(agent, frames, device, pixels=4):
    """How much moving the image by `pixels` (up, down, left and right, edge-padded as ppo_procgen_aug.py's random shift
    does) changes the policy and its penultimate features, on frames (..., 64, 64, 3): mean KL(pi(x) || pi(shifted x))
    (with a 95% CI over frames) and mean cosine similarity of the features. What random-shift augmentation is meant to
    make small."""
    x = torch.as_tensor(frames.reshape(-1, *frames.shape[-3:])).to(device)
    h, w = x.shape[1:3]

    def features(x):
        return agent.network(x.permute(0, 3, 1, 2).float() / 255.0).float()

    kls, cosines = [], []
    with torch.inference_mode():
        f0 = features(x)
        logp0 = torch.log_softmax(agent.actor(f0), -1)
        for dy, dx in [(-pixels, 0), (pixels, 0), (0, -pixels), (0, pixels)]:
            rows = (torch.arange(h, device=device) + dy).clamp(0, h - 1)  # clamped indices = edge padding
            cols = (torch.arange(w, device=device) + dx).clamp(0, w - 1)
            f = features(x[:, rows][:, :, cols])
            logp = torch.log_softmax(agent.actor(f), -1)
            kls.append((logp0.exp() * (logp0 - logp)).sum(-1))
            cosines.append(torch.nn.functional.cosine_similarity(f0, f, dim=-1).mean())
    kl = torch.stack(kls).mean(0).cpu().numpy()  # per frame, over the four directions
    half = 1.96 * kl.std(ddof=1) / np.sqrt(len(kl)) if len(kl) > 1 else float("nan")
    return {
        "pixels": pixels,
        "kl": float(kl.mean()),
        "kl_ci95": [float(kl.mean() - half), float(kl.mean() + half)],
        "feature_cosine": float(torch.stack(cosines).mean()),
    }


def representation(agent, frames, device, delta=0.01):
    """The health of the penultimate layer (the shared torso's last Linear + ReLU) on frames (..., 64, 64, 3), the
    statistics Moalla et al. (2024, "No Representation, No Trust") find deteriorating before PPO's performance
    collapses: its feature rank (srank, Kumar et al. 2021: the fewest singular values of the frames x units feature
    matrix that sum to 1 - delta of their total), the fraction of dead units (zero on every frame), the mean L2 norm of
    the pre-activations, and the policy's mean entropy on the same frames. In fp32."""
    x = torch.as_tensor(frames.reshape(-1, *frames.shape[-3:])).to(device).permute(0, 3, 1, 2).float() / 255.0
    with torch.inference_mode():
        pre = agent.network[:-1](x).float()  # make_network ends in Linear, ReLU
        feats = torch.relu(pre)
        logp = torch.log_softmax(agent.actor(feats), -1)
    sv = torch.linalg.svdvals(feats.cpu().double())
    cum = sv.cumsum(0) / sv.sum().clamp_min(1e-12)
    return {
        "units": feats.shape[1],
        "frames": feats.shape[0],
        "feature_rank": int((cum < 1 - delta).sum()) + 1,
        "dead_units": float((feats <= 0).all(0).float().mean()),
        "preactivation_norm": float(pre.norm(dim=-1).mean()),
        "entropy": float(-(logp.exp() * logp).sum(-1).mean()),
    }


def record_videos(agent, env_id, mode, n, out, name, generator, greedy, device):
    """Play up to 4n test episodes keeping only each env's start state and actions (bounded memory), then replay n
    failures and n successes with Procgen's 512x512 render into GIFs. Returns what each chosen episode was."""
    import imageio
    from procgen import ProcgenGym3Env

    num = 4 * n
    env = ProcgenGym3Env(
        num=num, env_name=env_id, num_levels=0, start_level=0, distribution_mode=mode, rand_seed=EVAL_SEED + 4
    )
    states, actions = env.callmethod("get_state"), []
    active, ret = np.ones(num, dtype=bool), np.zeros(num)
    length, completed = np.zeros(num, dtype=np.int64), np.zeros(num, dtype=bool)
    with torch.inference_mode():
        while active.any():
            logits = agent(torch.as_tensor(env.observe()[1]["rgb"]).to(device))[0]
            if not greedy:
                logits = logits - torch.log(
                    -torch.log(torch.rand(logits.shape, generator=generator, device=device).clamp_(1e-20, 1))
                )
            act = logits.argmax(-1).cpu().numpy()
            env.act(act)
            actions.append(act)
            rew, _, first = env.observe()
            ret[active] += rew[active]
            length[active] += 1
            for i in np.flatnonzero(active & first):
                active[i], completed[i] = False, bool(env.get_info()[i]["prev_level_complete"])
    chosen = list(np.flatnonzero(~completed)[:n]) + list(np.flatnonzero(completed)[:n])
    videos = []
    for i in chosen:
        outcome = "coin" if completed[i] else "timeout" if length[i] >= MAX_EPISODE_STEPS else "death"
        replay = ProcgenGym3Env(num=1, env_name=env_id, distribution_mode=mode, render_mode="rgb_array")
        replay.callmethod("set_state", [states[i]])
        frames = []
        for t in range(length[i]):
            replay.act(np.array([actions[t][i]]))
            if t % 2 == 0:
                frames.append(replay.get_info()[0]["rgb"][::2, ::2])
        path = os.path.join(out, f"video_{name.replace('@', '_step')}_{len(videos)}_{outcome}.gif")
        imageio.mimsave(path + ".tmp.gif", frames, duration=1 / 15)
        os.replace(path + ".tmp.gif", path)
        videos.append({"file": os.path.basename(path), "outcome": outcome, "length": int(length[i]), "return": float(ret[i])})
    return videos


def save_grid(path, rows, titles, overlays=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), len(rows[0])
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols, 1.8 * n_rows), squeeze=False)
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.imshow(rows[r][c])
            if overlays is not None:
                ax.imshow(overlays[r][c], cmap="inferno", alpha=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(titles[r])
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=80)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="*", help="checkpoints (.pt) or run folders (their latest checkpoint)")
    p.add_argument("--random", action="store_true", help="also evaluate a uniform random policy (no checkpoint needed)")
    p.add_argument("--episodes-per-level", type=int, default=5)
    p.add_argument("--num-train-levels", type=int, default=None, help="only the first N training levels (default: all)")
    p.add_argument("--test-episodes", type=int, default=1000)
    p.add_argument("--greedy", action="store_true", help="argmax actions instead of sampling")
    p.add_argument("--max-envs", type=int, default=250, help="envs stepped at once")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--show-levels", type=int, default=0, metavar="K", help="PNG of the first frame of K train and K test levels"
    )
    p.add_argument("--videos", type=int, default=0, metavar="N", help="GIFs of N failed and N successful test episodes")
    p.add_argument("--feature-frames", type=int, default=256, help="frames per split for the feature diagnostics (0: skip)")
    p.add_argument(
        "--saliency", type=int, default=0, metavar="N", help="PNG of gradient saliency on N train and N test frames"
    )
    p.add_argument(
        "--out", default=None, help="output folder (default: next to a single checkpoint, else ./generalization_report)"
    )
    opts = p.parse_args(argv)
    if not opts.paths and not opts.random:
        p.error("give at least one checkpoint or run folder, or --random")
    if min(opts.show_levels, opts.saliency, opts.feature_frames, opts.videos) < 0:
        p.error("--show-levels, --saliency, --feature-frames and --videos must be >= 0")
    if min(opts.episodes_per_level, opts.test_episodes, opts.max_envs) <= 0 or (opts.num_train_levels or 1) <= 0:
        p.error("--episodes-per-level, --test-episodes, --max-envs and --num-train-levels must be positive")
    device = torch.device(opts.device)
    entries = []  # (name, module, args, agent)
    for path in opts.paths:
        module, a, ckpt_path, agent, step = load_agent(path, device)
        entries.append(
            (f"{os.path.basename(os.path.dirname(os.path.dirname(ckpt_path)))}@{step}", module, a, agent, ckpt_path)
        )
    if opts.random:
        module = importlib.import_module("ppo_procgen")
        a = (
            entries[0][2]
            if entries
            else {"env_id": "coinrun", "distribution_mode": "easy", "num_levels": 200, "start_level": 0}
        )
        entries.append(("random", module, a, RandomAgent().to(device), None))
    out = opts.out or (os.path.dirname(os.path.dirname(entries[0][4])) if len(opts.paths) == 1 else "generalization_report")
    os.makedirs(out, exist_ok=True)
    if opts.show_levels:
        a, module = entries[0][2], entries[0][1]
        frames = first_frames(module, a["env_id"], a["distribution_mode"], opts.show_levels)
        save_grid(os.path.join(out, "levels.png"), frames, ["train levels", "test levels"])
    results, per_levels = {}, {}
    for name, module, a, agent, ckpt_path in entries:
        if opts.saliency and name != "random":
            frames = policy_frames(
                module, agent, a["env_id"], a["num_levels"], a["distribution_mode"], opts.saliency, 30, device
            )
            maps = saliency(agent, frames.reshape(-1, *frames.shape[2:]), device).reshape(frames.shape[:3] + frames.shape[3:4])
            maps = maps / (maps.reshape(2, opts.saliency, -1).max(-1)[..., None, None] + 1e-12)
            save_grid(os.path.join(out, f"saliency_{name.replace('@', '_step')}.png"), frames, ["train", "test"], maps)
        t0 = time.time()
        print(f"{name}:", flush=True)
        report, per_level = evaluate_agent(module, agent, a, opts, device)
        if opts.videos:
            gen = torch.Generator(device).manual_seed(EVAL_SEED)
            report["videos"] = record_videos(
                agent, a["env_id"], a["distribution_mode"], opts.videos, out, name, gen, opts.greedy, device
            )
        if opts.feature_frames >= 4 and name != "random":
            frames = policy_frames(
                module, agent, a["env_id"], a["num_levels"], a["distribution_mode"], opts.feature_frames, 30, device
            )
            report["feature_shift_probe_accuracy"] = feature_shift(agent, frames, device)
            report["action_mix"] = action_mix(agent, frames, device)
            report["shift_sensitivity"] = shift_sensitivity(agent, frames, device)
            report["representation"] = representation(agent, frames, device)
        report.update(checkpoint=ckpt_path, env_id=a["env_id"], seconds=time.time() - t0, greedy=opts.greedy)
        if name != "random":
            report.update(variant=module.__name__, config=configuration(module, a))
        results[name] = report
        csv_path = os.path.join(out, f"levels_{name.replace('@', '_step')}.csv")
        with open(csv_path + ".tmp", "w") as f:
            f.write(
                "level,episodes,mean_return,completion\n" + "".join(f"{k},{n},{r:.4f},{c:.4f}\n" for k, n, r, c in per_level)
            )
        os.replace(csv_path + ".tmp", csv_path)
        report["hardest_levels"] = [k for k, _, r, _ in sorted(per_level, key=lambda x: (x[2], x[0]))[:10]]
        per_levels[name] = per_level
    data = {"checkpoints": results, "across_checkpoints": across_checkpoints(results)}
    write(out, {**data, "level_agreement": level_agreement(per_levels)}, opts)
    print(open(os.path.join(out, "report.md")).read())


def configuration(module, a):
    """A checkpoint's training configuration: its args but for the seed and what a run may change (names, folders,
    length, speed options). Checkpoints with equal configurations are seeds of one experiment."""
    skip = {"seed", "exp_name", "runs_dir", "resume", "num_iterations"} | module.RESUMABLE  # the last from the length
    return json.dumps({k: v for k, v in sorted(a.items()) if k not in skip})


def across_checkpoints(results):
    """Mean +- std (and a 95% Student-t CI) of train, test and gap over the checkpoints of each (variant,
    configuration) that has several, and each group's difference from the base's (`vs_base`, a 95% CI from Welch's
    standard error) when the base has one such group: {label: {"checkpoints": names, "train"|"test"|"gap":
    aggregate.seed_stats, "vs_base": {split: {"difference", "ci95"}}}}. Different configurations are never averaged
    together."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark"))
    from aggregate import difference, seed_stats  # only needed here: a report of one checkpoint runs without benchmark/

    groups = {}
    for name, r in results.items():
        if "config" in r:
            groups.setdefault((r["variant"], r["config"]), []).append(name)
    summary = {}
    for i, ((variant, _), names) in enumerate(groups.items()):
        if len(names) < 2:
            continue
        label = variant if sum(v == variant for v, _ in groups) == 1 else f"{variant} (configuration {i + 1})"
        summary[label] = {"checkpoints": names}
        for split in ["train", "test", "gap"]:
            summary[label][split] = seed_stats([results[n][split]["mean"] for n in names])
    base = summary.get("ppo_procgen")
    for label, s in summary.items():
        if base is not None and label != "ppo_procgen":
            s["vs_base"] = {split: difference(s[split], base[split]) for split in ["train", "test", "gap"]}
    return summary


def level_agreement(per_levels):
    """Do policies find the same training levels hard? For policies evaluated on the same levels ({name: [(level,
    episodes, mean return, completion)]}): the Pearson correlation of their per-level mean returns, pair by pair (None
    where one policy scores every level alike), and the levels that every policy but the random one always failed or
    always finished. {} for fewer than two policies or different levels."""
    names = list(per_levels)
    levels = [row[0] for row in per_levels[names[0]]] if names else []
    if len(names) < 2 or any([row[0] for row in p] != levels for p in per_levels.values()):
        return {}
    returns = np.array([[row[2] for row in per_levels[n]] for n in names])
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(returns)
    trained = np.array([[row[3] for row in per_levels[n]] for n in names if n != "random"]).reshape(-1, len(levels))
    return {
        "policies": names,
        "levels": [int(k) for k in levels],
        "correlation": [[float(c) if np.isfinite(c) else None for c in row] for row in corr],
        "failed_by_all": [int(k) for k, c in zip(levels, trained.T) if len(c) and (c == 0).all()],
        "finished_by_all": [int(k) for k, c in zip(levels, trained.T) if len(c) and (c == 1).all()],
    }


def short_name(name):
    """coinrun__ppo_procgen__1__1795642360@1048576 -> ppo_procgen s1 @1048576 (other names unchanged)."""
    parts = name.split("__")
    return f"{parts[1]} s{parts[2]} @{name.split('@')[1]}" if len(parts) == 4 and "@" in name else name


def write(out, data, opts):
    for name, text in [("report.json", json.dumps(data, indent=2)), ("report.md", markdown(data, opts))]:
        with open(os.path.join(out, name) + ".tmp", "w") as f:
            f.write(text)
        os.replace(os.path.join(out, name) + ".tmp", os.path.join(out, name))


def markdown(data, opts):
    policy = "greedy (argmax)" if opts.greedy else "stochastic"
    lines = [
        f"# Generalization report\n\n{opts.episodes_per_level} episodes per training level, {opts.test_episodes} test "
        f"episodes on unbounded levels, {policy} policy, BN in eval mode. CI: mean +- 1.96 SE (episodes).\n",
        "| checkpoint | train | test | gap (train - test) | train completion | test completion | test timeouts "
        "| normalized test | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in data["checkpoints"].items():
        ci = lambda s: f"{s['mean']:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]"
        norm = f"{r['test']['normalized']:.2f}" if "normalized" in r["test"] else "-"
        lines.append(
            f"| {name} | {ci(r['train'])} | {ci(r['test'])} | {ci(r['gap'])} | {r['train']['completion']:.1%} | "
            f"{r['test']['completion']:.1%} | {r['test']['timeout']:.1%} | {norm} | {r['seconds']:.0f} |"
        )
    for label, s in data["across_checkpoints"].items():
        lines.append(
            f"| {label}: mean +- std over its {len(s['checkpoints'])} checkpoints | {s['train']['mean']:.2f} +- "
            f"{s['train']['std']:.2f} | {s['test']['mean']:.2f} +- {s['test']['std']:.2f} | {s['gap']['mean']:.2f} +- "
            f"{s['gap']['std']:.2f} | | | | | |"
        )
    versus = {label: s["vs_base"] for label, s in data["across_checkpoints"].items() if "vs_base" in s}
    if versus:
        lines.append("\nDifference from ppo_procgen (mean over checkpoints minus the base's; 95% CI from Welch's standard")
        lines.append("error with the smaller group's degrees of freedom):\n")
        lines.append("| variant | train | test | gap |\n|---|---|---|---|")
        for label, d in versus.items():
            cells = [f"{d[k]['difference']:+.2f}" + (f" [{d[k]['ci95'][0]:+.2f}, {d[k]['ci95'][1]:+.2f}]" if d[k]["ci95"]
                     else "") for k in ["train", "test", "gap"]]  # fmt: skip
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("\nHardest training levels (lowest mean return first):\n")
    for name, r in data["checkpoints"].items():
        lines.append(f"- {name}: {', '.join(map(str, r['hardest_levels']))}")
    for name, r in data["checkpoints"].items():
        if r.get("videos"):
            lines.append(f"\nEpisodes recorded for {name} (test levels):\n")
            lines += [f"- `{v['file']}`: {v['outcome']}, {v['length']} steps, return {v['return']:.0f}" for v in r["videos"]]
    agree = data["level_agreement"]
    if agree:
        short = [short_name(n) for n in agree["policies"]]
        lines.append("\nLevel agreement: correlation of per-level mean returns on the training levels (do the policies")
        lines.append("find the same levels hard?):\n")
        lines.append("| | " + " | ".join(short) + " |")
        lines.append("|---" * (len(short) + 1) + "|")
        for s, row in zip(short, agree["correlation"]):
            lines.append(f"| {s} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in row) + " |")
        lines.append(f"\nLevels every trained policy always failed: {agree['failed_by_all'] or 'none'}; always finished: "
                     f"{len(agree['finished_by_all'])} of {len(agree['levels'])}.")  # fmt: skip
    probes = {
        n: r["feature_shift_probe_accuracy"] for n, r in data["checkpoints"].items() if "feature_shift_probe_accuracy" in r
    }
    if probes:
        lines.append("\nFeature shift: held-out accuracy of a linear probe telling train-level from test-level penultimate")
        lines.append("features (0.5 = indistinguishable):\n")
        lines += [f"- {n}: {acc:.3f}" for n, acc in probes.items()]
    mixes = {n: r["action_mix"] for n, r in data["checkpoints"].items() if "action_mix" in r}
    if mixes:
        lines.append("\nAction mix: mean probability over the same frames, reached after 30 greedy steps (uniform policy:")
        lines.append("left 0.20, right 0.20, jump 0.20):\n")
        lines += [f"- {n}: " + ", ".join(f"{k} {v:.2f}" for k, v in m.items()) for n, m in mixes.items()]
    shifts = {n: r["shift_sensitivity"] for n, r in data["checkpoints"].items() if "shift_sensitivity" in r}
    if shifts:
        pixels = next(iter(shifts.values()))["pixels"]
        lines.append(f"\nShift sensitivity: the same frames moved {pixels} pixels up, down, left or right (edge-padded, as")
        lines.append("the augmentation does): mean KL(policy on the frame || policy on the moved frame) and mean cosine")
        lines.append("similarity of the penultimate features (1 = unchanged):\n")
        lines += [
            f"- {n}: KL {r['kl']:.4f} [{r['kl_ci95'][0]:.4f}, {r['kl_ci95'][1]:.4f}], feature cosine {r['feature_cosine']:.3f}"
            for n, r in shifts.items()
        ]
    reps = {n: r["representation"] for n, r in data["checkpoints"].items() if "representation" in r}
    if reps:
        r0 = next(iter(reps.values()))
        lines.append(f"\nRepresentation on the same {r0['frames']} frames: the penultimate layer's feature rank (of")
        lines.append(f"{r0['units']} units; srank, 99% of the singular values' sum), dead units (zero on every frame), mean")
        lines.append("pre-activation norm, and the policy's mean entropy (uniform: 2.71). Falling rank and growing norm")
        lines.append("preceded PPO's collapses in Moalla et al. (2024). The frames are each policy's own, so a collapsed")
        lines.append("policy's less varied frames lower its rank too:\n")
        lines.append("| checkpoint | feature rank | dead units | pre-activation norm | entropy |\n|---|---|---|---|---|")
        lines += [
            f"| {n} | {r['feature_rank']} | {r['dead_units']:.1%} | {r['preactivation_norm']:.1f} | {r['entropy']:.3f} |"
            for n, r in reps.items()
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
