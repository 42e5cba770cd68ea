"""The base trainer: end-to-end behaviour, resume, determinism, and its numerical pieces against slow references."""

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, final_weights, read_eval, run_dirs, run_script

import ppo_procgen as base

EVAL_KEYS = {"global_step", "train_return", "train_std", "test_return", "test_std", "gap", "train_completion",
             "test_completion", "episodes", "bn_mode_kl"}  # fmt: skip


def test_smoke_run_evaluates_and_checkpoints(tiny_run):
    run_dir, proc = tiny_run
    rows = read_eval(run_dir)
    assert [r["global_step"] for r in rows] == [0, 256, 384]  # step 0, every --eval-frequency, the end
    for r in rows:
        assert EVAL_KEYS <= set(r)
        assert r["episodes"] == 3 and r["gap"] == pytest.approx(r["train_return"] - r["test_return"])
        assert 0 <= r["train_completion"] <= 1 and r["train_return"] in (0, 10 / 3, 20 / 3, 10)  # 3 episodes of 0 or 10
    ckpts = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    assert ckpts == ["step_0000000256.pt", "step_0000000384.pt"]
    ckpt = torch.load(os.path.join(run_dir, "checkpoints", ckpts[-1]), weights_only=True)
    assert ckpt["variant"] == "ppo_procgen" and ckpt["global_step"] == 384
    assert (ckpt["args"]["arch"], ckpt["args"]["pool"]) == ("espeholt", "flatten")  # the default network
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(run_dir))
    assert "step 384/384" in proc.stdout and "SPS" in proc.stdout and "ETA" in proc.stdout and "| mem " in proc.stdout


def tensorboard_scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_logs_cleanrl_keys_and_the_bn_mismatch(tiny_run):
    scalars = tensorboard_scalars(tiny_run[0])
    for key in ["charts/SPS", "losses/value_loss", "losses/policy_loss", "losses/entropy",
                "losses/approx_kl", "losses/clipfrac", "losses/grad_norm", "losses/explained_variance", "losses/rollout_kl",
                "eval/train_return", "eval/test_return", "eval/gap", "eval/bn_mode_kl", "charts/levels_seen",
                "perf/update_time", "perf/peak_rss_gib"]:  # fmt: skip
        assert key in scalars, key
    assert "perf/gpu_memory_gib" not in scalars  # a cpu run has no GPU memory to report
    assert all(0 < norm < 1e3 for _, norm in scalars["losses/grad_norm"])  # before clipping, mean over minibatches
    rss = [gib for _, gib in scalars["perf/peak_rss_gib"]]
    assert 0.2 < rss[0] <= rss[-1] < 16, rss  # torch + procgen resident, never decreasing (a peak), not KiB or bytes
    # Acting and updating normalise alike: the ratio starts near 1, far below what one update moves the policy.
    for (_, rollout_kl), (_, approx_kl) in zip(scalars["losses/rollout_kl"], scalars["losses/approx_kl"]):
        assert abs(rollout_kl) < max(approx_kl, 1e-4)


def test_bn_update_running_makes_the_ratio_start_at_one(tmp_path):
    # Updating with the statistics the rollout acted with: the first minibatch sees the acting policy itself.
    run_script("ppo_procgen.py", *TINY, "--bn-update", "running", "--total-timesteps", "384",
               "--eval-frequency", "10000", "--runs-dir", str(tmp_path))  # fmt: skip
    scalars = tensorboard_scalars(run_dirs(tmp_path)[0])
    assert len(scalars["losses/rollout_kl"]) == 3 and len(scalars["losses/bn_refresh_kl"]) == 3
    assert all(abs(kl) < 1e-9 for _, kl in scalars["losses/rollout_kl"])  # with --bn-update batch: ~1e-6..1e-5
    assert all(kl > 0 for _, kl in scalars["losses/approx_kl"])


