# PPO + IMPALA-CNN without BatchNorm on Procgen, trained on a fixed set of levels and evaluated on unseen ones.
# Docs and results: README.md. Based on CleanRL's ppo_procgen.py (https://github.com/vwxyzjn/cleanrl).
import ctypes
import glob
import json
import os
import random
import resource
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter

VARIANT = os.path.basename(__file__)[: -len(".py")]


@dataclass
class Args:
    exp_name: str = VARIANT
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment (also seeds the training levels' sequence and the evaluations)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`; off: cuDNN benchmarks and picks its fastest algorithms"""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """where to train: auto picks cuda, then mps, then cpu"""
    threads: int = 0
    """torch intra-op threads (0: torch's default)"""
    env_threads: int = 0
    """procgen's stepping threads, for training and evaluation envs (0: one per CPU core, at least procgen's default 4;
    results do not depend on it)"""
    runs_dir: str = "runs"
    """runs are written to {runs_dir}/{run_name}/"""
    resume: Optional[str] = None
    """a checkpoint (.pt) or run folder (its latest checkpoint) to continue, in that run's own folder"""
    checkpoint_frequency: int = 1_000_000
    """save a checkpoint every this many steps (and at the end)"""

    # Speed options (see README: they were chosen by measurement and do not change learning)
    channels_last: bool = True
    """run the convolutions in channels-last memory format"""
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    """autocast the network's forward passes (losses and optimizer stay fp32; fp16 uses a grad scaler); auto: bf16 where
    the hardware has it (CUDA from Ampere, MPS, CPUs with AVX512-BF16 or AMX), none elsewhere (README)"""
    compile: bool = False
    """torch.compile the update's forward and backward passes (acting and evaluation stay eager or graphed)"""
    cuda_graph: bool = True
    """replay the rollout's action step as one CUDA graph (cuda only; elsewhere ignored)"""
    retain_memory: bool = sys.platform == "linux"
    """keep freed memory for reuse, not handing it back to the OS (Linux/glibc: 2.2x faster CPU update, 2x memory; README)"""

    # Environment
    env_id: str = "coinrun"
    """the Procgen game"""
    num_levels: int = 200
    """number of training levels (0: unbounded)"""
    start_level: int = 0
    """the first training level"""
    distribution_mode: Literal["easy", "hard", "extreme", "memory", "exploration"] = "easy"
    """Procgen's difficulty mode"""

    # Network
    arch: Literal["impala", "espeholt", "nature"] = "espeholt"
    """espeholt: CleanRL's / train-procgen's IMPALA-CNN; impala: the brief's IMPALA-small (learns slower: README);
    nature: the Nature-DQN CNN (3 convs of 32, 64, 64 channels, 512 units), the CoinRun paper's shallower baseline"""
    pool: Literal["gap", "flatten"] = "flatten"
    """global average pooling or flatten before the fully connected layer (the brief's is `--arch impala --pool gap`)"""
    channels: tuple[int, ...] = (16, 32, 32)
    """channels of each IMPALA stage (--arch nature has its own)"""

    # Algorithm specific arguments
    total_timesteps: int = 25_000_000
    """total timesteps of the experiment"""
    learning_rate: float = 5e-4
    """the learning rate of the optimizer"""
    num_envs: int = 64
    """the number of parallel game environments"""
    num_steps: int = 256
    """the number of steps to run in each environment per policy rollout (the brief's 512 learns slower: README)"""
    anneal_lr: bool = False
    """toggle learning rate annealing (train-procgen's baseline keeps it constant)"""
    gamma: float = 0.999
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    minibatch_size: int = 2048
    """the size of each minibatch (the number of minibatches is derived; the brief's 512 learns slower: README)"""
    update_epochs: int = 3
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """toggles advantages normalization"""
    norm_reward: bool = False
    """divide the value function's rewards by a running std of the discounted return (no clipping); off: the brief's
    raw rewards, which learn as well on CoinRun (README)"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """toggles whether or not to use a clipped loss for the value function, as per the paper"""
    ent_coef: float = 0.01
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: Optional[float] = None
    """the target KL divergence threshold"""

    # Evaluation
    eval_frequency: int = 500_000
    """evaluate on train and test levels every this many steps (and at step 0 and the end)"""
    num_eval_episodes: int = 100
    """episodes per split and evaluation (each eval env plays exactly one episode)"""
    eval_greedy: bool = False
    """evaluate the argmax policy instead of sampling"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    num_minibatches: int = 0
    """the number of minibatches (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


# Settings a resumed run may change; everything else must match the checkpoint.
RESUMABLE = {
    "total_timesteps",
    "device",
    "threads",
    "env_threads",
    "checkpoint_frequency",
    "eval_frequency",
    "channels_last",
    "amp",
    "compile",
    "cuda_graph",
    "retain_memory",
}


def fail(msg):
    sys.exit(f"{VARIANT}.py: error: {msg}")


def check_args(args):
    from procgen.env import ENV_NAMES

    if args.env_id not in ENV_NAMES:
        fail(f"unknown --env-id {args.env_id!r}; Procgen games: {', '.join(sorted(ENV_NAMES))}")
    for name in ["total_timesteps", "num_envs", "num_steps", "minibatch_size", "update_epochs", "eval_frequency",
                 "checkpoint_frequency", "num_eval_episodes"]:  # fmt: skip
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if min(args.num_levels, args.start_level, args.threads, args.env_threads) < 0:
        fail("--num-levels, --start-level, --threads and --env-threads must be >= 0")
    if not (args.learning_rate > 0 and 0 < args.gamma <= 1 and 0 <= args.gae_lambda <= 1 and args.clip_coef > 0):
        fail("need --learning-rate > 0, 0 < --gamma <= 1, 0 <= --gae-lambda <= 1, --clip-coef > 0")
    if len(args.channels) == 0 or min(args.channels) <= 0:
        fail(f"--channels must be positive integers, got {args.channels}")
    if args.arch == "nature" and args.channels != (16, 32, 32):
        fail("--channels sets the IMPALA stages; --arch nature has its own (32, 64, 64)")
    args.batch_size = args.num_envs * args.num_steps
    if args.batch_size % args.minibatch_size:
        fail(f"--num-envs x --num-steps = {args.batch_size} is not divisible by --minibatch-size {args.minibatch_size}")
    args.num_minibatches = args.batch_size // args.minibatch_size
    args.num_iterations = -(-args.total_timesteps // args.batch_size)


def get_device(name):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available() or name == "mps" and not torch.backends.mps.is_available():
        fail(f"--device {name} is not available on this machine")
    return torch.device(name)


def derive_seed(*keys):
    """A seed for Procgen's rand_seed or a torch generator, derived from (seed, purpose, step, ...)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0] % 2**31)


def make_env(env_id, num_envs, num_levels, start_level, distribution_mode, rand_seed, num_threads=0):
    from procgen import ProcgenEnv  # a gym3-backed vector env with the old 4-tuple step API

    if not num_threads:  # one per core this process may use (16 step twice as fast as 4 on a 16-core GPU machine)
        num_threads = max(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 4)
    return ProcgenEnv(
        num_envs=num_envs,
        env_name=env_id,
        num_levels=num_levels,
        start_level=start_level,
        distribution_mode=distribution_mode,
        rand_seed=rand_seed,
        num_threads=num_threads,
    )


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def conv(in_channels, out_channels, kernel_size, stride=1, padding=None):
    padding = (kernel_size // 2 if stride == 1 else 0) if padding is None else padding
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)  # no BN: convs keep a bias


def norm(channels):
    return nn.Identity()  # the no-BatchNorm ablation: convs keep their biases


class ImpalaBlock(nn.Module):
    """The brief's IMPALA-small block: conv-BN-ReLU, conv-BN, + (1x1 conv-BN) skip, ReLU, max-pool 3/2."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.body = nn.Sequential(
            conv(in_channels, out_channels, 3),
            norm(out_channels),
            nn.ReLU(),
            conv(out_channels, out_channels, 3),
            norm(out_channels),
        )
        same = in_channels == out_channels
        self.skip = nn.Identity() if same else nn.Sequential(conv(in_channels, out_channels, 1), norm(out_channels))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x):
        return self.pool(torch.relu(self.body(x) + self.skip(x)))


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), conv(channels, channels, 3), norm(channels), nn.ReLU(), conv(channels, channels, 3), norm(channels)
        )

    def forward(self, x):
        return x + self.body(x)


def espeholt_stage(in_channels, out_channels):
    """CleanRL's ConvSequence (Espeholt et al. 2018): conv, max-pool, two residual blocks."""
    return nn.Sequential(
        conv(in_channels, out_channels, 3),
        norm(out_channels),
        nn.MaxPool2d(3, stride=2, padding=1),
        ResidualBlock(out_channels),
        ResidualBlock(out_channels),
    )


HIDDEN = {"impala": 256, "espeholt": 256, "nature": 512}  # features out of the torso


def make_network(arch, channels, pool, obs_shape=(64, 64, 3)):
    """The torso: float NCHW images in [0, 1] -> HIDDEN[arch] features."""
    h, w, c = obs_shape
    layers, in_channels = [], c
    if arch == "nature":  # Mnih et al. 2015; unpadded convs 8/4, 4/2, 3/1: 64x64 -> 15x15 -> 6x6 -> 4x4
        for out_channels, kernel, stride in [(32, 8, 4), (64, 4, 2), (64, 3, 1)]:
            layers += [conv(in_channels, out_channels, kernel, stride, padding=0), norm(out_channels), nn.ReLU()]
            in_channels, h, w = out_channels, (h - kernel) // stride + 1, (w - kernel) // stride + 1
    else:
        for out_channels in channels:
            stage = ImpalaBlock if arch == "impala" else espeholt_stage
            layers.append(stage(in_channels, out_channels))
            in_channels, h, w = out_channels, (h + 1) // 2, (w + 1) // 2
    if arch == "espeholt":
        layers.append(nn.ReLU())
    if pool == "gap":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        out = in_channels
    else:
        layers.append(nn.Flatten())
        out = in_channels * h * w
    return nn.Sequential(*layers, layer_init(nn.Linear(out, HIDDEN[arch])), nn.ReLU())


class Agent(nn.Module):
    def __init__(self, num_actions, arch="espeholt", channels=(16, 32, 32), pool="flatten", channels_last=False, amp="none"):
        super().__init__()
        self.network = make_network(arch, channels, pool)
        self.actor = layer_init(nn.Linear(HIDDEN[arch], num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(HIDDEN[arch], 1), std=1)
        self.channels_last = channels_last  # speed options: not part of the weights
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]

    def forward(self, x):
        """x: uint8 observations (N, 64, 64, 3) -> fp32 (logits (N, A), values (N,))."""
        x = x.permute(0, 3, 1, 2).float() / 255.0  # NHWC storage viewed as NCHW: already channels-last in memory
        if not self.channels_last:
            x = x.contiguous()
        amp = dict(dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None, cache_enabled=False)
        with torch.autocast(x.device.type, **amp):  # no cast cache: each weight is cast once per pass anyway
            hidden = self.network(x)
            logits, value = self.actor(hidden), self.critic(hidden)
        return logits.float(), value.float().squeeze(-1)

    def get_value(self, x):
        return self(x)[1]

    def get_action_and_value(self, x, action=None, forward=None):
        logits, value = (self if forward is None else forward)(x)  # forward: the update's compiled agent (--compile)
        probs = Categorical(logits=logits, validate_args=False)  # its checks would make the host wait for the GPU
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), value


