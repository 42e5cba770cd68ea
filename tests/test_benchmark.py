"""Benchmark helpers: the reference comparison reads the published curve correctly; the speed tables and the GPU
session script run."""

import json
import math
import os
import subprocess
import sys

import torch
from conftest import ROOT, final_weights, read_eval, run_script


def test_vs_reference_interpolates_the_published_curve(tmp_path):
    path = tmp_path / "eval.jsonl"
    rows = [{"global_step": s, "train_return": 7.0, "test_return": 6.0, "gap": 1.0} for s in (100000, 500000, 625000)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_script("benchmark/vs_reference.py", path).stdout
    assert "| 100000 | 7.00 | 6.00 | +1.00 | - | - | - |" in out  # before the reference's first point
    assert "| 500000 | 7.00 | 6.00 | +1.00 | - | 6.79 | 6.34 |" in out  # the CSV's own row (6.785, 6.340)
    assert "| 625000 | 7.00 | 6.00 | +1.00 | - | 6.99 | 6.54 |" in out  # halfway to 750000 (7.189, 6.740)
    assert run_script("benchmark/vs_reference.py", tmp_path / "missing.jsonl", check=False).returncode != 0


def test_vs_reference_averages_blocks_of_evaluations(tmp_path):
    path = tmp_path / "eval.jsonl"
    rows = [(0, 3.0, 3.0), (250000, 6.0, 5.0), (500000, 8.0, 6.0), (750000, 9.0, 7.0)]
    path.write_text("".join(json.dumps({"global_step": s, "train_return": a, "test_return": b, "gap": a - b}) + "\n"
                            for s, a, b in rows))  # fmt: skip
    out = run_script("benchmark/vs_reference.py", path, "--block", "500000").stdout
    assert "| 0 | 1 | 3.00 | 3.00 | +0.00 | - | - | - |" in out
    # 250000 and 500000 together; the reference at those two steps: (5.979 + 6.785) / 2, (5.455 + 6.340) / 2
    assert "| 500000 | 2 | 7.00 | 5.50 | +1.50 | - | 6.38 | 5.90 |" in out
    assert "| 1000000 | 1 | 9.00 | 7.00 | +2.00 | - | 7.19 | 6.74 |" in out  # the CSV's row at 750000
    proc = run_script("benchmark/vs_reference.py", path, "--block", "0", check=False)
    assert proc.returncode != 0 and "--block must be positive" in proc.stderr and "Traceback" not in proc.stderr


def test_vs_reference_averages_the_training_episodes_of_the_window(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path)
    for step, ret in [(1000, 0.0), (70000, 10.0), (80000, 0.0), (131072, 10.0), (131072, 10.0)]:
        writer.add_scalar("charts/episodic_return", ret, step)
    writer.close()
    rows = [{"global_step": s, "train_return": 7.0, "test_return": 6.0, "gap": 1.0} for s in (0, 131072)]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_script("benchmark/vs_reference.py", tmp_path).stdout
    assert "| 0 | 7.00 | 6.00 | +1.00 | - | - | - |" in out  # no episode ended yet
    assert "| 131072 | 7.00 | 6.00 | +1.00 | 7.50 | - | - |" in out  # the 4 episodes after step 65536


def test_scalars_averages_each_tag_over_blocks_of_steps(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path / "run")
    for step, kl, entropy in [(100, 0.01, 2.0), (200, 0.03, 2.2), (300, 0.05, 1.0)]:
        writer.add_scalar("losses/approx_kl", kl, step)
        if step != 300:
            writer.add_scalar("losses/entropy", entropy, step)
    writer.close()
    out = run_script("benchmark/scalars.py", tmp_path / "run", "--block", "200", "--tags", "losses/approx_kl",
                     "losses/entropy", "losses/clipfrac").stdout  # fmt: skip
    assert "| steps up to | approx_kl | entropy | clipfrac |" in out
    assert "| 200 | 0.02 | 2.1 | - |" in out and "| 400 | 0.05 | - | - |" in out  # (0, 200] and (200, 400]
    run_script("benchmark/scalars.py", tmp_path / "run", "--block", "200", "--plot", tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob("*.tmp*"))
    for bad in [tmp_path / "s.txt", tmp_path / "missing" / "s.png"]:
        proc = run_script("benchmark/scalars.py", tmp_path / "run", "--plot", bad, check=False)
        assert proc.returncode != 0 and "--plot needs a .png file" in proc.stderr and not bad.exists()
    proc = run_script("benchmark/scalars.py", tmp_path, check=False)  # no event files there
    assert proc.returncode != 0 and "no TensorBoard events" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_script("benchmark/scalars.py", tmp_path / "run", "--block", "0", check=False)
    assert proc.returncode != 0 and "--block must be positive" in proc.stderr


def test_bn_mismatch_measures_acting_vs_update_policy(tiny_run):
    args = ("--num-steps", "8", "--minibatch-sizes", "16", "32", "--per-layer")
    out = run_script("benchmark/bn_mismatch.py", tiny_run[0], *args).stdout
    cells = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "KL" not in line]
    # row -> (KL, value shift mean, value shift rms, value loss); BN layer -> (channels, KL, value shift, mean shift)
    rows = {c[0].strip(): [float(x) for x in c[1:]] for c in cells if len(c) == 5}
    layers = {c[0].strip(): [float(x) for x in c[1:]] for c in cells if len(c) == 5 and c[0].startswith(" network")}
    assert "step 384, 32 observations" in out and len(rows) - len(layers) == 6
    kl, shift, rms, loss = rows["eval mode, batch 64 (numerics only)"]
    assert kl < 1e-6 and abs(shift) < 1e-4 and rms < 1e-4 and loss > 0  # the acting policy and value themselves
    kl, shift, rms, loss = rows["train mode, minibatch 16 (the update's view)"]
    assert kl > 0 and rms > 0 and abs(shift) <= rms and loss > 0
    assert rows["eval mode, statistics re-estimated on this rollout"][0] > 0
    noise = rows["eval mode on the second half, first half's statistics vs. its own (sampling noise, same weights)"]
    assert noise[0] > 0 and noise[2] > 0 and math.isnan(noise[3])  # no value targets for that comparison
    assert len(layers) == 15 and "network.0.1" in layers  # 3 stages: conv-BN, 2 residual blocks of 2 BN each
    assert all(v[1] >= 0 for v in layers.values()) and max(v[1] for v in layers.values()) > 0
    proc = run_script("benchmark/bn_mismatch.py", "/nonexistent", check=False)
    assert proc.returncode != 0 and "no checkpoint" in proc.stderr and "Traceback" not in proc.stderr


