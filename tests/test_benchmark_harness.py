"""The benchmark harness end to end on a tiny synthetic set (all peers)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("hnswlib")
pytest.importorskip("matplotlib")
pytest.importorskip("scann")
pytest.importorskip("usearch")

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_every_peer(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--dataset", "synthetic:3000:16",
           "--n-test", "100", "--buckets", "32", "--cache", str(tmp_path / "cache"), "--out", str(out),
           "--single-n", "50", "--systems", "irli:fast", "irli:ivf:spill=1", "faiss-ivfflat", "faiss-ivfpqfs",
           "hnswlib", "scann", "usearch", "faiss-flat"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    run = json.loads((out / "results.json").read_text())
    assert [r["system"] for r in run["results"]] == cmd[cmd.index("--systems") + 1:]
    assert run["machine"]["cores"] >= 1 and "faiss" in run["machine"]["versions"]
    for r in run["results"]:
        assert r["build_s"] >= 0 and r["index_bytes"] > 0 and r["points"]
        for pt in r["points"]:
            assert 0 <= pt["recall@10"] <= 1 and pt["qps"] > 0
            # the three modes: batched on 1 thread, batched on every core, one query per call
            assert pt["qps_parallel"] > 0 and pt["qps_single"] > 0 and pt["threads"] >= 1
            assert 0 < pt["p50_us"] <= pt["p99_us"] and pt["single_n"] == 50
            assert 0 <= pt["recall@10_single"] <= 1
        if r["system"].startswith("irli"):  # irli gives one answer in every mode
            assert all(pt["same_as_batch"] for pt in r["points"])
    flat = next(r for r in run["results"] if r["system"] == "faiss-flat")
    assert flat["points"][0]["recall@10"] == 1.0 and flat["points"][0]["candidates"] == 3000
    table = (out / "table.md").read_text()
    assert "| irli:fast |" in table and "| scann |" in table and "| usearch |" in table
    assert "batch QPS @0.95" in table and "all-cores QPS @0.95" in table and "single QPS @0.95" in table
    for png in ("recall_qps.png", "recall_qps_parallel.png", "recall_qps_single.png", "recall_candidates.png",
                "recall_scanned.png"):
        assert (out / png).stat().st_size > 1000
    # the ground truth is cached: a second run reuses it
    assert len(list((tmp_path / "cache").glob("*/truth.npy"))) == 1


def test_report_picks_best_point_reaching_recall():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from report import at_recall, frontier

    pts = [{"recall@10": 0.91, "qps": 100, "candidates": 50},
           {"recall@10": 0.96, "qps": 80, "candidates": 90},
           {"recall@10": 0.97, "qps": 90, "candidates": 120},
           {"recall@10": 0.80, "qps": 500, "candidates": 10}]
    assert at_recall(pts, 0.95, "qps", "recall@10")["qps"] == 90
    assert at_recall(pts, 0.95, "candidates", "recall@10")["candidates"] == 90
    assert at_recall(pts, 0.99, "qps", "recall@10") is None
    assert [p["qps"] for p in frontier(pts, "qps", "recall@10")] == [500, 100, 90]


def test_single_ab_interpolates_qps_at_the_target_recall():
    """single_ab.qps_at: log QPS linear in recall between the nearest
    frontier settings on either side; dominated settings are ignored and
    nothing is extrapolated."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from single_ab import qps_at

    pts = [(0.94, 200.0), (0.96, 100.0), (0.97, 50.0), (0.93, 150.0), (0.955, 90.0)]  # the last two dominated
    assert qps_at(pts, 0.95) == pytest.approx((200 * 100) ** 0.5)
    assert qps_at(pts, 0.96) == pytest.approx(100.0)
    assert qps_at(pts, 0.945) == pytest.approx(200 ** 0.75 * 100 ** 0.25)
    assert qps_at(pts, 0.99) is None and qps_at(pts, 0.92) is None
    assert qps_at([(0.96, 100.0)], 0.95) is None
    assert qps_at([(0.94, 90.0), (0.96, 100.0)], 0.95) == pytest.approx(100.0)  # below, but slower


def test_single_ab_times_two_configurations_in_rounds(tmp_path):
    """benchmarks/single_ab.py: every setting once a round, one line each;
    the indexes it builds are reused by the next call (loaded, same recall)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "single_ab.py"), "--dataset", "synthetic:2000:16",
           "--buckets", "16", "--n", "40", "--rounds", "2", "--cache", str(tmp_path / "cache"),
           "--index-dir", str(tmp_path / "idx"), "--system", "fast:4/2,8/2", "--system", "fast:spill=0:4/1"]
    lines = []
    for extra in ([], ["--compare", "0.0"]):
        p = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        lines.append([json.loads(line) for line in p.stdout.splitlines()])
    first, again = lines
    paired = again.pop()  # --compare: each system's fastest setting a round, the second over the first
    assert paired["systems"] == ["fast", "fast:spill=0"] and paired["compare_at"] == 0.0
    for k in range(2):
        assert paired["qps_rounds"]["fast"][k] == max(r["qps_rounds"][k] for r in again[:2])
        assert paired["qps_rounds"]["fast:spill=0"][k] == again[2]["qps_rounds"][k]
        assert paired["ratio_rounds"][k] == pytest.approx(again[2]["qps_rounds"][k] / paired["qps_rounds"]["fast"][k],
                                                          rel=1e-3)
    assert paired["ratio_median"] == pytest.approx(float(np.median(paired["ratio_rounds"])))
    assert paired["interpolated_ratio_median"] is None  # no setting below recall 0: nothing to interpolate from
    assert [(r["system"], r["probes"], r["refine"]) for r in first] == [("fast", 4, 2), ("fast", 8, 2),
                                                                        ("fast:spill=0", 4, 1)]
    for r in first:
        assert 0 < r["recall@10"] <= 1 and r["qps_best"] >= r["qps_median"] > 0 and r["rounds"] == 2
    assert first[1]["recall@10"] >= first[0]["recall@10"]  # more probes find at least as much
    assert [r["recall@10"] for r in again] == [r["recall@10"] for r in first]
    assert sorted(p.name for p in (tmp_path / "idx" / "synthetic_2000_16").iterdir()) == ["fast", "fast_spill-0"]
    # --slice: the settings take turns on slices of 16 queries; the same answers, every round timed
    p = subprocess.run(cmd + ["--slice", "16"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    sliced = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["recall@10"] for r in sliced] == [r["recall@10"] for r in first]
    assert all(len(r["qps_rounds"]) == 2 and r["qps_best"] >= r["qps_median"] > 0 for r in sliced)


def test_single_ab_times_a_batch_on_one_thread_with_the_same_answers(tmp_path):
    """--mode batch: one call of all the queries a round on one thread, --mode
    all: on every core; the recall is the one query per call's (the three
    give the same answers)."""
    base = [sys.executable, str(ROOT / "benchmarks" / "single_ab.py"), "--dataset", "synthetic:2000:16",
            "--buckets", "16", "--n", "40", "--rounds", "2", "--cache", str(tmp_path / "cache"),
            "--index-dir", str(tmp_path / "idx"), "--system", "fast:4/2,8/2"]
    out = {}
    for mode in ("single", "batch", "all"):
        p = subprocess.run(base + ["--mode", mode], capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        out[mode] = [json.loads(line) for line in p.stdout.splitlines()]
    for mode in ("batch", "all"):
        assert [r["mode"] for r in out[mode]] == [mode, mode]
        assert [r["recall@10"] for r in out[mode]] == [r["recall@10"] for r in out["single"]]
        assert all(r["qps_best"] >= r["qps_median"] > 0 for r in out[mode])