class CudaGraphPolicy:
    """The rollout's action step (sample=False: the network's forward pass, for evaluation) as one CUDA graph
    (--cuda-graph), captured on its first call, in the agent's mode then and for that batch size. A batch of 64 frames
    is bound by launching the step's ~100 small kernels; a replay is one launch. The graph reads the weights and BN
    statistics in place, so it follows every update and BN refresh without being captured again."""

    def __init__(self, agent, sample=True):
        self.agent, self.graph, self.fn = agent, None, self.step if sample else agent

    def step(self, x):
        """Like agent.get_action_and_value(x) (entropy: None), sampling by Gumbel-max (the same distribution as
        Categorical.sample, without its check that synchronises with the host)."""
        logits, value = self.agent(x)
        u = torch.rand_like(logits).clamp_(1e-20, 1.0)
        action = (logits - torch.log(-torch.log(u))).argmax(-1)
        return action, torch.log_softmax(logits, -1).gather(-1, action[:, None]).squeeze(-1), None, value

    def __call__(self, x):
        if self.graph is None:
            self.x, buffers = x.clone(), {k: v.clone() for k, v in self.agent.named_buffers()}
            stream = torch.cuda.Stream()  # warm-up on a side stream, as torch.cuda.graph asks
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    self.fn(self.x)
            torch.cuda.current_stream().wait_stream(stream)
            self.agent.load_state_dict(buffers, strict=False)  # in train mode the warm-up moved BN's averages
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self.fn(self.x)
        self.x.copy_(x)
        self.graph.replay()
        return self.out


