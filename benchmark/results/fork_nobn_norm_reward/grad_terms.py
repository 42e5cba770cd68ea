"""How large is each PPO loss term's gradient at a checkpoint, how much of it lands in the layers the policy and value
share, and does --max-grad-norm (0.5) clip? (session 28; checkpoints as arguments, the shared-layer columns and the
checkpoint's own next rollout, session 29)

Run from the repository root:
  python benchmark/results/fork_nobn_norm_reward/grad_terms.py > .../grad_terms.md          # the no-BN seed-1 fork point
  python benchmark/results/fork_nobn_norm_reward/grad_terms.py CKPT [CKPT ...] > OUT.md     # one row per checkpoint
  ROLLOUT_SEED=7 python ...                                   # other sampled actions (and minibatches) than seed 0

Per checkpoint: its next rollout (64 envs x 256 steps, the runs' own batch, from the envs' states saved in it, as the
run would have gone on; BN, if any, in eval mode as the scripts act), GAE, then on 4 minibatches of 2,048 (BN in train
mode, as the scripts update) the norm of each weighted loss term's gradient (the clipped policy loss, -ent_coef x
entropy, vf_coef x value loss), of their sum, the factor clipping multiplies it by, and, in the shared torso alone
(`agent.network`, without the two heads), the norms of the policy and value terms and the cosine between them.
Without arguments: the no-BN seed-1 run at 2,490,368 (where the
forks start), with raw rewards and with them divided by 0.79 (the running std the --norm-reward fork's scaler settled
at; the value head was trained on raw rewards). fp32, one thread, ~2.5 min of CPU per row. (Session 28's table
rolled out from freshly reset envs instead: all 64 episodes at their start at once, a batch unlike the run's, whose
BN statistics, for a BN network, move the values far off: ../long_seed1/bn_mismatch.md.)
"""

import importlib
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, os.getcwd())
from benchmark.bn_mismatch import replay_next_rollout  # noqa: E402

RUN = "benchmark/results/long_seed1/runs/coinrun__ppo_procgen_nobn__1__1795614836"
ROLLOUT_SEED = int(os.environ.get("ROLLOUT_SEED", 0))
CKPTS = sys.argv[1:] or [f"{RUN}/checkpoints/step_0002490368.pt"]
SCALES = [("raw (coin 10)", 1.0)] + ([("/ 0.79 (coin 12.7)", 0.79)] if len(sys.argv) == 1 else [])
torch.set_num_threads(1)


def term_norms(m, agent, a, batch, scale):
    """Mean over 4 minibatches of 2048 of each weighted term's gradient norm (all parameters and the torso alone), the
    total's, and the torso's policy/value cosine; rewards divided by `scale`."""
    obs, actions, logp, values, rewards, dones, next_value, next_done = batch
    logprobs = logp.gather(-1, actions[..., None]).squeeze(-1)
    adv = m.compute_gae(rewards / scale, values, dones, next_value, next_done, a["gamma"], a["gae_lambda"])
    ret, adv, vals = (adv + values).flatten(), adv.flatten(), values.flatten()
    b_obs, b_act, b_logp = obs.flatten(0, 1), actions.flatten(), logprobs.flatten()
    params = list(agent.parameters())
    shared = {id(q) for q in agent.network.parameters()}
    torso = torch.cat([torch.full((p.numel(),), id(p) in shared) for p in params])
    out = []
    for k in range(4):
        idx = torch.randperm(len(b_obs), generator=torch.Generator().manual_seed(k))[:2048]
        _, newlogp, entropy, newvalue = agent.get_action_and_value(b_obs[idx], b_act[idx])
        ratio = (newlogp - b_logp[idx]).exp()
        pg, v = m.ppo_losses(ratio, adv[idx], newvalue, vals[idx], ret[idx], SimpleNamespace(**a))
        terms = {"policy": pg, "entropy": -a["ent_coef"] * entropy.mean(), "value": a["vf_coef"] * v}
        norms, grads = {}, {}
        for name, loss in terms.items():
            g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            grads[name] = torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, params)])
            norms[name] = grads[name].norm().item()
        norms["total"] = sum(grads.values()).norm().item()
        norms["v_loss"] = v.item()
        gp, gv = grads["policy"][torso], grads["value"][torso]
        norms["torso_policy"], norms["torso_value"] = gp.norm().item(), gv.norm().item()
        norms["cos"] = torch.nn.functional.cosine_similarity(gp, gv, dim=0).item()
        out.append(norms)
    return {k: np.mean([o[k] for o in out]) for k in out[0]}


print("| checkpoint | rewards | coin steps | policy | entropy | value | total | clip factor (0.5 / total) | value loss "
      "| torso: policy | torso: value | torso: cos(policy, value) |")  # fmt: skip
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for path in CKPTS:
    torch.manual_seed(ROLLOUT_SEED)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # missing, not a torch file, or truncated
        sys.exit(f"grad_terms.py: error: {path} is not a readable checkpoint ({type(e).__name__})")
    if ckpt.get("variant") not in ("ppo_procgen", "ppo_procgen_nobn"):
        sys.exit(f"grad_terms.py: error: {path}: only ppo_procgen and ppo_procgen_nobn checkpoints")
    m, a = importlib.import_module(ckpt["variant"]), ckpt["args"]
    agent = m.Agent(15, a["arch"], tuple(a["channels"]), a["pool"])
    agent.load_state_dict(ckpt["model"])
    if a.get("norm_reward"):
        sys.exit(f"grad_terms.py: error: {path}: trained with --norm-reward; this replays raw rewards")
    batch = replay_next_rollout(m, agent, ckpt, 256)  # 256 steps of 64 envs: the runs' own batch
    agent.train()  # the update's view: BN, if any, with each minibatch's statistics
    label = f"{ckpt['variant']} seed {a['seed']} at {ckpt['global_step']:,}"
    for scale_label, scale in SCALES:
        n = term_norms(m, agent, a, batch, scale)
        f = min(1.0, a["max_grad_norm"] / n["total"])
        cells = [f"{n[k]:.3f}" for k in ["policy", "entropy", "value", "total"]] + [f"{f:.2f}", f"{n['v_loss']:.3f}"]
        cells += [f"{n[k]:.3f}" for k in ["torso_policy", "torso_value", "cos"]]
        print(f"| {label} | {scale_label} | {int((batch[4] > 0).sum())} | " + " | ".join(cells) + " |", flush=True)