TRAIN_512 = [*TINY, "--total-timesteps", "512", "--eval-frequency", "256", "--checkpoint-frequency", "128"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("reference")
    run_script("ppo_procgen.py", *TRAIN_512, "--runs-dir", runs)
    return run_dirs(runs)[0]


def assert_same_run(a, b):
    assert read_eval(a) == read_eval(b)
    wa, wb = final_weights(a), final_weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_same_seed_is_deterministic(reference_run, tmp_path):
    run_script("ppo_procgen.py", *TRAIN_512, "--runs-dir", tmp_path)
    assert_same_run(reference_run, run_dirs(tmp_path)[0])


def test_sigkill_then_resume_neither_loses_nor_repeats(reference_run, tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "ppo_procgen.py"), *TRAIN_512, "--runs-dir", str(tmp_path)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    ckpt_dir = None
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpt_dir and os.path.exists(os.path.join(ckpt_dir, "step_0000000128.pt"))):
        time.sleep(0.05)
        runs = os.listdir(tmp_path)
        ckpt_dir = os.path.join(tmp_path, runs[0], "checkpoints") if runs else None
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = run_dirs(tmp_path)[0]
    # A kill mid-save leaves at most a `.tmp` file; a later, half-written one must never be read.
    with open(os.path.join(ckpt_dir, "step_0000000384.pt.tmp"), "wb") as f:
        f.write(b"half a checkpoint")
    # Pretend the killed run had evaluated beyond its last checkpoint: the resumed run must drop that row.
    with open(os.path.join(run_dir, "eval.jsonl"), "a") as f:
        f.write('{"global_step": 999999, "train_return": -1}\n')
    proc = run_script("ppo_procgen.py", "--resume", run_dir)
    assert "resuming" in proc.stdout
    assert [r["global_step"] for r in read_eval(run_dir)] == [0, 256, 512]
    assert_same_run(reference_run, run_dir)  # bit-identical to the run that was never interrupted


