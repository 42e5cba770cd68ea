"""How large is each PPO loss term's gradient at the no-BN seed-1 run's 2.49M checkpoint (where the forks start), and
does --max-grad-norm (0.5) clip? (session 28)

Run from the repository root: python benchmark/results/fork_nobn_norm_reward/grad_terms.py [STEP]
Collects one rollout (64 envs x 256 steps, the run's own batch) with the checkpoint's policy, computes GAE with the raw
rewards and with them divided by 0.79 (the running std the --norm-reward fork's scaler settled at; the value head was
trained on raw rewards), and on 4 minibatches of 2,048 the norm of each weighted loss term's gradient (the clipped
policy loss, -ent_coef x entropy, vf_coef x value loss), of their sum, and the factor clipping multiplies it by.
Output: grad_terms.md. fp32, one thread, ~2.5 min of CPU.
"""

import os
import sys
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, os.getcwd())
import ppo_procgen_nobn as m  # noqa: E402

RUN = "benchmark/results/long_seed1/runs/coinrun__ppo_procgen_nobn__1__1795614836"
STEP = int(sys.argv[1]) if len(sys.argv) > 1 else 2490368
torch.set_num_threads(1)
torch.manual_seed(0)
ckpt = torch.load(f"{RUN}/checkpoints/step_{STEP:010d}.pt", weights_only=False)
a = ckpt["args"]
agent = m.Agent(15, a["arch"], tuple(a["channels"]), a["pool"])
agent.load_state_dict(ckpt["model"])
n_envs, n_steps = 64, 256
envs = m.make_env("coinrun", n_envs, 200, 0, "easy", 123)
obs = torch.zeros((n_steps, n_envs, 64, 64, 3), dtype=torch.uint8)
actions, logprobs, rewards, dones, values = (torch.zeros((n_steps, n_envs)) for _ in range(5))
next_obs, next_done = torch.as_tensor(envs.reset()["rgb"]), torch.zeros(n_envs)
with torch.inference_mode():
    for t in range(n_steps):
        obs[t], dones[t] = next_obs, next_done
        action, logprob, _, value = agent.get_action_and_value(next_obs)
        actions[t], logprobs[t], values[t] = action, logprob, value
        o, r, d, _ = envs.step(action.numpy())
        rewards[t], next_obs, next_done = (
            torch.as_tensor(r),
            torch.as_tensor(o["rgb"]),
            torch.as_tensor(d, dtype=torch.float32),
        )
    next_value = agent.get_value(next_obs)
print(f"step {STEP}: {int((rewards > 0).sum())} coin steps, {int(dones.sum())} episode starts in {n_steps * n_envs} steps")
b_obs, b_act, b_logp = obs.flatten(0, 1), actions.flatten().long(), logprobs.flatten()
params = list(agent.parameters())


def term_norms(scale):
    """Gradient norm of each weighted term and of their sum, mean over 4 minibatches of 2048, rewards divided by
    `scale`."""
    adv = m.compute_gae(rewards / scale, values, dones, next_value, next_done, a["gamma"], a["gae_lambda"])
    ret = (adv + values).flatten()
    adv, vals = adv.flatten(), values.flatten()
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
        out.append(norms)
    return {k: np.mean([o[k] for o in out]) for k in out[0]}


print("| rewards | policy | entropy | value | total | clip factor (0.5 / total) | value loss |")
print("|---|---|---|---|---|---|---|")
for label, scale in [("raw (coin 10)", 1.0), ("/ 0.79 (coin 12.7)", 0.79)]:
    n = term_norms(scale)
    f = min(1.0, a["max_grad_norm"] / n["total"])
    cells = [f"{n[k]:.3f}" for k in ["policy", "entropy", "value", "total"]] + [f"{f:.2f}", f"{n['v_loss']:.3f}"]
    print(f"| {label} | " + " | ".join(cells) + " |")
