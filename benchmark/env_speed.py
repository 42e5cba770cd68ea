"""Where a rollout's env time goes: procgen's stepping (gym3 `act` returns at once, `observe` waits for the stepping
threads) against gym3's per-step Python (`get_info`, 64 dicts), for several procgen thread counts. `--copy` adds a
per-step copy of the frames into a torch buffer: `torch` (`copy_`, on torch's CPU threads, which spin-wait afterwards
while procgen steps; what the scripts did until 2026-11-28) or `numpy` (`np.copyto`, one thread; what they do now).
Usage: python benchmark/env_speed.py [--num-envs 64] [--steps 400] [--threads 1 2 4] [--copy none torch numpy]
"""

import argparse
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--copy", nargs="+", choices=["none", "torch", "numpy"], default=["none"])
    args = parser.parse_args()
    if args.num_envs <= 0 or args.steps <= 0 or min(args.threads) <= 0:
        parser.error("--num-envs, --steps and --threads must be positive")
    import torch
    from procgen import ProcgenGym3Env

    print(f"torch CPU threads: {torch.get_num_threads()}\n")
    print(f"| procgen threads | copy | act (ms/step) | observe (ms/step) | get_info (ms/step) | copy (ms/step) "
          f"| {args.num_envs}-env steps/s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    buffer = torch.empty((args.num_envs, 64, 64, 3), dtype=torch.uint8)
    for threads in args.threads:
        for copy in args.copy:
            env = ProcgenGym3Env(num=args.num_envs, env_name="coinrun", num_levels=200, distribution_mode="easy",
                                 rand_seed=1, num_threads=threads)  # fmt: skip
            actions = np.random.default_rng(0).integers(0, 15, (args.steps + 100, args.num_envs)).astype(np.int32)
            seconds = np.zeros(4)
            for k, action in enumerate(actions):
                t0 = time.perf_counter()
                env.act(action)
                t1 = time.perf_counter()
                _, obs, _ = env.observe()
                t2 = time.perf_counter()
                env.get_info()
                t3 = time.perf_counter()
                if copy == "torch":
                    buffer.copy_(torch.from_numpy(obs["rgb"]))
                elif copy == "numpy":
                    np.copyto(buffer.numpy(), obs["rgb"])
                if k >= 100:  # the first 100 steps are warm-up
                    seconds += [t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3]
            env.close()
            ms = 1e3 * seconds / args.steps
            print(f"| {threads} | {copy} | {ms[0]:.3f} | {ms[1]:.3f} | {ms[2]:.3f} | {ms[3]:.3f} "
                  f"| {args.num_envs * args.steps / seconds.sum():,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