@pytest.mark.parametrize(
    "wait_for, message",
    [
        ("eval.jsonl", "interrupted at step 0; no checkpoint was saved yet"),  # written before the step-0 evaluation
        ("checkpoints/step_0000000128.pt", "; continue from its latest checkpoint with --resume "),
    ],
)
def test_ctrl_c_says_where_the_run_stands(wait_for, message, tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "ppo_procgen.py"), *TRAIN_512, "--runs-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not (os.listdir(tmp_path) and os.path.exists(run_dirs(tmp_path)[0] + "/" + wait_for)):
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 1 and message in stderr and "Traceback" not in stderr, stderr
    if "--resume" in message:
        assert stderr.strip().endswith(run_dirs(tmp_path)[0])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--arch", "impala"], "differs from the checkpoint"),
        (["--num-steps", "256"], "differs from the checkpoint"),  # the default value is a change too
        ([], "give a --total-timesteps above it"),  # the run is finished
    ],
)
def test_resume_refuses_another_setup_or_nothing_to_do(tiny_run, flags, message):
    proc = run_script("ppo_procgen.py", "--resume", tiny_run[0], *flags, check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr


def test_resume_takes_a_flag_given_at_its_default_value(tiny_run, monkeypatch):
    # The run was trained to 384 steps with evaluations every 256; 25M and 500k are Args' defaults.
    cli = ["--resume", tiny_run[0], "--total-timesteps", "25000000", "--eval-frequency", "500000", "--threads", "2",
           "--env-threads", "3"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["ppo_procgen.py", *cli])
    args, ckpt = base.resume_args(base.latest_checkpoint(tiny_run[0]))
    assert (args.total_timesteps, args.eval_frequency, args.threads, args.env_threads) == (25_000_000, 500_000, 2, 3)
    assert (args.num_envs, args.num_steps, args.checkpoint_frequency) == (4, 32, 256)  # the rest is the checkpoint's
    assert args.resume.endswith("step_0000000384.pt") and ckpt["global_step"] == 384


@pytest.mark.parametrize(
    "args, message",
    [
        (["--minibatch-size", "100"], "not divisible"),
        (["--num-envs", "0"], "must be positive"),
        (["--total-timesteps", "-5"], "must be positive"),
        (["--env-threads", "-1"], "--env-threads must be >= 0"),
        (["--env-id", "nosuchgame"], "unknown --env-id"),
        (["--device", "cuda"], "not available"),
        (["--arch", "resnet"], "invalid choice"),
        (["--channels", "16", "0", "32"], "positive"),
        (["--arch", "nature", "--channels", "32", "64"], "has its own (32, 64, 64)"),
        (["--bn-act", "batch", "--bn-update", "running"], "needs --bn-act running"),
        (["--env-id", "coinrun", "--distribution-mode", "exploration"], "cannot make coinrun"),
        (["--resume", "/nonexistent/run"], "no such checkpoint"),
        (["--resume", os.path.join(ROOT, "requirements.txt")], "not a readable checkpoint"),
    ],
)
def test_bad_input_is_refused_clearly(args, message):
    if args[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has cuda")
    proc = run_script("ppo_procgen.py", *TINY, *args, check=False, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr


def slow_gae(rewards, values, dones, next_value, next_done, gamma, lam):
    """Per env, per step: A_t = sum_k (gamma lam)^k delta_{t+k}, stopping at the end of the episode."""
    T, N = rewards.shape
    dones_ext = np.vstack([dones, next_done[None]])
    values_ext = np.vstack([values, next_value[None]])
    adv = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, discount = 0.0, 1.0
            for k in range(t, T):
                nonterminal = 1.0 - dones_ext[k + 1, n]
                delta = rewards[k, n] + gamma * values_ext[k + 1, n] * nonterminal - values_ext[k, n]
                total += discount * delta
                if not nonterminal:
                    break
                discount *= gamma * lam
            adv[t, n] = total
    return adv


def test_gae_matches_slow_reference():
    rng = np.random.default_rng(0)
    T, N = 12, 5
    rewards, values = rng.choice([0.0, 10.0], (T, N), p=[0.8, 0.2]), rng.normal(size=(T, N))
    dones, next_value, next_done = (rng.random((T, N)) < 0.2).astype(float), rng.normal(size=N), np.array([0, 1, 0, 1, 0.0])
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)
    got = base.compute_gae(t(rewards), t(values), t(dones), t(next_value), t(next_done), 0.999, 0.95)
    np.testing.assert_allclose(got.numpy(), slow_gae(rewards, values, dones, next_value, next_done, 0.999, 0.95), rtol=1e-10)


def test_ppo_losses_match_slow_reference():
    rng = np.random.default_rng(1)
    n = 64
    ratio, adv = np.exp(rng.normal(scale=0.3, size=n)), rng.normal(size=n) * 3 + 1
    newv, oldv, ret = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    args = SimpleNamespace(norm_adv=True, clip_coef=0.2, clip_vloss=True)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)
    pg, v = base.ppo_losses(t(ratio), t(adv), t(newv), t(oldv), t(ret), args)
    a = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
    pg_ref = np.mean([max(-a[i] * ratio[i], -a[i] * min(max(ratio[i], 0.8), 1.2)) for i in range(n)])
    v_ref = 0.5 * np.mean([max((newv[i] - ret[i]) ** 2, (oldv[i] + min(max(newv[i] - oldv[i], -0.2), 0.2) - ret[i]) ** 2)
                           for i in range(n)])  # fmt: skip
    assert pg.item() == pytest.approx(pg_ref, rel=1e-9) and v.item() == pytest.approx(v_ref, rel=1e-9)
    args.clip_vloss = False
    assert base.ppo_losses(t(ratio), t(adv), t(newv), t(oldv), t(ret), args)[1].item() == pytest.approx(
        0.5 * np.mean((newv - ret) ** 2), rel=1e-9
    )


def test_reward_scaler_divides_by_the_std_of_every_discounted_return_seen():
    rng = np.random.default_rng(2)
    scaler, ret, seen = base.RewardScaler(4, 0.9), np.zeros(4), []
    for _ in range(50):
        reward, done = rng.choice([0.0, 10.0], 4, p=[0.9, 0.1]), rng.random(4) < 0.1
        ret = ret * 0.9 + reward
        seen.append(ret.copy())
        scaled = scaler(reward, done)
        ret[done] = 0.0  # a finished episode's return starts again
        np.testing.assert_allclose(scaled, reward / np.sqrt(np.var(np.concatenate(seen)) + 1e-8), rtol=1e-4)
    assert not base.Args().norm_reward  # the default trains on the brief's raw rewards


def random_obs(n, seed=0):
    return torch.randint(0, 256, (n, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_eval_mode_output_does_not_depend_on_the_batch():
    torch.manual_seed(0)
    agent = base.Agent(15)
    base.refresh_bn_stats(agent, random_obs(64, seed=1), 32)  # non-trivial running statistics
    x = random_obs(8)
    agent.eval()
    with torch.no_grad():
        alone, in_batch = agent(x[:1]), agent(x)
    torch.testing.assert_close(alone[0][0], in_batch[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone[1][0], in_batch[1][0], atol=1e-5, rtol=1e-5)
    agent.train()  # whereas batch statistics do make it depend on the batch: the property is not vacuous
    with torch.no_grad():
        assert not torch.allclose(agent(x[:2])[0][0], agent(x)[0][0], atol=1e-5)


def test_refreshing_bn_statistics_makes_eval_mode_match_batch_statistics():
    torch.manual_seed(0)
    agent = base.Agent(15)
    x = random_obs(256, seed=2)
    for m in agent.modules():  # stale statistics, as after weights moved
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(0.3)
            m.running_var.fill_(2.0)
    stale = base.bn_mode_kl(agent, x)
    base.refresh_bn_stats(agent, x, 64)
    assert base.bn_mode_kl(agent, x) < stale / 10


def test_train_and_test_levels_are_separate():
    gen = torch.Generator().manual_seed(0)
    agent = base.Agent(15, "nature")  # the smallest network: untrained episodes run to the 1000-step timeout
    train_envs = base.make_env("coinrun", 16, 200, 0, "easy", base.derive_seed(1, 1, 0))
    test_envs = base.make_env("coinrun", 16, 0, 0, "easy", base.derive_seed(1, 2, 0))
    _, _, _, train_levels = base.evaluate(agent, train_envs, gen)
    _, _, _, test_levels = base.evaluate(agent, test_envs, gen)
    assert ((0 <= train_levels) & (train_levels < 200)).all()
    assert (test_levels >= 200).all() and len(set(test_levels)) == 16


def test_evaluation_through_a_fixed_batch_forward_plays_the_same_episodes():
    # On cuda evaluation runs every env's frames through a CUDA graph of the full batch and keeps the unfinished envs'
    # logits; without it, only the unfinished envs' frames go through. Same weights, levels and noise: same episodes.
    agent = base.Agent(15, "nature")
    with torch.no_grad():
        agent.actor.weight.mul_(300)  # logits that depend on the frame (at init they barely do)
    results = []
    for forward in [None, agent]:
        envs = base.make_env("coinrun", 6, 200, 0, "easy", base.derive_seed(4, 1, 0))
        results.append(base.evaluate(agent, envs, torch.Generator().manual_seed(3), forward=forward))
        envs.close()
    assert len(set(results[0][1])) > 1  # episodes of different lengths: the unfinished batch did shrink
    for eager, fixed in zip(*results):
        assert np.array_equal(eager, fixed)


def test_procgen_thread_count_does_not_change_the_games():
    # --env-threads is a speed option: the same seed and actions must give the same frames, rewards and dones.
    # 0 (the default) is one thread per core this process may use, at least 4.
    actions = np.random.default_rng(0).integers(0, 15, (300, 12))
    runs = []
    for threads in [1, 3, 0]:
        envs = base.make_env("coinrun", 12, 200, 0, "easy", 123, threads)
        assert envs.env.options["num_threads"] == (threads or max(4, len(os.sched_getaffinity(0))))
        frames = [envs.reset()["rgb"]]
        for action in actions:
            obs, reward, done, _ = envs.step(action)
            frames += [obs["rgb"], reward, done]
        envs.close()
        runs.append(frames)
    assert sum(bool(d.any()) for d in runs[0][3::3]) > 0  # episodes ended within the 300 steps
    assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(*runs))


@pytest.mark.parametrize(
    "arch, pool, channels",
    [("impala", "gap", (16, 32, 32)), ("impala", "flatten", (16, 32, 32)), ("espeholt", "flatten", (16, 32, 32)),
     ("espeholt", "gap", (8, 16)), ("nature", "flatten", (16, 32, 32)), ("nature", "gap", (16, 32, 32))],
)  # fmt: skip
def test_each_arch_builds_and_runs(arch, pool, channels):
    agent = base.Agent(15, arch, channels, pool)
    action, logprob, entropy, value = agent.get_action_and_value(random_obs(3))
    assert action.shape == logprob.shape == entropy.shape == value.shape == (3,)
    assert agent.actor.in_features == (512 if arch == "nature" else 256)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in agent.modules()) == sum(
        isinstance(m, torch.nn.Conv2d) for m in agent.modules()
    )  # BN after every conv


def test_nature_cnn_is_mnih_et_al_2015():
    convs = [m for m in base.Agent(15, "nature").modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0]) for m in convs] == [
        (32, 8, 4, 0),
        (64, 4, 2, 0),
        (64, 3, 1, 0),
    ]
    fc = [m for m in base.make_network("nature", (), "flatten") if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in fc] == [(64 * 4 * 4, 512)]  # 64 -> 15 -> 6 -> 4 pixels


def test_resume_keeps_a_non_default_network(tmp_path):
    net = ["--arch", "impala", "--pool", "gap", "--channels", "8", "16"]
    args = [*TINY, *net, "--total-timesteps", "128", "--eval-frequency", "128", "--checkpoint-frequency", "128"]
    run_script("ppo_procgen.py", *args, "--runs-dir", tmp_path)
    run_dir = run_dirs(tmp_path)[0]
    proc = run_script("ppo_procgen.py", "--resume", run_dir, "--total-timesteps", "256")  # the network is not re-stated
    assert "resuming" in proc.stdout and [r["global_step"] for r in read_eval(run_dir)] == [0, 128, 256]
    ckpt = torch.load(base.latest_checkpoint(run_dir), weights_only=True)
    assert (ckpt["args"]["arch"], ckpt["args"]["pool"], ckpt["args"]["channels"]) == ("impala", "gap", [8, 16])
