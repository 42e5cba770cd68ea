"""benchmark/coinrun.sh end to end with tiny settings, and benchmark/aggregate.py on runs with known numbers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, TINY

sys.path.insert(0, os.path.join(ROOT, "benchmark"))
import aggregate  # noqa: E402

HARNESS_TINY = [*TINY[:-2], "--num-eval-episodes", "2", "--eval-frequency", "128", "--checkpoint-frequency", "128"]


def harness(*args):
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", os.path.join(ROOT, "benchmark", "coinrun.sh"), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
    )


def test_harness_runs_seeds_x_variants_then_skips_finished_runs(tmp_path):
    proc = harness(
        "--seeds",
        "1",
        "2",
        "--total-timesteps",
        "256",
        "--workers",
        "2",
        "--threads",
        "1",
        "--out",
        tmp_path,
        "--",
        *HARNESS_TINY,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(os.listdir(tmp_path / "runs")) == 6 and len(os.listdir(tmp_path / "logs")) == 6
    table = json.load(open(tmp_path / "gap_table.json"))
    assert set(table["variants"]) == {"ppo_procgen", "ppo_procgen_aug", "ppo_procgen_nobn"}
    assert table["variants"]["ppo_procgen"]["seeds"] == [1, 2] and os.path.getsize(tmp_path / "curves.png") > 10000
    assert "Gap table" in open(tmp_path / "gap_table.md").read()
    again = harness("--seeds", "1", "2", "--total-timesteps", "256", "--out", tmp_path, "--dry-run")
    assert again.returncode == 0 and again.stdout.count("done already") == 6
    longer = harness("--seeds", "1", "--variants", "ppo_procgen", "--total-timesteps", "512", "--out", tmp_path, "--dry-run")
    assert "--resume" in longer.stdout  # an unfinished run resumes from its latest checkpoint
    resumed = harness("--seeds", "1", "--variants", "ppo_procgen", "--total-timesteps", "300", "--threads", "1",
                      "--out", tmp_path, "--", *HARNESS_TINY)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    log = open(tmp_path / "logs" / "ppo_procgen__1.log").read()
    assert "step 256/256" in log and "resuming" in log and "step 384/384" in log  # the log is appended to
    table = json.load(open(tmp_path / "gap_table.json"))  # 300 steps end at 384 (whole batches of 128): its evaluation counts
    assert table["variants"]["ppo_procgen"]["beyond"] == {"1": 384}, table["variants"]["ppo_procgen"]
    shorter = harness("--seeds", "1", "2", "--total-timesteps", "256", "--out", tmp_path)
    assert shorter.returncode == 0 and shorter.stdout.count("done already") == 6, shorter.stdout + shorter.stderr
    table = json.load(open(tmp_path / "gap_table.json"))  # the table is at the harness's horizon, not a run's
    assert table["variants"]["ppo_procgen"]["steps"] == [256, 256]


def test_a_failing_run_fails_the_harness_and_is_named(tmp_path):
    ckpt = tmp_path / "runs" / "coinrun__ppo_procgen__1__1" / "checkpoints" / "step_0000000128.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not a checkpoint")  # the harness resumes the run, which then fails
    proc = harness("--seeds", "1", "--variants", "ppo_procgen", "--total-timesteps", "256", "--threads", "1",
                   "--out", tmp_path, "--", *HARNESS_TINY)  # fmt: skip
    assert proc.returncode != 0 and "ppo_procgen__1" in proc.stderr and "logs/ppo_procgen__1.log" in proc.stderr
    assert "is not a readable checkpoint" in open(tmp_path / "logs" / "ppo_procgen__1.log").read()


def test_bad_harness_options_are_refused():
    for args in [["--workers", "0"], ["--variants", "nosuch"], ["--bogus"]]:
        proc = harness(*args, "--dry-run")
        assert proc.returncode != 0 and "coinrun.sh: error" in proc.stderr
    # arguments after -- that the scripts refuse stop the harness before any run starts
    proc = harness("--slurm", "--dry-run", "--out", "/nonexistent/out", "--", "--num-envs", "3")
    assert proc.returncode == 2 and "refuses the arguments after --" in proc.stderr, proc.stderr
    assert "not divisible by --minibatch-size" in proc.stderr and not os.path.exists("/nonexistent/out")


def write_run(root, variant, seed, rows):
    d = root / "runs" / f"coinrun__{variant}__{seed}__1"
    d.mkdir(parents=True)
    (d / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def row(step, train, test):
    return {
        "global_step": step,
        "train_return": train,
        "test_return": test,
        "gap": train - test,
        "train_completion": train / 10,
        "test_completion": test / 10,
    }


def test_aggregate_gives_the_known_table(tmp_path):
    for seed, (tr, te) in enumerate([(8.0, 7.0), (9.0, 7.0), (10.0, 7.0)], start=1):
        write_run(tmp_path, "ppo_procgen", seed, [row(0, 3, 3), row(100, 1, 1), row(200, tr, te), row(300, tr, te)])
        write_run(
            tmp_path, "ppo_procgen_aug", seed, [row(0, 3, 3), row(100, 9, 8), row(200, tr, te + 1), row(300, tr, te + 1)]
        )
    aggregate.main([str(tmp_path), "--last", "2"])
    t = json.load(open(tmp_path / "gap_table.json"))
    base = t["variants"]["ppo_procgen"]
    assert base["train"]["values"] == [8.0, 9.0, 10.0] and base["train"]["mean"] == 9.0 and base["train"]["std"] == 1.0
    assert base["train"]["ci95"] == pytest.approx([9 - 4.302653 / 3**0.5, 9 + 4.302653 / 3**0.5], abs=1e-4)
    assert base["gap"]["mean"] == pytest.approx(2.0) and base["sample_efficiency"] == 200
    assert t["variants"]["ppo_procgen_aug"]["sample_efficiency"] == 100
    assert t["augmentation"]["gap_reduction"] == pytest.approx(1.0) and t["augmentation"]["train_change"] == pytest.approx(0)
    checks = {c["check"]: c["pass"] for c in t["checklist"]}
    assert checks["gap reduction from augmentation >= 0.5"] and checks["train >= 8.0"] and checks["gap < 2.0"]
    assert not checks["consistent across seeds (every seed meets train/test/gap)"]  # seed 3: gap 2.0 is not < 2.0


def test_aggregate_compares_without_batchnorm_with_a_welch_ci(tmp_path):
    for seed, (tr, te) in enumerate([(8.0, 7.0), (9.0, 7.0), (10.0, 7.0)], start=1):
        write_run(tmp_path, "ppo_procgen", seed, [row(0, 3, 3), row(100, tr, te)])
    for seed, (tr, te) in enumerate([(8.0, 5.0), (9.0, 6.0)], start=1):
        write_run(tmp_path, "ppo_procgen_nobn", seed, [row(0, 3, 3), row(100, tr, te)])
    aggregate.main([str(tmp_path), "--last", "1"])
    bn = json.load(open(tmp_path / "gap_table.json"))["batchnorm"]
    # gaps: base 1, 2, 3 (mean 2, std 1); no-BN 3, 3 (mean 3, std 0); t(0.975, df = min(3, 2) - 1 = 1) = 12.706
    half = 12.7062 * (1 / 3**0.5)
    assert bn["gap"]["difference"] == pytest.approx(1.0)
    assert bn["gap"]["ci95"] == pytest.approx([1 - half, 1 + half], abs=1e-3)
    assert bn["test"]["difference"] == pytest.approx(-1.5) and bn["train"]["difference"] == pytest.approx(-0.5)
    assert "Without BatchNorm (no-BN - base, 95% CI): train -0.50" in (tmp_path / "gap_table.md").read_text()


def test_aggregate_max_step_compares_runs_at_one_horizon(tmp_path):
    write_run(tmp_path, "long", 1, [row(0, 3, 3), row(100, 5, 4), row(200, 6, 5), row(300, 9, 9)])
    write_run(tmp_path, "short", 1, [row(0, 3, 3), row(100, 7, 6), row(200, 8, 7)])
    aggregate.main([str(tmp_path), "--last", "2", "--max-step", "200"])
    t = json.load(open(tmp_path / "gap_table.json"))["variants"]
    assert t["long"]["train"]["mean"] == 5.5 and t["long"]["steps"] == [200] and t["short"]["test"]["mean"] == 6.5
    with pytest.raises(SystemExit):
        aggregate.main([str(tmp_path), "--last", "0"])


def test_aggregate_reads_the_training_episodes_from_tensorboard(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    write_run(tmp_path, "with_events", 1, [row(0, 3, 3), row(100000, 5, 4)])
    write_run(tmp_path, "without", 1, [row(0, 3, 3), row(100000, 5, 4)])
    writer = SummaryWriter(tmp_path / "runs" / "coinrun__with_events__1__1")
    for step, ret in [(10000, 0.0), (40000, 10.0), (90000, 0.0), (100000, 10.0)]:  # 65536-step window: the last 3
        writer.add_scalar("charts/episodic_return", ret, step)
    writer.close()
    aggregate.main([str(tmp_path), "--last", "1"])
    t = json.load(open(tmp_path / "gap_table.json"))["variants"]
    assert t["with_events"]["train_episodes"]["mean"] == pytest.approx(20 / 3) and "train_episodes" not in t["without"]
    assert "| without | 1 | 100000 | 5.00 | 4.00 | 1.00 | - |" in open(tmp_path / "gap_table.md").read()
    _, episodes = aggregate.load_runs(str(tmp_path), max_step=50000)  # curves.png's third panel, cut at the horizon
    assert list(episodes["with_events"][1][0]) == [10000, 40000] and episodes["without"][1] is None


def test_aggregate_flags_a_lasting_collapse_not_one_noisy_window(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    # mean return per 65536-step window: seed 1 dips for one window, seed 2 collapses for the last two
    curves = {1: [4.0, 6.0, 6.0, 6.0, 3.0, 6.0, 6.0], 2: [4.0, 6.0, 6.0, 6.0, 6.0, 0.0, 0.0]}
    for seed, means in curves.items():
        write_run(tmp_path, "ppo_procgen_aug", seed, [row(0, 3, 3), row(7 * 65536, 5, 4)])
        writer = SummaryWriter(tmp_path / "runs" / f"coinrun__ppo_procgen_aug__{seed}__1")
        for i, mean in enumerate(means):
            for offset, ret in [(1000, mean - 1), (2000, mean + 1)]:
                writer.add_scalar("charts/episodic_return", ret, i * 65536 + offset)
        writer.close()
    aggregate.main([str(tmp_path), "--last", "1"])
    t = json.load(open(tmp_path / "gap_table.json"))
    assert t["variants"]["ppo_procgen_aug"]["largest_drop"] == pytest.approx([0.0, 6.0])  # best 262144-step mean: 6
    checks = {c["check"].split(" (")[0]: c["pass"] for c in t["checklist"]}
    assert checks["learning stable"] is False
    assert "ppo_procgen_aug: 0.00, 6.00" in open(tmp_path / "gap_table.md").read()
    assert aggregate.largest_drop(None, 65536) != aggregate.largest_drop(None, 65536)  # nan without events
    # a fall that lasts three windows counts by its smallest part, below the best 4-window mean before it (5.5)
    episodes = (np.arange(1, 8) * 65536 - 1, np.array([4.0, 6.0, 6.0, 6.0, 4.0, 3.0, 4.5]))
    assert aggregate.largest_drop(episodes, 7 * 65536) == pytest.approx(1.0)


def test_t_quantile_matches_tables():
    for df, q in [(1, 12.7062), (2, 4.3027), (5, 2.5706), (30, 2.0423)]:
        assert aggregate.t_quantile(0.975, df) == pytest.approx(q, abs=1e-3)


def test_slurm_dry_run_writes_the_job_scripts(tmp_path):
    proc = harness(
        "--slurm",
        "--dry-run",
        "--seeds",
        "1",
        "2",
        "--out",
        tmp_path,
        "--partition",
        "gpu",
        "--time",
        "2:00:00",
        "--gpus",
        "1",
        "--",
        "--num-envs",
        "8",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert (
        lines[0].startswith("sbatch --parsable --array=0-5 ") and "--partition=gpu" in lines[0] and "--gres=gpu:1" in lines[0]
    )
    assert "--dependency=afterany:" in lines[1] and lines[1].endswith(f"slurm/aggregate.sh {tmp_path}/slurm")
    sdir = tmp_path / "slurm"
    commands = (sdir / "commands.txt").read_text().splitlines()
    assert len(commands) == 6 and all("--num-envs 8" in c for c in commands)
    assert (sdir / "names.txt").read_text().split() == [
        f"{v}__{s}" for v in ["ppo_procgen", "ppo_procgen_aug", "ppo_procgen_nobn"] for s in (1, 2)
    ]
    config = (sdir / "config.sh").read_text()
    assert os.access(sdir / "array.sh", os.X_OK) and "EXPECTED=" in config
    assert "HORIZON=25001984" in config  # 25M rounded up to whole batches (8 x 256): the runs' last evaluation
    # the aggregation job, run now, names every run as missing and fails
    agg = subprocess.run(["bash", str(sdir / "aggregate.sh"), str(sdir)], capture_output=True, text=True)
    assert agg.returncode != 0 and "missing or failed" in agg.stderr
    assert all(f"{name} (at step 0 of 25000000" in agg.stderr for name in (sdir / "names.txt").read_text().split())


def ablation(*args):
    env = {**os.environ, "PYTHON": sys.executable}
    cmd = ["bash", os.path.join(ROOT, "benchmark", "ablation.sh"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


def test_ablation_runs_named_configurations_and_tables_them(tmp_path):
    only = ["--only", "default", "bn_update_running"]
    proc = ablation(*only, "--total-timesteps", 128, "--threads", 1, "--out", tmp_path, "--", *HARNESS_TINY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = sorted(os.listdir(tmp_path / "runs"))
    assert [r.split("__")[1] for r in runs] == ["bn_update_running", "default"]
    assert set(json.load(open(tmp_path / "gap_table.json"))["variants"]) == {"bn_update_running", "default"}
    dry = ablation("--only", "reference", "--out", tmp_path, "--dry-run").stdout
    assert "ppo_procgen_nobn.py --seed 1 --exp-name reference" in dry
    assert "--arch espeholt --pool flatten --num-steps 256 --minibatch-size 2048" in dry
    again = ablation("--only", "default", "--total-timesteps", 128, "--out", tmp_path, "--dry-run")
    assert "done already: default seed 1" in again.stdout
    bad = ablation("--only", "nosuch")
    assert bad.returncode == 2 and "unknown configuration 'nosuch'" in bad.stderr
    assert harness("--name", "x", "--dry-run").returncode == 2  # --name with three variants


def test_every_ablation_configuration_is_valid_for_its_script():
    import importlib
    import re

    import tyro

    listed = ablation("--help").stdout  # the configurations as the script expands them
    configs = re.findall(r"^  (\w+): +(\w+)\.py ?(.*)$", listed, re.M)
    assert len(configs) >= 14 and ("default", "ppo_procgen", "") in configs
    brief = "--arch impala --pool gap --num-steps 512 --minibatch-size 512 --norm-reward"
    assert ("brief", "ppo_procgen", brief) in configs and ("impala_gap", "ppo_procgen", "--arch impala --pool gap") in configs
    for tag, script, flags in configs:
        module = importlib.import_module(script)
        args = tyro.cli(module.Args, args=flags.split())  # a misspelt flag exits here, naming it
        module.check_args(args)
    with pytest.raises(SystemExit):
        tyro.cli(importlib.import_module("ppo_procgen").Args, args=["--no-clip-vlos"])


def test_aggregate_compares_the_seeds_of_a_row_at_their_common_step(tmp_path):
    write_run(tmp_path, "ppo_procgen", 1, [row(0, 3, 3), row(100, 5, 4), row(200, 9, 9)])
    write_run(tmp_path, "ppo_procgen", 2, [row(0, 3, 3), row(100, 7, 6)])
    (tmp_path / "random").mkdir()
    random_cell = {"mean": 3.0, "completion": 0.3}
    (tmp_path / "random" / "report.json").write_text(
        json.dumps({"checkpoints": {"random": {"train": random_cell, "test": random_cell, "gap": {"mean": 0.0}}}})
    )
    aggregate.main([str(tmp_path), "--last", "1"])
    t = json.load(open(tmp_path / "gap_table.json"))["variants"]["ppo_procgen"]
    assert t["train"]["values"] == [5.0, 7.0] and t["steps"] == [100, 100] and t["beyond"] == {"1": 200}
    md = open(tmp_path / "gap_table.md").read()
    assert "ppo_procgen seed 1 to 200" in md
    assert "|\n| random policy |" in md  # the random row stays inside the table, the note comes after it


def test_aggregate_joins_the_runs_of_several_folders(tmp_path, capsys):
    base, nobn, out = tmp_path / "base", tmp_path / "nobn", tmp_path / "both"
    write_run(base, "ppo_procgen", 1, [row(0, 3, 3), row(100, 8, 7)])
    for seed, (tr, te) in enumerate([(9.0, 7.0), (8.0, 5.0)], start=1):
        write_run(nobn, "ppo_procgen_nobn", seed, [row(0, 3, 3), row(100, tr, te)])
    aggregate.main([str(base), str(nobn), "--out", str(out), "--last", "1"])
    t = json.load(open(out / "gap_table.json"))
    assert sorted(t["variants"]) == ["ppo_procgen", "ppo_procgen_nobn"]
    assert t["variants"]["ppo_procgen_nobn"]["gap"]["values"] == [2.0, 3.0]
    assert t["batchnorm"]["gap"]["difference"] == pytest.approx(1.5)  # no-BN 2.5 - base 1.0
    assert (out / "curves.png").is_file() and not (base / "gap_table.json").exists()
    assert "Not like for like" not in (out / "gap_table.md").read_text()
    longer = tmp_path / "longer"  # no-BN runs that went further than the base: compared at different steps unless cut
    for seed in [1, 2]:
        write_run(longer, "ppo_procgen_nobn", seed, [row(0, 3, 3), row(100, 8, 7), row(200, 9, 7)])
    aggregate.main([str(base), str(longer), "--out", str(out), "--last", "1"])
    assert "Not like for like: ppo_procgen at step 100, ppo_procgen_nobn at step 200" in (out / "gap_table.md").read_text()
    aggregate.main([str(base), str(longer), "--out", str(out), "--last", "1", "--max-step", "100"])
    assert "Not like for like" not in (out / "gap_table.md").read_text()
    with pytest.raises(SystemExit):  # several folders need --out
        aggregate.main([str(base), str(nobn)])
    assert "--out names the folder" in capsys.readouterr().err
    write_run(tmp_path / "again", "ppo_procgen_nobn", 2, [row(0, 3, 3), row(100, 8, 8)])
    with pytest.raises(SystemExit, match="ppo_procgen_nobn seed 2 is in both"):
        aggregate.main([str(nobn), str(tmp_path / "again"), "--out", str(out)])