def test_speed_table_has_a_row_per_option_set():
    sets = ["fp32", "default_no_retain"]
    tiny = ["--minibatch-size", "64", "--num-eval-episodes", "2", "--threads", "1"]
    args = ("--iterations", "2", "--num-envs", "4", "--num-steps", "32", "--sets", *sets, "--", *tiny)
    out = run_script("benchmark/speed.py", *args).stdout
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r[0] for r in rows] == ["| options", "| fp32", "| default_no_retain"]
    assert rows[0][-2:] == ["peak memory (GiB)", "GPU memory (GiB) |"]
    assert rows[1][2] == "1.00x" and all(float(v.strip(" |")) > 0 for r in rows[1:] for v in r[3:-1])
    assert all(r[-1] == "- |" for r in rows[1:])  # no GPU memory on cpu
    assert "--no-retain-memory" in out and "--amp none --no-channels-last" in out  # the commands it ran


def test_every_speed_option_set_is_valid_for_each_script():
    import importlib

    import tyro

    sys.path.insert(0, os.path.join(ROOT, "benchmark"))
    import speed

    assert {"fp32", "default", "default+env16+compile"} <= set(speed.OPTION_SETS)
    for script in ["ppo_procgen", "ppo_procgen_aug", "ppo_procgen_nobn"]:
        module = importlib.import_module(script)
        for flags in speed.OPTION_SETS.values():
            module.check_args(tyro.cli(module.Args, args=flags))  # a misspelt flag exits here, naming it
    args = tyro.cli(module.Args, args=speed.OPTION_SETS["default+env16+compile"])
    assert (args.env_threads, args.compile, args.amp, args.channels_last) == (16, True, "auto", True)


