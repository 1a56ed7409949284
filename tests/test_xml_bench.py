"""The extreme-classification benchmark harness on a tiny generated set
(irli only: the peers live in their own interpreter, which CI does not build)."""

import json
import subprocess
import sys
from pathlib import Path

from irli.io.datasets import synthetic_labels
from irli.labels.xcformat import write_xc

ROOT = Path(__file__).resolve().parents[1]


def test_xml_bench_runs_and_scores(tmp_path):
    x, y = synthetic_labels(1200, 60, n_features=300, seed=5)
    (tmp_path / "tiny").mkdir()
    write_xc(tmp_path / "tiny" / "train.txt", x[:1000], y[:1000])
    write_xc(tmp_path / "tiny" / "test.txt", x[1000:], y[1000:])
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "xml_bench.py"), "--datasets", "tiny", "--data-dir",
           str(tmp_path), "--systems", "irli", "omikuji", "--peer-python", str(tmp_path / "no-such-python"),
           "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    run = json.loads((out / "results.json").read_text())
    irli_row, peer_row = run["results"]["tiny"]
    assert irli_row["system"] == "irli" and 0.5 <= irli_row["P@1"] <= 1.0
    assert irli_row["P@5"] <= irli_row["P@1"] and 0 < irli_row["PSP@1"] <= 1.0
    assert irli_row["ms_per_point"] > 0 and irli_row["model_bytes"] > 0
    assert irli_row["single_ms_per_point"] > 0  # one point per call, timed too
    assert "error" in peer_row  # no peer interpreter: reported, not a crash
    table = (out / "table.md").read_text()
    assert "| irli |" in table and "failed" in table
