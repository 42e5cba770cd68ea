"""Does bf16 autocast bias the update at the no-BN run's last checkpoint before its collapse? (session 13)

Run from the repository root: python benchmark/results/long_seed1/bf16_check.py
Loads the 2,490,368-step checkpoint, collects 2,048 observations with its policy (64 envs x 32 steps), and compares the
gradient of each loss term (entropy bonus, policy gradient with random advantages, value) under the default bf16 +
channels-last against fp32, on the same weights and batch.
"""

import copy
import os
import sys
from types import SimpleNamespace

import torch

sys.path.insert(0, os.getcwd())
import ppo_procgen_nobn as m  # noqa: E402

RUN = "benchmark/results/long_seed1/runs/coinrun__ppo_procgen_nobn__1__1795614836"
torch.set_num_threads(1)
torch.manual_seed(0)  # the policy samples the actions that collect the batch
ckpt = torch.load(f"{RUN}/checkpoints/step_0002490368.pt", weights_only=False)
args = ckpt["args"]
fp32 = m.Agent(15, args["arch"], tuple(args["channels"]), args["pool"])
fp32.load_state_dict(ckpt["model"])
envs = m.make_env("coinrun", 64, 200, 0, "easy", 123)
obs = [torch.as_tensor(envs.reset()["rgb"])]
with torch.no_grad():
    for _ in range(31):
        action = fp32.get_action_and_value(obs[-1])[0]
        obs.append(torch.as_tensor(envs.step(action.numpy())[0]["rgb"]))
x, actions = torch.cat(obs), torch.arange(64 * 32) % 15
advantages = torch.randn(len(x), generator=torch.Generator().manual_seed(0))
bf16 = copy.deepcopy(fp32)
options = SimpleNamespace(channels_last=True, amp="bf16", compile=False, retain_memory=False)
m.set_speed_options(bf16, options, torch.device("cpu"))


def grads(agent, term):
    agent.zero_grad()
    _, logprob, entropy, value = agent.get_action_and_value(x, actions)
    loss = {"entropy": -entropy.mean(), "policy": -(logprob * advantages).mean(), "value": ((value - 5.0) ** 2).mean()}
    loss[term].backward()
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in agent.parameters()])
    return flat, entropy.mean().item()


print("| loss term | gradient cosine, bf16 vs fp32 | norm ratio | mean entropy fp32 / bf16 |\n|---|---|---|---|")
for term in ["entropy", "policy", "value"]:
    (g32, e32), (g16, e16) = grads(fp32, term), grads(bf16, term)
    cos = torch.nn.functional.cosine_similarity(g16, g32, dim=0).item()
    print(f"| {term} | {cos:.5f} | {(g16.norm() / g32.norm()).item():.4f} | {e32:.4f} / {e16:.4f} |")