def test_env_speed_times_each_thread_count_and_copy():
    args = ["--num-envs", "4", "--steps", "20", "--threads", "1", "2", "--copy", "none", "torch"]
    out = run_script("benchmark/env_speed.py", *args).stdout
    rows = [line.strip("| ").split(" | ") for line in out.splitlines() if line[:3] in ("| 1", "| 2")]
    assert [r[:2] for r in rows] == [["1", "none"], ["1", "torch"], ["2", "none"], ["2", "torch"]]
    assert all(float(v) >= 0 for r in rows for v in r[2:6]) and all(float(r[6].replace(",", "")) > 0 for r in rows)
    for bad, message in [(["--threads", "0"], "must be positive"), (["--copy", "cupy"], "invalid choice")]:
        proc = run_script("benchmark/env_speed.py", *bad, check=False)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr


def test_kernel_profile_lists_the_scripts_operators(tmp_path):
    script = tmp_path / "work.py"  # a stand-in for a training script: its arguments reach it, its ops are profiled
    script.write_text("import sys, torch\nfor _ in range(int(sys.argv[1])):\n    torch.mm(torch.eye(8), torch.eye(8))\n")
    out = run_script("benchmark/kernel_profile.py", "--rows", "5", script, "7").stdout
    assert "operators by self_cpu_time_total" in out and "Self CPU" in out
    assert [line.split()[-1] for line in out.splitlines() if line.strip().startswith("aten::mm ")] == ["7"]  # calls
    proc = run_script("benchmark/kernel_profile.py", tmp_path / "missing.py", check=False)
    assert proc.returncode != 0 and "no script" in proc.stderr and "Traceback" not in proc.stderr


def test_update_speed_times_each_set_and_lists_its_operators():
    out = run_script("benchmark/update_speed.py", "--device", "cpu", "--sets", "fp32", "default", "--steps", "2",
                     "--kernels", "3", "--sync", "--", "--minibatch-size", "8", "--threads", "1").stdout  # fmt: skip
    assert "the host waiting for the GPU twice a minibatch (--sync)" in out
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.splitlines() if line.startswith("| ")}
    assert set(rows) == {"options", "fp32", "default"}
    for name in ["fp32", "default"]:  # ms, then (after the speed-up) the split, per iteration and warm-up
        assert all(float(rows[name][i]) > 0 for i in [0, 2, 3, 4, 5, 6]) and rows[name][7].strip() == "-"
    assert rows["fp32"][1].strip() == "1.00x" and "an iteration's update is 6144 of them" in out  # 64 x 256 / 8 x 3
    assert out.count("operators over 3 minibatch steps") == 2 and "aten::" in out
    bad = run_script("benchmark/update_speed.py", "--device", "cpu", "--", "--bogus", check=False)
    assert bad.returncode != 0 and "bad script flags" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_script("benchmark/update_speed.py", "--script", "missing.py", check=False)
    assert bad.returncode != 0 and "no script missing.py" in bad.stderr and "Traceback" not in bad.stderr


