"""The speed options (channels-last, bf16 autocast, compile) compute what fp32 computes, within stated tolerances;
--retain-memory stops the page faults it is for; the CUDA-graph rollout samples and scores as the eager step does."""

import copy
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
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


@pytest.mark.parametrize("script", ["ppo_procgen", "ppo_procgen_aug", "ppo_procgen_nobn"])
def test_amp_auto_uses_bf16_only_where_the_cpu_has_it(script, monkeypatch, capsys):
    """--amp auto (the default) is bf16 on a CPU with AVX512-BF16 or AMX and fp32 on one without, where bf16 is
    emulated (9x slower on an AVX2 EPYC, README); an explicit --amp bf16 is kept there, with a warning."""
    module = __import__(script)
    for avx512_bf16, amx, amp, expected in [
        (True, False, "auto", torch.bfloat16),
        (False, True, "auto", torch.bfloat16),
        (False, False, "auto", None),
        (False, False, "bf16", torch.bfloat16),
        (False, False, "none", None),
    ]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        agent = module.Agent(15, "espeholt", (16, 32, 32), "flatten")
        options = SimpleNamespace(channels_last=True, amp=amp, compile=False, retain_memory=False)
        module.set_speed_options(agent, options, torch.device("cpu"))
        out, err = capsys.readouterr()
        assert agent.amp_dtype == expected, (avx512_bf16, amx, amp)
        assert ("no native bf16" in out) == (amp == "auto" and expected is None)
        assert ("emulated and slow" in err) == (amp == "bf16")


def test_compile_compiles_the_update_only():
    """--compile: set_speed_options returns a compiled agent for the update's forward and backward passes, which share
    the agent's weights and match fp32 as the eager fast path does; the agent itself (acting, evaluation) stays eager."""
    torch.manual_seed(0)
    ref = base.Agent(15, "espeholt", (16, 32, 32), "gap")  # as test_fast_path_matches_fp32, with its tolerances
    for p in ref.parameters():
        if p.dim() == 2 and p.shape[0] in (1, 15):
            torch.nn.init.normal_(p, std=0.05)
    fast = copy.deepcopy(ref)
    options = SimpleNamespace(channels_last=True, amp="bf16", compile=True, retain_memory=False)
    forward, _ = base.set_speed_options(fast, options, torch.device("cpu"))
    assert forward is not fast and fast._compiled_call_impl is None
    x, actions = random_obs(64, seed=3), torch.randint(0, 15, (64,), generator=torch.Generator().manual_seed(4))
    logits_ref, value_ref, grad_ref = loss_and_grads(ref, x, actions)
    logits, value, grad = loss_and_grads(forward, x, actions)
    assert (logits - logits_ref).abs().max() < 0.05 and (value - value_ref).abs().max() < 0.05
    assert torch.nn.functional.cosine_similarity(grad, grad_ref, dim=0) > 0.99
    assert torch.equal(grad, torch.cat([p.grad.flatten() for p in fast.parameters()]))  # the agent's own weights
    value_fast = fast.get_action_and_value(x, actions, forward)[3]
    assert torch.allclose(value_fast, value, atol=1e-6)
    assert fast._compiled_call_impl is None  # still eager after the compiled passes


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