def retain_freed_memory():
    """Stop glibc's malloc from returning big freed blocks (a minibatch's activations) to the OS, only to page-fault
    them back in, zeroed, on the next step. False where there is no glibc (macOS, musl)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1


def set_speed_options(agent, args, device):
    """Apply --channels-last/--amp/--retain-memory, warning and running without an option that is missing, and return
    the update's forward pass (the agent compiled under --compile: one minibatch shape, so one compilation) and the
    grad scaler."""
    if args.retain_memory and not retain_freed_memory():
        print("warning: --retain-memory needs glibc's malloc; running without it", file=sys.stderr)
    agent.channels_last = args.channels_last
    if args.channels_last:
        agent.to(memory_format=torch.channels_last)
    amp = args.amp
    if device.type == "cpu":  # a CPU without bf16 instructions emulates it: 9x slower than fp32 on an AVX2 EPYC (README)
        native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    else:
        native_bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported(including_emulation=False)
    if amp == "auto":
        amp = "bf16" if native_bf16 else "none"
        print(f"--amp auto: {amp} on this {device.type}" + ("" if native_bf16 else " (no native bf16)"))
    elif amp == "bf16" and not native_bf16:
        print(f"warning: this {device.type} has no native bf16, so --amp bf16 is emulated and slow; --amp auto runs fp32",
              file=sys.stderr)  # fmt: skip
    if amp != "none" and not torch.amp.is_autocast_available(device.type):
        print(f"warning: autocast is not available on {device.type}; running --amp none", file=sys.stderr)
        amp = "none"
    if amp == "fp16" and device.type == "cpu":
        print("warning: fp16 autocast is slow on CPU; consider --amp auto", file=sys.stderr)
    agent.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    forward = torch.compile(agent) if args.compile else agent
    return forward, torch.amp.GradScaler(device.type, enabled=amp == "fp16")


def memory_gib(device):
    """(peak resident memory of this process, memory the GPU allocator holds: peak on cuda, current on mps) in GiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**30 if sys.platform == "darwin" else 2**20)  # B / KiB
    if device.type == "cuda":
        return rss, torch.cuda.max_memory_allocated(device) / 2**30
    return rss, torch.mps.driver_allocated_memory() / 2**30 if device.type == "mps" else None