def test_gpu_session_brings_back_a_resumable_run_folder(tmp_path):
    script = os.path.join(ROOT, "benchmark", "gpu_session.sh")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PY": sys.executable, "NO_INSTALL": "1", "DEVICE": "cpu", "TINY": "1",
           "SETS": "", "VARIANTS": "", "END_S": "100000", "SCRIPT": "ppo_procgen_nobn.py",
           "OUT": str(tmp_path / "out")}  # fmt: skip
    proc = subprocess.run(["bash", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "out" / "run"
    assert [json.loads(line)["global_step"] for line in (run / "eval.jsonl").read_text().splitlines()] == [0, 256, 512]
    assert os.listdir(run / "checkpoints") == ["step_0000000512.pt"] and list(run.glob("events.out.tfevents.*"))
    assert torch.load(run / "checkpoints" / "step_0000000512.pt", weights_only=False)["variant"] == "ppo_procgen_nobn"
    host = (tmp_path / "out" / "host.md").read_text()  # procgen's stepping by thread count, then the profile
    assert "| 2 |" in host and "cProfile of ppo_procgen_nobn.py" in host and "ppo_procgen_nobn.py" in host.split("tottime")[1]
    assert "ppo_procgen_nobn.py update on cpu" in host and "| default |" in host  # the update alone (update_speed.py)
    assert host.count("ppo_procgen_nobn.py update on cpu") == 2 and "twice a minibatch (--sync)" in host  # and as before
    # the folder it brought back continues in a later session (TINY resumes to 1024 steps)
    proc = subprocess.run(["bash", script], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**env, "RESUME": str(run), "OUT": str(tmp_path / "out2")})  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = (tmp_path / "out2" / "run" / "eval.jsonl").read_text().splitlines()
    assert [json.loads(line)["global_step"] for line in rows] == [0, 256, 512, 768, 1024]
    assert os.listdir(tmp_path / "out2" / "run" / "checkpoints") == ["step_0000001024.pt"]
    # with RESUME, the operator table profiles 2 iterations of that run (no untrained step-0 evaluation in it)
    host = (tmp_path / "out2" / "host.md").read_text().split("torch.profiler of ")[1]
    assert "--resume" in host and "--total-timesteps 768" in host and "aten::" in host
    proc = subprocess.run(["bash", script], capture_output=True, text=True, env={**env, "RESUME": "/nonexistent"}, cwd=ROOT)
    assert proc.returncode != 0 and "cannot copy RESUME=/nonexistent" in proc.stderr
    env.pop("OUT")
    proc = subprocess.run(["bash", script], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode != 0 and "set OUT" in proc.stderr


def test_fork_run_continues_exactly_and_changes_only_what_it_is_told(tiny_run, tmp_path):
    run_dir, _ = tiny_run  # checkpoints at 256 and 384, evaluations at 0, 256 and 384
    same, changed = tmp_path / "same", tmp_path / "changed"
    run_script("benchmark/fork_run.py", run_dir, 256, same, "--set", "target_kl=none")  # its value already
    run_script("benchmark/fork_run.py", run_dir, 256, changed, "--set", "norm-reward=true", "--set", "ent_coef=0.5")
    for fork in [same, changed]:
        assert sorted(os.listdir(fork / "checkpoints")) == ["step_0000000256.pt"]
        run_script("ppo_procgen.py", "--resume", fork)
        assert [r["global_step"] for r in read_eval(fork)] == [0, 256, 384]
        assert read_eval(fork)[:2] == read_eval(run_dir)[:2]  # the original's, copied
    weights = [final_weights(d) for d in [run_dir, same, changed]]
    assert read_eval(same) == read_eval(run_dir) and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    ckpt = torch.load(changed / "checkpoints" / "step_0000000384.pt", weights_only=True)
    assert ckpt["args"]["norm_reward"] is True and ckpt["args"]["ent_coef"] == 0.5
    assert ckpt["reward_scaler"]["count"] > 1  # the rewards went through the scaler
    for args, message in [
        ([256, tmp_path / "x", "--set", "num_envs=8"], "give NAME=VALUE with NAME one of"),
        ([256, tmp_path / "x", "--set", "norm_reward=yes"], "norm_reward takes true or false"),
        ([256, tmp_path / "x", "--set", "ent_coef=much"], "ent_coef takes a float"),
        ([256, tmp_path / "x"], "nothing to change"),
        ([100, tmp_path / "x", "--set", "ent_coef=0.02"], "there are: step_0000000256.pt, step_0000000384.pt"),
        ([256, same, "--set", "ent_coef=0.02"], "exists; a fork starts a new run folder"),
    ]:
        proc = run_script("benchmark/fork_run.py", run_dir, *args, check=False)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()
