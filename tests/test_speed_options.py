"""The speed options (channels-last, bf16 autocast, compile) compute what fp32 computes, within stated tolerances;
--retain-memory stops the page faults it is for."""

import copy
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from test_ppo_procgen import random_obs

import ppo_procgen as base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loss_and_grads(agent, x, actions):
    agent.zero_grad()
    logits, value = agent(x)
    logp = torch.log_softmax(logits, -1).gather(1, actions[:, None]).squeeze(1)
    (-(logp * torch.linspace(-1, 1, len(x))).mean() + 0.5 * ((value - 1.0) ** 2).mean()).backward()
    return logits.detach(), value.detach(), torch.cat([p.grad.flatten() for p in agent.parameters()])


@pytest.mark.parametrize("arch", ["impala", "espeholt", "nature"])
@pytest.mark.parametrize(
    "options, logit_atol, grad_cos",
    [
        (dict(channels_last=True, amp="none", compile=False, retain_memory=False), 1e-4, 0.9999),
        (dict(channels_last=True, amp="bf16", compile=False, retain_memory=False), 0.05, 0.99),
        (dict(channels_last=False, amp="bf16", compile=False, retain_memory=False), 0.05, 0.99),
    ],
)
def test_fast_path_matches_fp32(arch, options, logit_atol, grad_cos):
    torch.manual_seed(0)
    ref = base.Agent(15, arch, (16, 32, 32), "gap")
    for p in ref.parameters():  # trained-looking heads: the default 0.01-std actor head makes logits trivially close
        if p.dim() == 2 and p.shape[0] in (1, 15):
            torch.nn.init.normal_(p, std=0.05)
    fast = copy.deepcopy(ref)
    base.set_speed_options(fast, SimpleNamespace(**options), torch.device("cpu"))
    x, actions = random_obs(128, seed=3), torch.randint(0, 15, (128,), generator=torch.Generator().manual_seed(4))
    logits_ref, value_ref, grad_ref = loss_and_grads(ref, x, actions)
    logits, value, grad = loss_and_grads(fast, x, actions)
    assert logits.dtype == torch.float32 and value.dtype == torch.float32
    assert (logits - logits_ref).abs().max() < logit_atol
    assert (value - value_ref).abs().max() < logit_atol
    assert torch.nn.functional.cosine_similarity(grad, grad_ref, dim=0) > grad_cos
    assert (grad.norm() / grad_ref.norm() - 1).abs() < 1 - grad_cos + 0.01


PAGE_FAULTS = """
import resource, sys, torch
sys.path.insert(0, sys.argv[1])
import ppo_procgen
retained = ppo_procgen.retain_freed_memory() if sys.argv[2] == "1" else None
for step in range(12):
    if step == 2:  # after warm-up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(64 << 20, dtype=torch.uint8)  # 64 MB, like a minibatch's first activations, freed at once
print(retained, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_retain_memory_stops_page_faults_on_big_blocks():
    def faults(retain):
        out = subprocess.run([sys.executable, "-c", PAGE_FAULTS, ROOT, retain], capture_output=True, text=True, check=True)
        return out.stdout.split()

    (_, without), (retained, with_) = faults("0"), faults("1")
    assert retained == "True"
    assert int(without) > 9 * 16_384  # each of the 10 blocks mapped afresh: 16,384 pages of 4 KB
    # The same memory reused: alone on a machine 0 faults; under load (the full suite) the kernel has been seen to
    # re-fault 4 of the 10 blocks, so the bar is "at most half", which a malloc that still unmaps fails by far.
    assert int(with_) < int(without) / 2