def compute_gae(rewards, values, dones, next_value, next_done, gamma, gae_lambda):
    """Generalized advantage estimation over a (num_steps, num_envs) rollout; dones[t] marks obs[t] as a first step."""
    advantages = torch.zeros_like(rewards)
    lastgaelam = 0
    for t in reversed(range(rewards.shape[0])):
        if t == rewards.shape[0] - 1:
            nextnonterminal = 1.0 - next_done
            nextvalues = next_value
        else:
            nextnonterminal = 1.0 - dones[t + 1]
            nextvalues = values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
    return advantages


def ppo_losses(ratio, mb_advantages, newvalue, mb_values, mb_returns, args):
    """The clipped policy loss and the (optionally clipped) value loss of a minibatch."""
    if args.norm_adv:
        mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

    # Policy loss
    pg_loss1 = -mb_advantages * ratio
    pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

    # Value loss
    if args.clip_vloss:
        v_loss_unclipped = (newvalue - mb_returns) ** 2
        v_clipped = mb_values + torch.clamp(newvalue - mb_values, -args.clip_coef, args.clip_coef)
        v_loss_clipped = (v_clipped - mb_returns) ** 2
        v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
    else:
        v_loss = 0.5 * ((newvalue - mb_returns) ** 2).mean()
    return pg_loss, v_loss


