"""Tables and plots from a benchmark run (results.json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

TARGETS = (0.90, 0.95)


def frontier(points: list[dict], key: str, recall: str) -> list[dict]:
    """Points not beaten on both recall and `key` (higher QPS / fewer candidates)."""
    better = (lambda a, b: a > b) if key == "qps" else (lambda a, b: a < b)
    pts = [p for p in points if p.get(key) is not None]
    keep = [p for p in pts if not any(q[recall] >= p[recall] and better(q[key], p[key]) and q is not p
                                      and (q[recall] > p[recall] or q[key] != p[key]) for q in pts)]
    return sorted(keep, key=lambda p: p[recall])


def at_recall(points: list[dict], target: float, key: str, recall: str) -> dict | None:
    """The best point on `key` among those reaching `target` recall."""
    ok = [p for p in points if p[recall] >= target and p.get(key) is not None]
    if not ok:
        return None
    return max(ok, key=lambda p: p[key]) if key == "qps" else min(ok, key=lambda p: p[key])


def _setting(p: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in p["setting"].items())


def table(run: dict) -> str:
    k = run["k"]
    recall = f"recall@{k}"
    m = run["machine"]
    lines = [
        f"Dataset {run['dataset']['dataset']}: {run['dataset']['n']:,} items x {run['dataset']['d']}, "
        f"{run['dataset']['nq']:,} queries, {run['dataset']['metric']}, B = nlist = {run['n_buckets']}, k = {k}. "
        f"{m['cpu']}, {m['cores']} cores; " + ", ".join(f"{a} {b}" for a, b in m["versions"].items())
        + f". Run {run['date']}. Build on 2 threads; search on 1 thread, one batched call per setting, "
        "median of 3 timings (1 where a call takes over 3 s). Each cell: the best value among settings "
        "reaching the recall (setting; recall reached).",
        "",
        "| system | build s | index MB | peak RSS MB | "
        + " | ".join(f"QPS @{t:.2f} | candidates @{t:.2f} | scanned @{t:.2f}" for t in TARGETS) + " |",
        "|---" * (4 + 3 * len(TARGETS)) + "|",
    ]
    for r in run["results"]:
        cells = [r["system"], f"{r['build_s']:.1f}", f"{r['index_bytes'] / 1e6:.0f}", f"{r['rss_peak_mb']:.0f}"]
        for t in TARGETS:
            q = at_recall(r["points"], t, "qps", recall)
            c = at_recall(r["points"], t, "candidates", recall)
            sc = at_recall(r["points"], t, "scanned", recall)
            cells.append(f"{q['qps']:,.0f} ({_setting(q)}; {q[recall]:.3f})" if q else "not reached")
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
    for key, label, fname, log in (("qps", "queries per second (1 thread)", "recall_qps.png", True),
                                   ("candidates", "items scored exactly per query", "recall_candidates.png", True),
                                   ("scanned", "entries read from inverted lists per query (vectors or codes)",
                                    "recall_scanned.png", True)):
        fig, ax = plt.subplots(figsize=(7.5, 5))
        for r in run["results"]:
            pts = frontier(r["points"], key, recall)
            if not pts:
                continue
            ax.plot([p[recall] for p in pts], [p[key] for p in pts], marker="o", ms=3, label=r["system"])
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
