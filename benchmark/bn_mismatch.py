"""Where losses/rollout_kl comes from: the acting policy (and value) vs. the one the PPO update sees, from a base checkpoint.

The base variant acts in eval mode (BN running statistics, re-estimated after every update) and updates in train mode
(statistics of each minibatch). This collects the checkpoint's next rollout exactly as training would (same weights,
BN buffers and env states), then measures, over that rollout, the exact mean KL(acting || other), the mean and rms
of (other - acting) value, and other's unclipped value loss against the update's targets (GAE lambda-returns from the
acting values), for:
- train mode, minibatches of each size given (what the update's first minibatch sees, so rollout_kl's expectation),
- eval mode in fp32 and eval mode at the update's batch size (pure numerics: bf16 rounding, batch-size kernels),
- eval mode after re-estimating the statistics on this rollout (how far the refresh after an update moves the policy
  by itself; with --bn-update running this is what replaces the ratio's mismatch),
- eval mode with statistics estimated on the rollout's first half, on its second half vs. the second half's own
  statistics: same weights, so this is pure sampling noise (which levels and episode phases a rollout holds);
  --per-layer splits it by BN layer (only that layer's statistics swapped).
Usage: python benchmark/bn_mismatch.py CHECKPOINT_OR_RUN_DIR [--num-steps 256] [--minibatch-sizes 512 2048 8192]
                                       [--per-layer]
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ppo_procgen as base  # noqa: E402


def kl(logp, logq):
    return (logp.exp() * (logp - logq)).sum(-1).mean().item()


@torch.inference_mode()
def policy_in_minibatches(agent, obs, minibatch_size, training, generator):
    """Log-policy and value on every observation, computed in shuffled minibatches in train or eval mode; BN buffers
    untouched."""
    buffers = {k: v.clone() for k, v in agent.named_buffers()}
    agent.train(training)
    perm = torch.randperm(len(obs), generator=generator)
    logp, values = torch.empty(len(obs), agent.actor.out_features), torch.empty(len(obs))
    for idx in perm.split(minibatch_size):
        logits, values[idx] = agent(obs[idx])
        logp[idx] = torch.log_softmax(logits, -1)
    agent.load_state_dict(buffers, strict=False)
    return logp, values


@torch.inference_mode()
def replay_next_rollout(m, agent, ckpt, num_steps):
    """A checkpoint's next rollout as its run would have collected it: its envs' saved states and observations, the
    agent in eval mode (as the scripts act), actions sampled with torch's global RNG, rewards scaled as the run scaled
    them. m: the variant's module. Returns (num_steps, num_envs, ...) tensors obs, actions, logp (the log-policy over
    all actions), values, rewards, dones (obs[t] starts an episode), then next_value and next_done."""
    a = ckpt["args"]
    envs = m.make_env(a["env_id"], a["num_envs"], a["num_levels"], a["start_level"], a["distribution_mode"], 0)
    envs.env.callmethod("set_state", [bytes(s.numpy()) for s in ckpt["env"]["states"]])
    scaler = m.RewardScaler(a["num_envs"], a["gamma"])
    scaler.load_state_dict(ckpt["reward_scaler"])
    agent.eval()
    next_obs, next_done, steps = ckpt["env"]["next_obs"], ckpt["env"]["next_done"], []
    for _ in range(num_steps):
        logits, value = agent(next_obs)
        action = torch.distributions.Categorical(logits=logits).sample()
        o, reward, done, _ = envs.step(action.numpy())
        reward = torch.as_tensor(scaler(reward, done) if a.get("norm_reward") else reward, dtype=torch.float32)
        steps.append((next_obs, action, torch.log_softmax(logits, -1), value, reward, next_done))
        next_obs, next_done = torch.as_tensor(o["rgb"]), torch.as_tensor(done, dtype=torch.float32)
    next_value = agent(next_obs)[1]
    envs.close()
    return (*(torch.stack(x) for x in zip(*steps)), next_value, next_done)


def compare(acting, others, returns=None):
    """Table cells, each the mean over `others`: KL(acting || other), mean and rms of (other - acting) value, and
    other's 0.5 * mse to `returns`."""
    rows = []
    for logp, value in others:
        shift = value - acting[1]
        loss = 0.5 * (value - returns).pow(2).mean().item() if returns is not None else float("nan")
        rows.append([kl(acting[0], logp), shift.mean().item(), shift.pow(2).mean().sqrt().item(), loss])
    cells = np.mean(rows, axis=0)
    return f"{cells[0]:.2e} | {cells[1]:+.3f} | {cells[2]:.3f} | {cells[3]:.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--num-steps", type=int, default=256)
    parser.add_argument("--minibatch-sizes", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--per-layer", action="store_true", help="split the half-vs-half KL by BN layer")
    cli = parser.parse_args()
    if cli.num_steps <= 0 or min(cli.minibatch_sizes) <= 0:
        base.fail("--num-steps and --minibatch-sizes must be positive")
    path = base.latest_checkpoint(cli.checkpoint) if os.path.isdir(cli.checkpoint) else cli.checkpoint
    if not os.path.isfile(path):
        base.fail(f"no checkpoint at {cli.checkpoint}")
    ckpt = base.load_checkpoint(path)
    args = base.Args(**{**ckpt["args"], "channels": tuple(ckpt["args"]["channels"])})
    torch.manual_seed(0)
    agent = base.Agent(ckpt["model"]["actor.weight"].shape[0], args.arch, args.channels, args.pool)
    agent.load_state_dict(ckpt["model"])
    base.set_speed_options(agent, args, torch.device("cpu"))
    if args.bn_act != "running":
        base.fail(f"{path} acts with --bn-act {args.bn_act}; this measures the running-statistics mode")

    # the next rollout, acting exactly as the trainer does (eval mode, autocast as configured, batch of num_envs)
    obs, _, logps, v, rewards, dones, next_value, next_done = replay_next_rollout(base, agent, ckpt, cli.num_steps)
    adv = base.compute_gae(rewards, v, dones, next_value, next_done, args.gamma, args.gae_lambda)
    returns = (adv + v).flatten()  # the update's value targets
    obs, acting = obs.flatten(0, 1), (logps.flatten(0, 1), v.flatten())
    gen = torch.Generator().manual_seed(0)
    print(f"{path}: step {ckpt['global_step']}, {len(obs)} observations, amp {args.amp}, "
          f"policy entropy {-(acting[0].exp() * acting[0]).sum(-1).mean():.3f}")  # fmt: skip
    print("| compared with the acting policy and value | mean KL | value shift, mean | value shift, rms "
          "| value loss (0.5 mse to the update's targets) |\n|---|---|---|---|---|")  # fmt: skip
    print(f"| eval mode, batch {args.minibatch_size} (numerics only) | "
          f"{compare(acting, [policy_in_minibatches(agent, obs, args.minibatch_size, False, gen)], returns)} |")  # fmt: skip
    amp, agent.amp_dtype = agent.amp_dtype, None
    fp32 = policy_in_minibatches(agent, obs, 512, False, gen)
    print(f"| eval mode, fp32 (numerics only) | {compare(acting, [fp32], returns)} |")
    agent.amp_dtype = amp
    for size in cli.minibatch_sizes:
        shuffles = [policy_in_minibatches(agent, obs, size, True, gen) for _ in range(2)]
        print(f"| train mode, minibatch {size} (the update's view) | {compare(acting, shuffles, returns)} |")
    # what re-estimating the statistics on this rollout alone moves (--bn-update running's losses/bn_refresh_kl)
    idx = torch.randperm(len(obs), generator=gen)[: 16 * args.minibatch_size]
    base.refresh_bn_stats(agent, obs[idx], args.minibatch_size)
    refreshed = policy_in_minibatches(agent, obs, args.minibatch_size, False, gen)
    print(f"| eval mode, statistics re-estimated on this rollout | {compare(acting, [refreshed], returns)} |")

    # sampling noise alone: statistics of the first half of the rollout vs. the second half's own, same weights
    norms = [(n, m) for n, m in agent.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    first, second = obs[: len(obs) // 2], obs[len(obs) // 2 :]
    stats = []
    for half in (first, second):
        base.refresh_bn_stats(agent, half, args.minibatch_size)
        stats.append([(m.running_mean.clone(), m.running_var.clone()) for _, m in norms])

    def policy_on_second(use_first):
        for (_, m), f, s, u in zip(norms, stats[0], stats[1], use_first):
            mean, var = f if u else s
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
        return policy_in_minibatches(agent, second, args.minibatch_size, False, gen)

    own = policy_on_second([False] * len(norms))
    print(f"| eval mode on the second half, first half's statistics vs. its own (sampling noise, same weights) | "
          f"{compare(own, [policy_on_second([True] * len(norms))])} |")  # fmt: skip
    if cli.per_layer:
        print("\n| BN layer (only its statistics from the first half) | channels | mean KL | value shift, mean "
              "| max abs mean shift / std |\n|---|---|---|---|---|")  # fmt: skip
        for i, (name, m) in enumerate(norms):
            swapped = policy_on_second([j == i for j in range(len(norms))])
            (mu1, _), (mu2, var2) = stats[0][i], stats[1][i]
            shift = ((mu1 - mu2).abs() / (var2 + m.eps).sqrt()).max().item()
            vshift = (swapped[1] - own[1]).mean().item()
            print(f"| {name} | {len(mu1)} | {kl(own[0], swapped[0]):.2e} | {vshift:+.3f} | {shift:.3f} |")


if __name__ == "__main__":
    main()