@torch.inference_mode()
def evaluate(agent, envs, generator, greedy=False, forward=None):
    """Play exactly one episode in each env of `envs` (so short episodes are not over-sampled), agent in eval mode.
    forward: a fixed-batch forward pass (a CudaGraphPolicy with sample=False) that every env's frames go through, the
    finished ones' too; without it only the unfinished envs' frames go through the agent. The same actions either way
    (up to floating-point differences between batch sizes).
    Returns numpy arrays: returns, lengths, completed (reached the goal), level seeds."""
    device = next(agent.parameters()).device
    was_training = agent.training
    agent.eval()  # running BN statistics: an observation's action does not depend on the rest of the batch
    n = envs.num_envs
    obs = envs.reset()["rgb"]
    active = np.ones(n, dtype=bool)
    returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
    completed, levels = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    actions = np.zeros(n, dtype=np.int64)
    while active.any():
        idx = np.flatnonzero(active)
        if forward is None:
            logits, _ = agent(torch.as_tensor(obs[idx]).to(device))
        else:
            logits = forward(torch.as_tensor(obs).to(device))[0][torch.as_tensor(idx, device=device)]
        if greedy:
            act = logits.argmax(-1)
        else:  # Gumbel-max sampling from a dedicated generator, so evaluation leaves the training RNG alone
            u = torch.rand(logits.shape, generator=generator, device=device).clamp_(1e-20, 1.0)
            act = (logits - torch.log(-torch.log(u))).argmax(-1)
        actions[idx] = act.cpu().numpy()
        obs, reward, done, infos = envs.step(actions)
        obs = obs["rgb"]
        returns[idx] += reward[idx]
        lengths[idx] += 1
        for i in idx[done[idx]]:
            active[i] = False
            completed[i], levels[i] = bool(infos[i]["prev_level_complete"]), infos[i]["prev_level_seed"]
    agent.train(was_training)
    return returns, lengths, completed, levels


class RewardScaler:
    """Divides rewards by a running std of the discounted return, as train-procgen's VecNormalize(ob=False) and CleanRL's
    NormalizeReward do, but without their clipping of the scaled reward to +-10. Only the value targets see scaled
    rewards; logged returns stay raw."""

    def __init__(self, num_envs, gamma):
        self.gamma, self.ret = gamma, np.zeros(num_envs)
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def __call__(self, reward, done):
        self.ret = self.ret * self.gamma + reward
        batch_mean, batch_var, n = self.ret.mean(), self.ret.var(), len(self.ret)
        delta, total = batch_mean - self.mean, self.count + n  # parallel variance update (Chan et al.)
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.mean, self.count = self.mean + delta * n / total, total
        self.ret[done] = 0.0
        return reward / np.sqrt(self.var + 1e-8)

    def state_dict(self):
        return {"ret": torch.as_tensor(self.ret), "mean": float(self.mean), "var": float(self.var), "count": float(self.count)}

    def load_state_dict(self, state):
        self.ret, self.mean, self.var, self.count = state["ret"].numpy().copy(), state["mean"], state["var"], state["count"]


def write_atomic(path, write):
    """Write via `path.tmp` + rename, so a killed run never leaves a half-written file."""
    write(path + ".tmp")
    os.replace(path + ".tmp", path)


def write_jsonl(path, rows):
    write_atomic(path, lambda tmp: open(tmp, "w").write("".join(json.dumps(row) + "\n" for row in rows)))


def read_jsonl(path):
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def latest_checkpoint(path):
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, "checkpoints", "*.pt")))
        if not found:
            fail(f"no checkpoint in {path}/checkpoints/")
        path = found[-1]
    if not os.path.isfile(path):
        fail(f"no such checkpoint: {path}")
    return path


def load_checkpoint(path, variant=VARIANT):
    """Load a checkpoint of `variant` safely (weights_only), with a clear message for anything else."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or holding arbitrary pickled objects
        fail(f"{path} is not a readable checkpoint ({type(e).__name__})")
    if not isinstance(ckpt, dict) or "variant" not in ckpt or "model" not in ckpt:
        fail(f"{path} is not a checkpoint of this project")
    if ckpt["variant"] != variant:
        fail(f"{path} was written by {ckpt['variant']}.py, not {variant}.py; use that script")
    return ckpt


def resume_args(path):
    """The checkpoint's args with the command line parsed over them: flags may change only the RESUMABLE settings."""
    ckpt = load_checkpoint(path)
    saved = {f.name: ckpt["args"].get(f.name, f.default) for f in fields(Args)}  # older checkpoints: the defaults
    saved["channels"] = tuple(saved["channels"])
    args = tyro.cli(Args, default=Args(**saved))  # so a flag given at its default value still counts
    for f in fields(Args):
        given, old = getattr(args, f.name), saved[f.name]
        if f.name not in RESUMABLE | {"resume", "runs_dir"} and given != old:
            fail(f"--{f.name.replace('_', '-')} {given} differs from the checkpoint's {old}; a resumed run keeps its setup")
    args.resume = path
    return args, ckpt


