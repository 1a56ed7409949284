"""Tables and plots from a benchmark run (results.json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

TARGETS = (0.90, 0.95)


def frontier(points: list[dict], key: str, recall: str) -> list[dict]:
    """Points not beaten on both recall and `key` (higher QPS / fewer candidates)."""
    better = (lambda a, b: a > b) if key.startswith("qps") else (lambda a, b: a < b)
    pts = [p for p in points if p.get(key) is not None]
    keep = [p for p in pts if not any(q[recall] >= p[recall] and better(q[key], p[key]) and q is not p
                                      and (q[recall] > p[recall] or q[key] != p[key]) for q in pts)]
    return sorted(keep, key=lambda p: p[recall])


def at_recall(points: list[dict], target: float, key: str, recall: str) -> dict | None:
    """The best point on `key` among those reaching `target` recall."""
    ok = [p for p in points if p.get(recall, -1) >= target and p.get(key) is not None]
    if not ok:
        return None
    return max(ok, key=lambda p: p[key]) if key.startswith("qps") else min(ok, key=lambda p: p[key])


def _setting(p: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in p["setting"].items())


def _at(points, target, key, recall):
    """(best point on `key` reaching `target`, formatted cell)."""
    p = at_recall(points, target, key, recall)
    if p is None:
        return None, "not reached"
    return p, f"{p[key]:,.0f} ({_setting(p)}; {p[recall]:.3f})"


def table(run: dict) -> str:
    k = run["k"]
    recall = f"recall@{k}"
    m = run["machine"]
    modes = run.get("modes", ["batch"])
    lines = [
        f"Dataset {run['dataset']['dataset']}: {run['dataset']['n']:,} items x {run['dataset']['d']}, "
        f"{run['dataset']['nq']:,} queries, {run['dataset']['metric']}, B = nlist = leaves = {run['n_buckets']}, "
        f"k = {k}. {m['cpu']}, {m['cores']} cores; " + ", ".join(f"{a} {b}" for a, b in m["versions"].items())
        + f". Run {run['date']}. Built on all cores. Each cell: the best value among settings reaching the "
        "recall (setting; recall reached). batch: one call of all queries on 1 thread; all cores: the same "
        "call on every core (x: its speed-up over the batch column); single: one call per query on 1 thread "
        "(p50 / p99 latency of the best setting). Medians of 3 timings for the batched calls.",
        "",
    ]
    head = ["system"]
    for t in TARGETS:
        if "batch" in modes:
            head.append(f"batch QPS @{t:.2f}")
        if "parallel" in modes:
            head.append(f"all-cores QPS @{t:.2f}")
        if "single" in modes:
            head += [f"single QPS @{t:.2f}", f"p50 / p99 µs @{t:.2f}"]
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in run["results"]:
        cells = [r["system"]]
        pts = r["points"]
        for t in TARGETS:
            best_batch, cell = _at(pts, t, "qps", recall)
            if "batch" in modes:
                cells.append(cell)
            if "parallel" in modes:
                p, cell = _at([x for x in pts if "qps_parallel" in x], t, "qps_parallel", recall)
                if p is not None and best_batch is not None:
                    cell = cell.replace(" (", f" ({p['qps_parallel'] / best_batch['qps']:.2f}x; ", 1)
                cells.append(cell)
            if "single" in modes:
                single = [x for x in pts if "qps_single" in x]
                p, cell = _at(single, t, "qps_single", f"{recall}_single")
                cells.append(cell)
                cells.append(f"{p['p50_us']:.0f} / {p['p99_us']:.0f}" if p else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Work per query and build (batch mode):", "",
              "| system | build s | index MB | peak RSS MB | bytes / vector on disk, resident"
              + (" after load" if any("resident_after_build_mb" in r for r in run["results"]) else "") + " | "
              + " | ".join(f"candidates @{t:.2f} | scanned @{t:.2f}" for t in TARGETS) + " |",
              "|---" * (5 + 2 * len(TARGETS)) + "|"]
    n = run["dataset"]["n"]
    for r in run["results"]:
        per = f"{r['index_bytes'] / n:,.0f}, " + (f"{r['resident_mb'] * 2**20 / n:,.0f}" if "resident_mb" in r else "–")
        cells = [r["system"], f"{r['build_s']:.1f}", f"{r['index_bytes'] / 1e6:.0f}", f"{r['rss_peak_mb']:.0f}", per]
        for t in TARGETS:
            c = at_recall(r["points"], t, "candidates", recall)
            sc = at_recall(r["points"], t, "scanned", recall)
            cells.append(f"{c['candidates']:,.0f} ({_setting(c)})" if c else "–")
            cells.append(f"{sc['scanned']:,.0f} ({_setting(sc)})" if sc else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plots(run: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recall = f"recall@{run['k']}"
    made = []
    for key, label, fname, log in (("qps", "queries per second (1 thread, batched)", "recall_qps.png", True),
                                   ("qps_parallel", "queries per second (all cores, batched)",
                                    "recall_qps_parallel.png", True),
                                   ("qps_single", "queries per second (1 thread, one query per call)",
                                    "recall_qps_single.png", True),
                                   ("candidates", "items scored exactly per query", "recall_candidates.png", True),
                                   ("scanned", "entries read from inverted lists per query (vectors or codes)",
                                    "recall_scanned.png", True)):
        if not any(key in p for r in run["results"] for p in r["points"]):
            continue
        fig, ax = plt.subplots(figsize=(7.5, 5))
        rk = f"{recall}_single" if key == "qps_single" else recall
        for r in run["results"]:
            pts = frontier([p for p in r["points"] if key in p or key in ("candidates", "scanned")], key, rk)
            if not pts:
                continue
            ax.plot([p[rk] for p in pts], [p[key] for p in pts], marker="o", ms=3, label=r["system"])
        ax.set_xlabel(recall)
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        ax.set_xlim(left=0.5)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{run['dataset']['dataset']}: {run['dataset']['n']:,} items, B={run['n_buckets']}")
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        made.append(out / fname)
    return made


def write_report(run: dict, out: Path) -> None:
    (out / "table.md").write_text(table(run))
    plots(run, out)


if __name__ == "__main__":  # re-render: python benchmarks/report.py runs/<dir>
    d = Path(sys.argv[1])
    write_report(json.loads((d / "results.json").read_text()), d)
    print((d / "table.md").read_text())
