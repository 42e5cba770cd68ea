"""eval_generalization.py against a checkpoint made by a tiny training run."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, run_dirs, run_script

import eval_generalization as eg
import ppo_procgen as base

SMALL = [
    "--num-train-levels",
    "3",
    "--episodes-per-level",
    "2",
    "--test-episodes",
    "5",
    "--max-envs",
    "4",
    "--feature-frames",
    "8",
]


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    proc = run_script(
        "eval_generalization.py",
        tiny_run[0],
        "--random",
        *SMALL,
        "--show-levels",
        "3",
        "--saliency",
        "2",
        "--videos",
        "1",
        "--out",
        out,
    )
    return out, json.load(open(out / "report.json")), proc


def test_report_has_the_fields(report):
    out, data, proc = report
    names = list(data["checkpoints"])
    assert len(names) == 2 and names[1] == "random" and names[0].endswith("@384")
    for r in data["checkpoints"].values():
        assert r["train"]["episodes"] == 6 and r["test"]["episodes"] == 5
        for split in ["train", "test"]:
            assert {"mean", "std", "ci95", "completion", "timeout", "episodes", "mean_length", "normalized"} <= set(r[split])
            assert r[split]["completion"] + r[split]["timeout"] <= 1
            assert r[split]["ci95"][0] <= r[split]["mean"] <= r[split]["ci95"][1]
        assert r["gap"]["mean"] == pytest.approx(r["train"]["mean"] - r["test"]["mean"])
    md = open(out / "report.md").read()
    assert "| random |" in md and "Hardest training levels" in md and md in proc.stdout
    assert 0 <= data["checkpoints"][names[0]]["feature_shift_probe_accuracy"] <= 1
    mix = data["checkpoints"][names[0]]["action_mix"]
    assert set(mix) == {"left", "right", "jump"} and all(0 <= p <= 1 for p in mix.values()) and "Action mix" in md
    shift = data["checkpoints"][names[0]]["shift_sensitivity"]
    assert shift["pixels"] == 4 and shift["kl"] >= 0 and -1 <= shift["feature_cosine"] <= 1 and "Shift sensitivity" in md
    rep = data["checkpoints"][names[0]]["representation"]
    assert rep["units"] == 256 and rep["frames"] == 16 and 1 <= rep["feature_rank"] <= 16 and "Representation" in md
    assert 0 <= rep["dead_units"] <= 1 and rep["preactivation_norm"] > 0 and 0 < rep["entropy"] <= np.log(15) + 1e-6
    assert "shift_sensitivity" not in data["checkpoints"]["random"]


def test_videos_are_written_with_how_each_episode_ended(report):
    out, data, _ = report
    for r in data["checkpoints"].values():
        assert 1 <= len(r["videos"]) <= 2
        for v in r["videos"]:
            assert v["outcome"] in ("coin", "death", "timeout") and (v["outcome"] == "coin") == (v["return"] == 10)
            assert (v["outcome"] == "timeout") == (v["length"] >= 1000) or v["outcome"] == "coin"
            assert os.path.getsize(out / v["file"]) > 10000
    assert "Episodes recorded for random" in open(out / "report.md").read()


def test_level_pictures_and_saliency_are_written(report):
    out, data, _ = report
    name = next(iter(data["checkpoints"])).replace("@", "_step")
    assert os.path.getsize(out / "levels.png") > 5000 and os.path.getsize(out / f"saliency_{name}.png") > 5000


def test_saliency_is_the_input_gradient():
    import ppo_procgen

    torch.manual_seed(0)
    agent = ppo_procgen.Agent(15).eval()
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    maps = eg.saliency(agent, frames, torch.device("cpu"))
    assert maps.shape == (2, 64, 64) and (maps >= 0).all() and maps.max() > 0
    x = torch.tensor(frames[:1], dtype=torch.float32)  # finite difference on the most salient pixel
    i, j = np.unravel_index(maps[0].argmax(), (64, 64))
    with torch.no_grad():
        logits = agent.actor(agent.network(x.permute(0, 3, 1, 2) / 255.0))
        a = logits.argmax()
        c = torch.stack(
            [
                agent.actor(
                    agent.network(
                        x.index_put(
                            (torch.tensor(0), torch.tensor(i), torch.tensor(j), torch.tensor(ch)), x[0, i, j, ch] + 1.0
                        ).permute(0, 3, 1, 2)
                        / 255.0
                    )
                )[0, a]
                for ch in range(3)
            ]
        )
    assert (c - logits[0, a]).abs().max().item() == pytest.approx(maps[0, i, j], rel=0.2)


def test_feature_shift_probe_separates_only_what_differs():
    import ppo_procgen

    torch.manual_seed(0)
    agent = ppo_procgen.Agent(15).eval()
    rng = np.random.default_rng(0)
    same = rng.integers(0, 256, (2, 64, 64, 64, 3), dtype=np.uint8)
    shifted = same.copy()
    shifted[1] = shifted[1] // 2  # test frames darker
    assert eg.feature_shift(agent, shifted, torch.device("cpu")) > 0.9
    assert 0.3 < eg.feature_shift(agent, same, torch.device("cpu")) < 0.7


def test_shift_sensitivity_moves_the_image_with_edge_padding():
    import ppo_procgen

    torch.manual_seed(0)
    agent = ppo_procgen.Agent(15).eval()
    # trained-looking logits: the 0.01-std head's KLs are ~1e-7, fp32 rounding, and came out negative on an AVX2 CPU
    torch.nn.init.normal_(agent.actor.weight, std=0.5)
    flat = np.full((2, 4, 64, 64, 3), 90, dtype=np.uint8)  # one colour: edge padding leaves it unchanged, zeros would not
    flat[1] = 200
    same = eg.shift_sensitivity(agent, flat, torch.device("cpu"))
    assert same["kl"] == pytest.approx(0, abs=1e-7) and same["feature_cosine"] == pytest.approx(1, abs=1e-6)
    frames = np.zeros((1, 4, 64, 64, 3), dtype=np.uint8)
    frames[:, :, 20:40, 28:36] = 255  # a bar: moving it moves the features
    moved = eg.shift_sensitivity(agent, frames, torch.device("cpu"))
    assert moved["kl"] > 1e-4 and moved["feature_cosine"] < 0.9999
    assert moved["kl_ci95"][0] <= moved["kl"] <= moved["kl_ci95"][1]


def test_action_mix_groups_procgen_actions():
    class Fixed(torch.nn.Module):  # always the same logits: all mass on LEFT+UP (2) and RIGHT (7)
        def forward(self, x):
            logits = torch.full((len(x), 15), -1e9)
            logits[:, [2, 7]] = 0.0
            return logits, torch.zeros(len(x))

    frames = np.zeros((2, 3, 64, 64, 3), dtype=np.uint8)
    mix = eg.action_mix(Fixed(), frames, torch.device("cpu"))
    assert mix == pytest.approx({"left": 0.5, "right": 0.5, "jump": 0.5})
    uniform = eg.action_mix(eg.RandomAgent(), frames, torch.device("cpu"))
    assert uniform == pytest.approx({"left": 0.2, "right": 0.2, "jump": 0.2})


def test_per_level_csv_covers_each_level(report):
    out, _, _ = report
    rows = list(csv.DictReader(open(out / "levels_random.csv")))
    assert [int(r["level"]) for r in rows] == [0, 1, 2] and all(int(r["episodes"]) == 2 for r in rows)


def test_per_level_envs_play_exactly_level_k():
    envs = eg.per_level_envs("coinrun", [7, 123], 3, "easy", 1)
    envs.reset()
    for _ in range(30):
        _, _, _, infos = envs.step(np.random.randint(0, 15, envs.num_envs))
        assert [i["level_seed"] for i in infos] == [7, 7, 7, 123, 123, 123]


def test_ci_matches_a_reference_computation():
    rng = np.random.default_rng(0)
    returns = rng.choice([0.0, 10.0], 400, p=[0.3, 0.7])
    s = eg.summarize(returns, returns > 0, np.full(400, 100), "coinrun")
    se = np.sqrt(np.sum((returns - returns.mean()) ** 2) / 399) / np.sqrt(400)
    assert s["ci95"] == pytest.approx([returns.mean() - 1.96 * se, returns.mean() + 1.96 * se])
    assert s["normalized"] == pytest.approx((returns.mean() - 5) / 5) and s["completion"] == pytest.approx(0.7, abs=0.05)
    lengths = np.where(returns > 0, 100, np.arange(400) % 2 * 1000)  # half of the failures run to the timeout
    timeout = eg.summarize(returns, returns > 0, lengths, "coinrun")["timeout"]
    assert timeout == pytest.approx((returns == 0).mean() / 2, abs=0.01)


@pytest.mark.parametrize(
    "make_path, message",
    [
        (lambda d: os.path.join(d, "missing.pt"), "no such checkpoint"),
        (lambda d: os.path.join(ROOT, "README.md"), "not a readable checkpoint"),
        (lambda d: str(d), "no checkpoint in"),
    ],
)
def test_bad_input_is_refused_clearly(tmp_path, make_path, message):
    proc = run_script("eval_generalization.py", make_path(tmp_path), *SMALL, check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr


def test_checkpoint_of_an_unknown_variant_is_refused(tmp_path):
    import torch

    torch.save({"variant": "os", "model": {}, "args": {}}, tmp_path / "x.pt")
    proc = run_script("eval_generalization.py", tmp_path / "x.pt", check=False)
    assert proc.returncode != 0 and "not one of this project's scripts" in proc.stderr


def test_checkpoint_whose_variant_script_is_absent_is_refused(tiny_run, tmp_path):
    import shutil

    import torch

    for f in ["eval_generalization.py", "ppo_procgen.py"]:
        shutil.copy(os.path.join(ROOT, f), tmp_path / f)
    ckpt = torch.load(sorted((Path(tiny_run[0]) / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    ckpt["variant"] = "ppo_procgen_aug"
    torch.save(ckpt, tmp_path / "aug.pt")
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "eval_generalization.py"), str(tmp_path / "aug.pt")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert proc.returncode != 0 and "needs ppo_procgen_aug.py, which is not here" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_checkpoint_that_does_not_fit_its_architecture_is_refused(tiny_run, tmp_path):
    import torch

    ckpt = torch.load(sorted((Path(tiny_run[0]) / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    ckpt["args"]["arch"] = "impala"  # espeholt weights, impala network
    torch.save(ckpt, tmp_path / "x.pt")
    proc = run_script("eval_generalization.py", tmp_path / "x.pt", *SMALL, check=False)
    assert proc.returncode != 0 and "does not fit ppo_procgen.py's impala network" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_random_baseline_plays_the_runs_own_training_levels(tmp_path):
    # With few training levels the gap must be read against a baseline on the same levels (README, "Results").
    run_script("ppo_procgen.py", *TINY, "--num-levels", "2", "--start-level", "5", "--total-timesteps", "128",
               "--eval-frequency", "128", "--runs-dir", tmp_path / "runs")  # fmt: skip
    run_dir = run_dirs(tmp_path / "runs")[0]
    out = tmp_path / "report"
    run_script("eval_generalization.py", run_dir, "--random", "--episodes-per-level", "2", "--test-episodes", "2",
               "--feature-frames", "0", "--out", out)  # fmt: skip
    for name in ["levels_random.csv", next(f for f in os.listdir(out) if f.startswith("levels_coinrun"))]:
        rows = list(csv.DictReader(open(out / name)))
        assert [int(r["level"]) for r in rows] == [5, 6] and all(int(r["episodes"]) == 2 for r in rows)


def test_only_seeds_of_one_configuration_are_averaged():
    def rep(variant, train, test, **changes):
        a = {"seed": 1, "exp_name": variant, "total_timesteps": 1000, "arch": "espeholt", "num_levels": 200, **changes}
        return {"variant": variant, "config": eg.configuration(base, a), "train": {"mean": train},
                "test": {"mean": test}, "gap": {"mean": train - test}}  # fmt: skip

    results = {
        "s1": rep("ppo_procgen", 7.0, 6.0),
        "s2": rep("ppo_procgen", 8.0, 7.0, seed=2, total_timesteps=2000, num_iterations=2, exp_name="other"),  # s1's seed
        "aug": rep("ppo_procgen_aug", 9.0, 9.0),
        "impala": rep("ppo_procgen", 1.0, 1.0, arch="impala"),
        "random": {"train": {"mean": 3.0}, "test": {"mean": 3.0}, "gap": {"mean": 0.0}},
    }
    summary = eg.across_checkpoints(results)
    assert list(summary) == ["ppo_procgen (configuration 1)"]
    s = summary["ppo_procgen (configuration 1)"]
    assert s["checkpoints"] == ["s1", "s2"] and s["train"]["mean"] == 7.5 and s["gap"]["values"] == [1.0, 1.0]
    assert s["test"]["std"] == pytest.approx(np.std([6.0, 7.0], ddof=1))
    del results["impala"]
    assert list(eg.across_checkpoints(results)) == ["ppo_procgen"]


def test_variants_are_compared_with_the_base_by_a_welch_ci():
    def rep(variant, seed, train, test):
        a = {"seed": seed, "exp_name": variant, "total_timesteps": 1000}
        return {"variant": variant, "config": eg.configuration(base, a), "train": {"mean": train},
                "test": {"mean": test}, "gap": {"mean": train - test}}  # fmt: skip

    results = {
        "b1": rep("ppo_procgen", 1, 8.0, 7.0),
        "b2": rep("ppo_procgen", 2, 8.0, 8.0),
        "b3": rep("ppo_procgen", 3, 8.0, 6.0),
        "n1": rep("ppo_procgen_nobn", 1, 8.0, 6.0),
        "n2": rep("ppo_procgen_nobn", 2, 9.0, 6.0),
    }
    summary = eg.across_checkpoints(results)
    assert "vs_base" not in summary["ppo_procgen"]
    d = summary["ppo_procgen_nobn"]["vs_base"]
    # base test 7, 8, 6 (std 1, n 3); no-BN 6, 6 (std 0, n 2): se = 1 / sqrt(3), t(0.975, 1) = 12.706
    assert d["test"]["difference"] == pytest.approx(-1.0)
    assert d["test"]["ci95"] == pytest.approx([-1 - 12.7062 / 3**0.5, -1 + 12.7062 / 3**0.5], abs=1e-3)
    assert d["train"]["difference"] == pytest.approx(0.5) and d["gap"]["difference"] == pytest.approx(1.5)
    opts = SimpleNamespace(greedy=False, episodes_per_level=5, test_episodes=1000)
    text = eg.markdown({"checkpoints": {}, "across_checkpoints": summary, "level_agreement": {}}, opts)
    assert "| ppo_procgen_nobn | +0.50 [" in text and "| -1.00 [-8.34, +6.34] | +1.50 [" in text
    del results["n2"]  # one no-BN checkpoint: no group to compare
    assert "ppo_procgen_nobn" not in eg.across_checkpoints(results)


def test_level_agreement_correlates_per_level_returns():
    def levels(returns, completion=None):
        return [(k, 5, r, r / 10 if completion is None else completion[k]) for k, r in enumerate(returns)]

    a, b = [10.0, 0.0, 6.0, 10.0], [8.0, 2.0, 4.0, 10.0]
    agree = eg.level_agreement({"x": levels(a), "y": levels(b), "random": levels([2.0, 2.0, 2.0, 2.0])})
    assert agree["policies"] == ["x", "y", "random"] and agree["levels"] == [0, 1, 2, 3]
    assert agree["correlation"][0][1] == pytest.approx(np.corrcoef(a, b)[0, 1]) and agree["correlation"][0][0] == 1
    assert agree["correlation"][0][2] is None  # the random row is constant: no correlation, not nan in the json
    assert agree["failed_by_all"] == [] and agree["finished_by_all"] == [3]  # random's completions do not count
    agree = eg.level_agreement({"x": levels(a), "z": levels([0.0, 0.0, 5.0, 10.0])})
    assert agree["failed_by_all"] == [1] and agree["finished_by_all"] == [3]
    assert eg.level_agreement({"x": levels(a)}) == {}
    assert eg.level_agreement({"x": levels(a), "short": levels(b[:3])}) == {}  # different levels: not compared


def test_report_has_the_level_agreement(report):
    out, data, _ = report
    agree = data["level_agreement"]
    assert agree["policies"] == list(data["checkpoints"]) and agree["levels"] == [0, 1, 2]
    assert len(agree["correlation"]) == 2 and "Level agreement" in open(out / "report.md").read()


def test_representation_counts_rank_dead_units_and_norm():
    import ppo_procgen

    torch.manual_seed(0)
    agent = ppo_procgen.Agent(15).eval()
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 64, 3), dtype=np.uint8)
    healthy = eg.representation(agent, frames, torch.device("cpu"))
    assert healthy["frames"] == 128 and healthy["feature_rank"] > 20 and healthy["dead_units"] < 0.5
    last = agent.network[-2]  # the torso's last Linear: make units 0..191 dead, 192..255 copies of one direction
    with torch.no_grad():
        last.weight[:192], last.bias[:192] = 0.0, -1.0
        last.weight[192:], last.bias[192:] = last.weight[192], 1.0 + torch.arange(64.0)
    r = eg.representation(agent, frames, torch.device("cpu"))
    assert r["dead_units"] == 0.75
    # every live unit is w.x + 1 + k, so features span only {w.x, 1}: rank 2 at most
    assert r["feature_rank"] <= 2
    with torch.no_grad():
        pre = agent.network[:-1](torch.as_tensor(frames.reshape(-1, 64, 64, 3)).permute(0, 3, 1, 2).float() / 255.0)
    assert r["preactivation_norm"] == pytest.approx(pre.norm(dim=-1).mean().item(), rel=1e-5)
    with torch.no_grad():
        agent.actor.weight.zero_(), agent.actor.bias.zero_()
    assert eg.representation(agent, frames, torch.device("cpu"))["entropy"] == pytest.approx(np.log(15), rel=1e-5)
