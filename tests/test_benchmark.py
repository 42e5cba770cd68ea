"""Benchmark helpers: the reference comparison reads the published curve correctly."""

import json

from conftest import run_script


def test_vs_reference_interpolates_the_published_curve(tmp_path):
    path = tmp_path / "eval.jsonl"
    rows = [{"global_step": s, "train_return": 7.0, "test_return": 6.0, "gap": 1.0} for s in (100000, 500000, 625000)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_script("benchmark/vs_reference.py", path).stdout
    assert "| 100000 | 7.00 | 6.00 | +1.00 | - | - |" in out  # before the reference's first point
    assert "| 500000 | 7.00 | 6.00 | +1.00 | 6.79 | 6.34 |" in out  # the CSV's own row (6.785, 6.340)
    assert "| 625000 | 7.00 | 6.00 | +1.00 | 6.99 | 6.54 |" in out  # halfway to 750000 (7.189, 6.740)
    assert run_script("benchmark/vs_reference.py", tmp_path / "missing.jsonl", check=False).returncode != 0