if __name__ == "__main__":
    args = tyro.cli(Args)
    ckpt = None
    if args.resume:
        path = latest_checkpoint(args.resume)
        args, ckpt = resume_args(path)
        run_dir = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    else:
        run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
        run_dir = os.path.join(args.runs_dir, run_name)
    check_args(args)
    if ckpt is not None and ckpt["iteration"] >= args.num_iterations:
        fail(f"{path} is at step {ckpt['global_step']}: give a --total-timesteps above it to continue the run")
    device = get_device(args.device)
    try:
        envs = make_env(args.env_id, args.num_envs, args.num_levels, args.start_level, args.distribution_mode,
                        derive_seed(args.seed, 0), args.env_threads)  # fmt: skip
    except Exception as e:  # e.g. a distribution mode the game does not have
        fail(f"cannot make {args.env_id} ({args.distribution_mode}): {e}")

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.backends.cudnn.benchmark = not args.torch_deterministic
    if args.threads:
        torch.set_num_threads(args.threads)

    agent = Agent(envs.action_space.n, args.arch, args.channels, args.pool).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    reward_scaler = RewardScaler(args.num_envs, args.gamma)
    eval_rows = read_jsonl(os.path.join(run_dir, "eval.jsonl"))

    # ALGO Logic: Storage setup
    obs = torch.zeros((args.num_steps, args.num_envs) + envs.observation_space["rgb"].shape, dtype=torch.uint8, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    logprobs, rewards, dones, values = (torch.zeros((args.num_steps, args.num_envs), device=device) for _ in range(4))
    # each step's observations pass through a pinned host buffer on cuda, so the copy to the GPU is asynchronous;
    # numpy fills it: torch's copy would wake torch's CPU threads, whose spinning then slows procgen's (README)
    obs_host = torch.empty((args.num_envs,) + envs.observation_space["rgb"].shape, dtype=torch.uint8,
                           pin_memory=device.type == "cuda")  # fmt: skip

    # TRY NOT TO MODIFY: start the game
    global_step, iteration = 0, 0

    def interrupted(*_):  # Ctrl-C: where the run stands, not a traceback
        saved = glob.glob(os.path.join(run_dir, "checkpoints", "step_*.pt"))
        hint = f"continue from its latest checkpoint with --resume {run_dir}" if saved else "no checkpoint was saved yet"
        sys.exit(f"{VARIANT}.py: interrupted at step {global_step}; {hint}")

    signal.signal(signal.SIGINT, interrupted)
    next_obs = torch.as_tensor(envs.reset()["rgb"]).to(device)
    next_done = torch.zeros(args.num_envs, device=device)
    ep_return, ep_length = np.zeros(args.num_envs), np.zeros(args.num_envs, dtype=np.int64)
    level_visits = np.zeros(max(args.num_levels, 1), dtype=np.int64)  # finished episodes per training level
    if ckpt is not None:  # continue exactly where the checkpoint left off: weights, optimizer, RNG, envs, counters
        agent.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        global_step, iteration = ckpt["global_step"], ckpt["iteration"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
        envs.env.callmethod("set_state", [bytes(s.numpy()) for s in ckpt["env"]["states"]])
        next_obs, next_done = ckpt["env"]["next_obs"].to(device), ckpt["env"]["next_done"].to(device)
        ep_return, ep_length = ckpt["env"]["ep_return"].numpy().copy(), ckpt["env"]["ep_length"].numpy().copy()
        level_visits = ckpt["env"]["level_visits"].numpy().copy()
        reward_scaler.load_state_dict(ckpt["reward_scaler"])
        eval_rows = [row for row in eval_rows if row["global_step"] <= global_step]  # drop what the lost run wrote after
        print(f"resuming {run_dir} at step {global_step}")
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    write_jsonl(os.path.join(run_dir, "eval.jsonl"), eval_rows)
    writer = SummaryWriter(run_dir, purge_step=global_step + 1 if ckpt is not None else None)
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
    )
    forward, scaler = set_speed_options(agent, args, device)
    graphed = args.cuda_graph and device.type == "cuda"
    act = CudaGraphPolicy(agent) if graphed else agent.get_action_and_value
    eval_forward = CudaGraphPolicy(agent, sample=False) if graphed else None

    def save_checkpoint():
        state = {
            "variant": VARIANT,
            "args": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(args).items()},
            "model": agent.state_dict(),
            "optimizer": optimizer.state_dict(),
            "global_step": global_step,
            "iteration": iteration,
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None},
            "env": {
                "states": [torch.frombuffer(bytearray(s), dtype=torch.uint8) for s in envs.env.callmethod("get_state")],
                "next_obs": next_obs.cpu(),
                "next_done": next_done.cpu(),
                "ep_return": torch.as_tensor(ep_return),
                "ep_length": torch.as_tensor(ep_length),
                "level_visits": torch.as_tensor(level_visits),
            },
            "reward_scaler": reward_scaler.state_dict(),
        }
        path = os.path.join(run_dir, "checkpoints", f"step_{global_step:010d}.pt")
        write_atomic(path, lambda tmp: torch.save(state, tmp))

    def run_evaluation():
        row = {"global_step": global_step}
        for split, num_levels, start_level in [("train", args.num_levels, args.start_level), ("test", 0, 0)]:
            seed = derive_seed(args.seed, 1 if split == "train" else 2, global_step)  # same levels when resumed
            eval_envs = make_env(args.env_id, args.num_eval_episodes, num_levels, start_level, args.distribution_mode, seed,
                                 args.env_threads)  # fmt: skip
            generator = torch.Generator(device).manual_seed(seed)
            ret, length, completed, _ = evaluate(agent, eval_envs, generator, args.eval_greedy, eval_forward)
            eval_envs.close()
            row.update({f"{split}_return": ret.mean(), f"{split}_std": ret.std(), f"{split}_completion": completed.mean()})
            row[f"{split}_length"] = length.mean()
        row.update(gap=row["train_return"] - row["test_return"], episodes=args.num_eval_episodes)
        row = {k: float(v) if isinstance(v, (np.floating, float)) else v for k, v in row.items()}
        for key in ["train_return", "test_return", "gap", "train_completion", "test_completion"]:
            writer.add_scalar(f"eval/{key}", row[key], global_step)
        eval_rows.append(row)
        write_jsonl(os.path.join(run_dir, "eval.jsonl"), eval_rows)
        return row

    last_eval = eval_rows[-1] if eval_rows else None
    if global_step == 0:
        t0 = time.time()
        last_eval = run_evaluation()
        writer.add_scalar("perf/eval_time", time.time() - t0, global_step)
    start_time, start_step = time.time(), global_step
    while iteration < args.num_iterations:
        iteration += 1
        t_rollout, t_env, t_infer = time.time(), 0.0, 0.0
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate
        episodes = []
        for step in range(0, args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            dones[step] = next_done

            # ALGO LOGIC: action logic
            t = time.time()
            with torch.inference_mode():
                action, logprob, _, value = act(obs[step])
                values[step] = value
            actions[step] = action
            logprobs[step] = logprob
            action = action.cpu().numpy()
            t_infer += time.time() - t

            # TRY NOT TO MODIFY: execute the game and log data.
            t = time.time()
            next_obs_np, reward, done, infos = envs.step(action)
            t_env += time.time() - t
            rewards[step] = torch.as_tensor(reward_scaler(reward, done) if args.norm_reward else reward, device=device)
            np.copyto(obs_host.numpy(), next_obs_np["rgb"])
            next_obs = obs_host.to(device, non_blocking=True)
            next_done = torch.as_tensor(done, dtype=torch.float32, device=device)
            ep_return += reward
            ep_length += 1
            for i in np.flatnonzero(done):
                episodes.append((ep_return[i], ep_length[i], infos[i]["prev_level_complete"]))
                if args.num_levels:
                    level_visits[infos[i]["prev_level_seed"] - args.start_level] += 1
            ep_return[done], ep_length[done] = 0.0, 0

        # bootstrap value if not done
        with torch.inference_mode():
            next_value = agent.get_value(next_obs)
            advantages = compute_gae(rewards, values, dones, next_value, next_done, args.gamma, args.gae_lambda)
            returns = advantages + values
        t_rollout = time.time() - t_rollout

        # flatten the batch
        t_update = time.time()
        b_obs = obs.reshape((-1,) + envs.observation_space["rgb"].shape)
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape(-1)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)

        # Optimizing the policy and value network
        agent.train()
        clipfracs, grad_norms = [], []
        rollout_kl = None
        for epoch in range(args.update_epochs):
            b_inds = torch.randperm(args.batch_size, device=device)
            for start in range(0, args.batch_size, args.minibatch_size):
                end = start + args.minibatch_size
                mb_inds = b_inds[start:end]

                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], b_actions[mb_inds], forward)
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()

                with torch.no_grad():
                    # calculate approx_kl http://joschu.net/blog/kl-approx.html
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    # tensors, read after the update: an .item() here would make the host wait for the GPU each minibatch
                    clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean()]
                    if rollout_kl is None:  # acting vs. updating policy before any gradient step: should be ~0
                        rollout_kl = approx_kl

                pg_loss, v_loss = ppo_losses(
                    ratio, b_advantages[mb_inds], newvalue, b_values[mb_inds], b_returns[mb_inds], args
                )
                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                optimizer.zero_grad()
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norms += [nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)]  # the norm before clipping
                scaler.step(optimizer)
                scaler.update()

            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        clipfrac, rollout_kl = torch.stack(clipfracs).mean().item(), rollout_kl.item()
        grad_norm = torch.stack(grad_norms).mean().item()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        t_update = time.time() - t_update

        # TRY NOT TO MODIFY: record rewards for plotting purposes
        for ep_ret, ep_len, ep_done in episodes:
            writer.add_scalar("charts/episodic_return", ep_ret, global_step)
            writer.add_scalar("charts/episodic_length", ep_len, global_step)
            writer.add_scalar("charts/episodic_completion", ep_done, global_step)
        if args.num_levels:
            writer.add_scalar("charts/levels_seen", (level_visits > 0).sum(), global_step)
            writer.add_scalar("charts/level_visits_min", level_visits.min(), global_step)
            writer.add_scalar("charts/level_visits_max", level_visits.max(), global_step)
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/rollout_kl", rollout_kl, global_step)
        writer.add_scalar("losses/clipfrac", clipfrac, global_step)
        writer.add_scalar("losses/grad_norm", grad_norm, global_step)  # > max_grad_norm: the step was clipped
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        sps = int((global_step - start_step) / (time.time() - start_time))
        writer.add_scalar("charts/SPS", sps, global_step)
        for key, seconds in [("rollout", t_rollout), ("env", t_env), ("inference", t_infer), ("update", t_update)]:
            writer.add_scalar(f"perf/{key}_time", seconds, global_step)
        rss, gpu_memory = memory_gib(device)
        writer.add_scalar("perf/peak_rss_gib", rss, global_step)
        if gpu_memory is not None:
            writer.add_scalar("perf/gpu_memory_gib", gpu_memory, global_step)

        t_eval = time.time()
        done_training = iteration == args.num_iterations
        if global_step // args.eval_frequency > (global_step - args.batch_size) // args.eval_frequency or done_training:
            last_eval = run_evaluation()
            writer.add_scalar("perf/eval_time", time.time() - t_eval, global_step)
        if (
            global_step // args.checkpoint_frequency > (global_step - args.batch_size) // args.checkpoint_frequency
            or done_training
        ):
            save_checkpoint()
        t_eval = time.time() - t_eval

        eta = (args.num_iterations - iteration) * args.batch_size / max(sps, 1)
        train_ep = f"{np.mean([e[0] for e in episodes]):.2f}" if episodes else "-"
        latest = (
            f"train {last_eval['train_return']:.2f} test {last_eval['test_return']:.2f} @{last_eval['global_step']}"
            if last_eval
            else "-"
        )
        print(
            f"step {global_step}/{args.num_iterations * args.batch_size} | SPS {sps} | ETA {eta / 3600:.1f}h | "
            f"rollout {t_rollout:.0f}s update {t_update:.0f}s eval+ckpt {t_eval:.0f}s | episodes {train_ep} | "
            f"rollout_kl {rollout_kl:.2e} approx_kl {approx_kl.item():.2e} | mem {rss:.1f}G | eval {latest}",
            flush=True,
        )

    envs.close()
    writer.close()
