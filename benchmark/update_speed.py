"""The PPO update alone, per option set: time per minibatch on random frames (no envs), split into forward pass +
losses, backward pass, and gradient clipping + Adam step, with the operators that take the most device time.

A whole-iteration row of benchmark/speed.py takes a training run's start-up, evaluation and rollouts; this times the
update's step itself (the script's own Agent, set_speed_options and ppo_losses; the step below mirrors the script's
minibatch loop), so many option sets fit in a minute of GPU time. --sync adds what the scripts did each minibatch
before session 26: wait for the GPU after the forward pass (Categorical's argument checks) and for the clip
fraction's .item().
Usage: python benchmark/update_speed.py [--script ppo_procgen.py] [--device cuda] [--sets default fp32 ...]
[--steps 20] [--kernels 25] [--compile-mode max-autotune] [--fused-adam] [--sync] [-- extra script flags]
"""

import argparse
import importlib
import os
import sys
import time

import torch
import torch.nn as nn
import tyro

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from speed import OPTION_SETS, ROOT  # noqa: E402


def load_script(script):
    if not os.path.isfile(os.path.join(ROOT, script)):
        sys.exit(f"update_speed.py: error: no script {script}")
    sys.path.insert(0, ROOT)  # the scripts import as modules, as eval_generalization.py imports them
    return importlib.import_module(os.path.splitext(os.path.basename(script))[0])


def measure(module, flags, opts):
    args = tyro.cli(module.Args, args=flags)
    device = torch.device(opts.device)
    torch.backends.cudnn.deterministic = args.torch_deterministic  # as the script sets them
    torch.backends.cudnn.benchmark = not args.torch_deterministic
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    agent = module.Agent(15, args.arch, args.channels, args.pool).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=opts.fused_adam or None)
    forward, scaler = module.set_speed_options(agent, args, device)
    if args.compile and opts.compile_mode:
        forward = torch.compile(agent, mode=opts.compile_mode)
    agent.train(getattr(args, "bn_update", "batch") == "batch")  # the nobn variant has no --bn-update
    n = args.minibatch_size
    obs = torch.randint(0, 256, (n, 64, 64, 3), dtype=torch.uint8, device=device)
    actions = torch.randint(0, 15, (n,), device=device)
    with torch.no_grad():
        _, logprobs, _, values = agent.get_action_and_value(obs, actions)
    advantages = torch.randn(n, device=device)
    returns = values + advantages

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(split=None):
        t = time.perf_counter()
        _, newlogprob, entropy, newvalue = agent.get_action_and_value(obs, actions, forward)
        ratio = (newlogprob - logprobs).exp()
        clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()  # the script reads these after the update
        if opts.sync:  # the old waits: Categorical's argument checks after the forward pass, then the .item()
            bool(newlogprob.isfinite().all())
            clipfrac.item()
        pg_loss, v_loss = module.ppo_losses(ratio, advantages, newvalue, values, returns, args)
        loss = pg_loss - args.ent_coef * entropy.mean() + v_loss * args.vf_coef
        if split is not None:
            sync()
            split[0] += time.perf_counter() - t
            t = time.perf_counter()
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        if split is not None:
            sync()
            split[1] += time.perf_counter() - t
            t = time.perf_counter()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        if split is not None:
            sync()
            split[2] += time.perf_counter() - t

    t = time.perf_counter()
    for _ in range(3):  # warm-up: compilation, cuDNN's algorithm search, the allocator's first blocks
        step()
    sync()
    warmup = time.perf_counter() - t
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    for _ in range(opts.steps):
        step()
    sync()
    total = (time.perf_counter() - t) / opts.steps
    split = [0.0, 0.0, 0.0]
    for _ in range(opts.steps):
        step(split)
    table = None
    if opts.kernels:
        activities = [torch.profiler.ProfilerActivity.CPU]
        activities += [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else []
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(3):
                step()
            sync()
        sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort_by, row_limit=opts.kernels, max_name_column_width=60)
    per_iteration = args.num_envs * args.num_steps // n * args.update_epochs
    gpu = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"ms": 1000 * total, "split": [1000 * s / opts.steps for s in split], "iteration": total * per_iteration,
            "minibatches": per_iteration, "warmup": warmup, "gpu_gb": gpu, "table": table}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--script", default="ppo_procgen.py")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sets", nargs="+", default=["default"], choices=list(OPTION_SETS))
    parser.add_argument("--steps", type=int, default=20, help="timed minibatch steps per set (after 3 of warm-up)")
    parser.add_argument("--kernels", type=int, default=0, help="also list each set's N operators with the most time")
    parser.add_argument("--compile-mode", help="torch.compile's mode for sets with --compile (the script uses the default)")
    parser.add_argument("--fused-adam", action="store_true", help="Adam's fused kernel (the script uses the default)")
    parser.add_argument("--sync", action="store_true", help="wait for the GPU twice a minibatch, as before session 26")
    parser.add_argument("extra", nargs="*", help="script flags for every set (after --), e.g. --minibatch-size 1024")
    opts = parser.parse_args()
    if opts.steps <= 0 or opts.kernels < 0:
        parser.error("--steps must be positive and --kernels >= 0")
    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: this machine has no CUDA device")
    module = load_script(opts.script)
    rows = {}
    for name in opts.sets:
        try:
            rows[name] = measure(module, [*OPTION_SETS[name], "--device", opts.device, *opts.extra], opts)
        except SystemExit as e:  # tyro's message for a bad flag in `extra`
            sys.exit(f"update_speed.py: error: bad script flags {opts.extra} ({e})")
        if rows[name]["table"]:
            print(f"\n{name}: operators over 3 minibatch steps\n{rows[name]['table']}")
    first, r0 = rows[opts.sets[0]]["ms"], rows[opts.sets[0]]
    notes = (", fused Adam" if opts.fused_adam else "") + (f", compile mode {opts.compile_mode}" if opts.compile_mode else "")
    notes += ", the host waiting for the GPU twice a minibatch (--sync)" if opts.sync else ""
    print(f"\n{opts.script} update on {opts.device}{notes}, {opts.steps} timed minibatch steps per set (the split: another "
          f"{opts.steps}, synchronised between phases); an iteration's update is {r0['minibatches']} of them\n")  # fmt: skip
    print(
        "| options | ms per minibatch | speed-up | forward + losses | backward | clip + Adam | update per iteration (s) "
        "| warm-up (s) | GPU memory (GiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        f, b, o = r["split"]
        print(f"| {name} | {r['ms']:.1f} | {first / r['ms']:.2f}x | {f:.1f} | {b:.1f} | {o:.1f} | {r['iteration']:.2f} | "
              f"{r['warmup']:.1f} | {'-' if r['gpu_gb'] is None else format(r['gpu_gb'], '.1f')} |")  # fmt: skip


if __name__ == "__main__":
    main()