class FixedLogits(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits.expand(len(x), -1), torch.zeros(len(x))


def test_graph_policy_samples_the_policy_and_scores_its_action():
    # Gumbel-max draws actions with the softmax's probabilities (the empirical frequencies of 40,000 draws)...
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 0.5, 0.0, -1.0, 1.0]])
    action, logprob, entropy, _ = base.CudaGraphPolicy(FixedLogits(logits)).step(torch.zeros(40_000, 1))
    frequencies = torch.bincount(action, minlength=5) / 40_000
    assert (frequencies - torch.softmax(logits[0], -1)).abs().max() < 0.01
    assert torch.allclose(logprob, torch.log_softmax(logits[0], -1)[action]) and entropy is None
    # ...and on the real network its log-probability and value are get_action_and_value's for the same action
    agent = base.Agent(15).eval()
    x = random_obs(16, seed=5)
    action, logprob, _, value = base.CudaGraphPolicy(agent).step(x)
    _, logprob_ref, _, value_ref = agent.get_action_and_value(x, action)
    assert torch.allclose(logprob, logprob_ref, atol=1e-5) and torch.allclose(value, value_ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need cuda")
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_cuda_graph_follows_the_updates(mode):
    """The replayed graph computes the eager step's log-probabilities and values, also after optimizer steps and BN
    refreshes (it reads weights and statistics in place), and a replay moves BN's running averages as one eager step
    does (train mode; eval mode: not at all), so the capture and its warm-up leave them alone."""

    def buffers():
        return {k: v.clone() for k, v in agent.named_buffers()}

    torch.manual_seed(0)
    device = torch.device("cuda")
    agent = base.Agent(15).to(device)
    base.set_speed_options(agent, SimpleNamespace(channels_last=True, amp="bf16", compile=False, retain_memory=False), device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    x = random_obs(64, seed=6).to(device)
    with torch.inference_mode():
        base.refresh_bn_stats(agent, x, 32)
    policy, last_value = base.CudaGraphPolicy(agent), None
    for round in range(3):
        agent.train(mode == "train")
        with torch.inference_mode():
            start = buffers()
            action, logprob, _, value = (t if t is None else t.clone() for t in policy(x))
            after = buffers()
            agent.load_state_dict(start, strict=False)
            _, logprob_ref, _, value_ref = agent.get_action_and_value(x, action)
            assert all(torch.allclose(after[k].double(), v.double(), atol=1e-6) for k, v in buffers().items())
        assert torch.allclose(logprob, logprob_ref, atol=1e-3) and torch.allclose(value, value_ref, atol=1e-3)
        assert last_value is None or (value - last_value).abs().max() > 1e-2  # the update below changed the outputs
        last_value = value
        agent.train()  # an update and a BN refresh, which the next replay must follow
        logits, v = agent(x)
        optimizer.zero_grad()
        (v.pow(2).mean() - logits.log_softmax(-1)[:, 0].mean()).backward()
        optimizer.step()
        with torch.inference_mode():
            base.refresh_bn_stats(agent, random_obs(64, seed=7 + round).to(device), 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need cuda")
def test_cuda_graph_evaluation_plays_as_the_eager_full_batch():
    """Evaluation through the graph of the network's forward pass (--cuda-graph) plays the episodes that the eager
    forward pass over the same full batch plays (the CPU test checks the full batch against the shrinking one)."""
    torch.manual_seed(0)
    device = torch.device("cuda")
    agent = base.Agent(15).to(device)
    base.set_speed_options(agent, SimpleNamespace(channels_last=True, amp="bf16", compile=False, retain_memory=False), device)
    with torch.inference_mode():
        agent.actor.weight.mul_(300)  # logits that depend on the frame (at init they barely do)
        base.refresh_bn_stats(agent, random_obs(64, seed=8).to(device), 32)
    results = []
    for forward in [agent, base.CudaGraphPolicy(agent, sample=False)]:
        envs = base.make_env("coinrun", 8, 200, 0, "easy", 11)
        results.append(base.evaluate(agent, envs, torch.Generator(device).manual_seed(3), forward=forward))
        envs.close()
    assert len(set(results[0][1])) > 1
    for eager, graphed in zip(*results):
        assert np.array_equal(eager, graphed)


def test_update_forward_skips_the_distribution_checks():
    """The update's Categorical is built without argument checks: on cuda each check makes the host wait for the GPU
    (test_cuda_update_step_never_waits_for_the_gpu), so the host could not queue the next kernels ahead of it."""
    agent = base.Agent(15)
    with torch.no_grad():
        agent.actor.bias.fill_(float("nan"))
    _, logprob, _, _ = agent.get_action_and_value(random_obs(4, seed=1), torch.zeros(4, dtype=torch.long))
    assert logprob.isnan().all()  # with the checks on, NaN logits raise a ValueError


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs cuda")
def test_cuda_update_step_never_waits_for_the_gpu():
    """A minibatch step as the scripts take it (forward, losses, clip fraction, backward, clipping, Adam) runs with
    CUDA's sync debug mode raising on any host wait, so the host can queue minibatches ahead of the GPU."""
    torch.manual_seed(0)
    device = torch.device("cuda")
    args = SimpleNamespace(channels_last=True, amp="bf16", compile=False, retain_memory=False, norm_adv=True,
                           clip_coef=0.2, clip_vloss=True)  # fmt: skip
    agent = base.Agent(15).to(device)
    forward, scaler = base.set_speed_options(agent, args, device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-4, eps=1e-5)
    x, actions = random_obs(256, seed=2).to(device), torch.randint(0, 15, (256,), device=device)
    old_logprob, old_value = torch.full((256,), -2.7, device=device), torch.zeros(256, device=device)
    returns = torch.ones(256, device=device)

    def step():
        _, newlogprob, entropy, newvalue = agent.get_action_and_value(x, actions, forward)
        ratio = (newlogprob - old_logprob).exp()
        clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()
        pg_loss, v_loss = base.ppo_losses(ratio, returns - old_value, newvalue, old_value, returns, args)
        optimizer.zero_grad()
        scaler.scale(pg_loss - 0.01 * entropy.mean() + 0.5 * v_loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
        scaler.step(optimizer)
        scaler.update()
        return clipfrac

    step()  # warm-up: cuDNN's and cuBLAS's set-up, Adam's state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        clipfracs = [step() for _ in range(2)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert 0 <= torch.stack(clipfracs).mean().item() <= 1
