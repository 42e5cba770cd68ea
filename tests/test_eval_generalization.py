"""eval_generalization.py against a checkpoint made by a tiny training run."""

import csv
import json
import os

import numpy as np
import pytest
from conftest import ROOT, run_script

import eval_generalization as eg

SMALL = ["--num-train-levels", "3", "--episodes-per-level", "2", "--test-episodes", "5", "--max-envs", "4"]


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    proc = run_script("eval_generalization.py", tiny_run[0], "--random", *SMALL, "--out", out)
    return out, json.load(open(out / "report.json")), proc


def test_report_has_the_fields(report):
    out, data, proc = report
    names = list(data["checkpoints"])
    assert len(names) == 2 and names[1] == "random" and names[0].endswith("@384")
    for r in data["checkpoints"].values():
        assert r["train"]["episodes"] == 6 and r["test"]["episodes"] == 5
        for split in ["train", "test"]:
            assert {"mean", "std", "ci95", "completion", "episodes", "mean_length", "normalized"} <= set(r[split])
            assert r[split]["ci95"][0] <= r[split]["mean"] <= r[split]["ci95"][1]
        assert r["gap"]["mean"] == pytest.approx(r["train"]["mean"] - r["test"]["mean"])
    md = open(out / "report.md").read()
    assert "| random |" in md and "Hardest training levels" in md and md in proc.stdout


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
