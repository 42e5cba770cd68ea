"""Where a rollout's env time goes: procgen's stepping (gym3 `act` returns at once, `observe` waits for the stepping
threads) against gym3's per-step Python (`get_info`, 64 dicts), for several procgen thread counts. CPU only, no torch.
Usage: python benchmark/env_speed.py [--num-envs 64] [--steps 400] [--threads 1 2 4]
"""

import argparse
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    if args.num_envs <= 0 or args.steps <= 0 or min(args.threads) <= 0:
        parser.error("--num-envs, --steps and --threads must be positive")
    from procgen import ProcgenGym3Env

    print(f"| procgen threads | act (ms/step) | observe (ms/step) | get_info (ms/step) | {args.num_envs}-env steps/s |")
    print("|---|---|---|---|---|")
    for threads in args.threads:
        env = ProcgenGym3Env(num=args.num_envs, env_name="coinrun", num_levels=200, distribution_mode="easy",
                             rand_seed=1, num_threads=threads)  # fmt: skip
        actions = np.random.default_rng(0).integers(0, 15, (args.steps + 100, args.num_envs)).astype(np.int32)
        seconds = np.zeros(3)
        for k, action in enumerate(actions):
            t0 = time.perf_counter()
            env.act(action)
            t1 = time.perf_counter()
            env.observe()
            t2 = time.perf_counter()
            env.get_info()
            if k >= 100:  # the first 100 steps are warm-up
                seconds += [t1 - t0, t2 - t1, time.perf_counter() - t2]
        ms = 1e3 * seconds / args.steps
        print(f"| {threads} | {ms[0]:.3f} | {ms[1]:.3f} | {ms[2]:.3f} | {args.num_envs * args.steps / seconds.sum():,.0f} |")


if __name__ == "__main__":
    main()
