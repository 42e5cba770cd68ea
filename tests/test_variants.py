"""The augmentation and no-BatchNorm variants: their own pieces, and that they stay copies of the base elsewhere."""

import difflib
import os
import re
import shutil
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, TINY, read_eval, run_dirs, run_script

import ppo_procgen_aug as aug
import ppo_procgen_nobn as nobn

# Every hunk by which a variant differs from ppo_procgen.py must be about the variant's difference.
VARIANT_WORDS = {
    "ppo_procgen_aug.py": r"augment|aug_prob|shift_pad|cutout|color_jitter|noise_std|Augmentation",
    "ppo_procgen_nobn.py": r"BatchNorm|bn_|BN|norm|refresh_bn_stats",
}


def lines(name):
    return open(os.path.join(ROOT, name)).read().splitlines()


@pytest.mark.parametrize("variant", sorted(VARIANT_WORDS))
def test_variant_differs_from_base_only_where_the_variant_differs(variant):
    base, other = lines("ppo_procgen.py"), lines(variant)
    drift = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, base, other, autojunk=False).get_opcodes():
        hunk = base[i1:i2] + other[j1:j2]
        if tag != "equal" and not re.search(VARIANT_WORDS[variant], "\n".join(hunk)):
            drift.append(f"ppo_procgen.py:{i1 + 1}-{i2} vs {variant}:{j1 + 1}-{j2}:\n" + "\n".join(hunk))
    assert not drift, "lines drifted (fix a shared line in all three scripts):\n" + "\n\n".join(drift)


def test_readme_states_each_scripts_size():
    sizes = " / ".join(str(len(lines(name))) for name in ["ppo_procgen.py", "ppo_procgen_aug.py", "ppo_procgen_nobn.py"])
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert f"Sizes: {sizes} lines." in readme, f"README.md should say 'Sizes: {sizes} lines.'"


def coordinates(n):
    """Frames whose pixels say where they are: channel 0 = row, channel 1 = column, channel 2 = frame index."""
    rows, cols = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    x = torch.stack([rows, cols, torch.zeros_like(rows)], -1).to(torch.uint8).repeat(n, 1, 1, 1)
    x[..., 2] = torch.arange(n, dtype=torch.uint8)[:, None, None]
    return x


def aug_args(**kw):
    return SimpleNamespace(**{"shift_pad": 4, "aug_prob": 1.0, "color_jitter": 0.0, "cutout": 0, "noise_std": 0.0, **kw})


def test_random_shift_moves_each_frame_within_the_pad():
    torch.manual_seed(0)
    x = coordinates(200)
    y = aug.augment(x, aug_args())
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert torch.equal(y[..., 2], x[..., 2])  # no mixing of frames
    dy, dx = y[:, 32, 32, 0].long() - 32, y[:, 32, 32, 1].long() - 32  # the shift, read off the centre pixel
    assert dy.abs().max() <= 4 and dx.abs().max() <= 4 and len(set(zip(dy.tolist(), dx.tolist()))) > 40
    for n in range(200):  # the whole frame is the shifted, edge-padded original
        rows = (torch.arange(64) + dy[n]).clamp(0, 63)
        cols = (torch.arange(64) + dx[n]).clamp(0, 63)
        assert torch.equal(y[n], x[n][rows][:, cols])


def test_aug_prob_is_respected():
    torch.manual_seed(1)
    x = coordinates(8000)
    for prob in [0.0, 0.5, 1.0]:
        y = aug.augment(x, aug_args(aug_prob=prob))
        moved = (y[:, 32, 32, :2] != x[:, 32, 32, :2]).any(-1).float().mean().item()
        expected = prob * (1 - 1 / 81)  # a chosen frame may draw the zero shift
        assert abs(moved - expected) < 0.02, (prob, moved)


def test_pad_zero_is_identity_and_extras_stay_in_range():
    x = torch.randint(0, 256, (16, 64, 64, 3), dtype=torch.uint8)
    assert torch.equal(aug.augment(x, aug_args(shift_pad=0)), x)
    y = aug.augment(x, aug_args(shift_pad=0, color_jitter=0.2, cutout=8, noise_std=0.05))
    assert y.dtype == torch.uint8 and y.shape == x.shape and not torch.equal(y, x)
    assert ((y == 0).all(-1).sum((1, 2)) >= 64).all()  # every frame has its 8x8 cutout


def test_evaluation_sees_clean_frames():
    # augment() is called in the rollout only; evaluate() is the base's, unchanged.
    src = open(os.path.join(ROOT, "ppo_procgen_aug.py")).read()
    assert src.count("augment(") == 2  # its definition and the rollout's call
    assert "augment" not in src[src.index("def evaluate(") : src.index("class RewardScaler")]


def test_nobn_network_has_no_batchnorm():
    for arch in ["impala", "espeholt", "nature"]:
        agent = nobn.Agent(15, arch, (16, 32, 32), "gap")
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in agent.modules())
        assert all(m.bias is not None for m in agent.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("script", ["ppo_procgen_aug.py", "ppo_procgen_nobn.py"])
def test_variant_smoke_run_and_checkpoint_refused_by_another_variant(script, tmp_path):
    # Run from a copy of the script alone in an empty folder, as a user who copies one file into their project would:
    # it needs nothing else from this repo and writes its runs to ./runs/ there.
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(os.path.join(ROOT, script), project)
    run_script(project / script, *TINY, "--total-timesteps", "256", "--eval-frequency", "256", cwd=project)
    assert sorted(os.listdir(project)) == [script, "runs"]
    (run_dir,) = run_dirs(project / "runs")
    assert os.path.basename(run_dir).startswith(f"coinrun__{script[:-3]}__1__")
    assert [r["global_step"] for r in read_eval(run_dir)] == [0, 256]
    proc = run_script("ppo_procgen.py", "--resume", run_dir, check=False)
    assert proc.returncode != 0 and f"written by {script}" in proc.stderr and "Traceback" not in proc.stderr
