"""Did the penultimate layer degrade before the no-BN run collapsed? (session 14)

Run from the repository root, after extracting the checkpoints that later commits pruned (COMMAND.md, "Representation"):
    python benchmark/results/long_seed1/representation_check.py /tmp/reps/*/checkpoints/*.pt
Every checkpoint is measured twice with eval_generalization.representation (feature rank, dead units, pre-activation
norm, entropy): on frames from its own play (as eval_generalization.py's report does), and on one common set of
frames for all, reached by the no-BN run's last checkpoint before the collapse (2,490,368 steps), so that the
collapsed policy's less varied frames cannot lower its numbers. Frames: 256 training-level and 256 test-level envs
after 30 greedy steps, as in the report.
"""

import os
import sys

import torch

sys.path.insert(0, os.getcwd())
import eval_generalization as eg  # noqa: E402

COMMON = "benchmark/results/long_seed1/runs/coinrun__ppo_procgen_nobn__1__1795614836/checkpoints/step_0002490368.pt"
torch.set_num_threads(1)
cpu = torch.device("cpu")


def frames_of(module, a, agent):
    return eg.policy_frames(module, agent, a["env_id"], a["num_levels"], a["distribution_mode"], 256, 30, cpu)


module, a, _, agent, _ = eg.load_agent(COMMON, cpu)
common = frames_of(module, a, agent)
print("| checkpoint | frames | feature rank | dead units | pre-activation norm | entropy |\n|---|---|---|---|---|---|")
for path in sys.argv[1:]:
    module, a, _, agent, step = eg.load_agent(path, cpu)
    name = eg.short_name(f"{os.path.basename(os.path.dirname(os.path.dirname(path)))}@{step}")
    for label, frames in [("own", frames_of(module, a, agent)), ("common", common)]:
        r = eg.representation(agent, frames, cpu)
        print(
            f"| {name} | {label} | {r['feature_rank']} | {r['dead_units']:.1%} | {r['preactivation_norm']:.1f} "
            f"| {r['entropy']:.3f} |",
            flush=True,
        )
