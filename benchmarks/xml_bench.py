"""Extreme classification benchmark: irli's LabelIndex against omikuji,
napkinXC and PECOS (XR-Linear), one process per system, one thread.

    make xml-bench                                          # bibtex and delicious, all systems
    python benchmarks/xml_bench.py --data-dir DIR --datasets bibtex --systems irli omikuji
    python benchmarks/xml_bench.py --scaling 1000,10000,100000   # synthetic label sets

Data: DIR/<name>/{train,test}.txt in the XC format, from --data-dir or
$IRLI_XML_DATA (the repository ships no data; `make xml-bench` points at
the team's copy). The peers need numpy < 2, so they run under a second
interpreter (--peer-python, default .venv-xc/bin/python; `make xml-peers`
creates it). Every worker trains, saves its model (for the size), predicts
the top 5 of every test point, and hands the predictions back; the
metrics are computed here, the same way for everyone (irli.metrics; PSP with
propensities from the training labels, A=0.55, B=1.5).

Writes <out>/results.json and <out>/table.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# the data is not shipped: --data-dir, or IRLI_XML_DATA (the Makefile sets it)
DATA = os.environ.get("IRLI_XML_DATA", "")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}

# name -> (runs under the peer interpreter, description)
SYSTEMS = {
    "irli": (False, "LabelIndex defaults"),
    "irli:r8": (False, "LabelIndex, R=8 repetitions"),
    "omikuji": (True, "omikuji 0.5.2 defaults (Parabel-like, 3 trees)"),
    "omikuji:bonsai": (True, "omikuji, Bonsai-style shallow trees: cluster_k=100, max_depth=3"),
    "napkinxc": (True, "napkinXC PLT defaults"),
    "napkinxc:ens3": (True, "napkinXC PLT, ensemble of 3 trees"),
    "pecos": (True, "PECOS XR-Linear defaults (PIFA, hierarchical k-means)"),
    "pecos:l2": (True, "PECOS XR-Linear on L2-normalised rows (as its tf-idf vectoriser emits), beam 20"),
}
DEFAULT_SYSTEMS = list(SYSTEMS)
K = 5


def dir_bytes(path: Path) -> int:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


# -- workers (run in a child process) ----------------------------------------------
def _worker(system: str, train: str, data: str, out: str) -> None:
    import scipy.sparse as sp  # the peers' interpreter has no irli: data comes as .npz

    x, y, xt = (sp.load_npz(f"{data}.{part}.npz").tocsr() for part in ("x", "y", "xt"))
    tmp = Path(tempfile.mkdtemp(prefix="xmlbench-"))
    try:
        name, _, variant = system.partition(":")
        fn = {"irli": _irli, "omikuji": _omikuji, "napkinxc": _napkinxc, "pecos": _pecos}[name]
        res = fn(variant, x, y, xt, train, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    np.save(out + ".npy", res.pop("pred"))
    Path(out + ".json").write_text(json.dumps(res))


def _timed(fn):
    t = time.perf_counter()
    v = fn()
    return v, time.perf_counter() - t


def _pad(rows: list[list[int]]) -> np.ndarray:
    out = np.full((len(rows), K), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        r = list(r)[:K]
        out[i, :len(r)] = r
    return out


def _irli(variant, x, y, xt, train, tmp):
    import torch

    torch.set_num_threads(1)
    from irli import LabelIndex

    opts = {"n_reps": 8} if variant == "r8" else {}
    index, fit_s = _timed(lambda: LabelIndex(**opts).fit(x, y))
    probes = None
    index.predict(xt[:64], k=K, probes=probes, threads=1)  # warm the compiled kernels
    (pred, _), pred_s = _timed(lambda: index.predict(xt, k=K, probes=probes, threads=1))
    # one point per call, as a service tags one document at a time (rows cut beforehand, as for omikuji)
    rows = [xt[i] for i in range(xt.shape[0])]
    for r in rows[:16]:
        index.predict(r, k=K, probes=probes)
    _, single_s = _timed(lambda: [index.predict(r, k=K, probes=probes) for r in rows])
    index.save(tmp / "m")
    cfg = index.fitted_config_
    return {"pred": pred, "train_s": fit_s, "predict_s": pred_s, "single_s": single_s,
            "model_bytes": dir_bytes(tmp / "m"), "params": {"n_reps": cfg.n_reps, "n_buckets": cfg.n_buckets, "probes": probes or cfg.probes,
                       "hidden": cfg.hidden, "epochs": cfg.epochs, "best_epoch": index.history_[-1].get("best_epoch")}}


def _omikuji(variant, x, y, xt, train, tmp):
    import omikuji

    hp = omikuji.Model.default_hyper_param()
    if variant == "bonsai":
        hp.cluster_k = 100
        hp.max_depth = 3
    model, fit_s = _timed(lambda: omikuji.Model.train_on_data(train, hp, n_threads=1))
    model.init_prediction_thread_pool(1)
    rows = [list(zip(xt.indices[xt.indptr[i]:xt.indptr[i + 1]].tolist(),
                     xt.data[xt.indptr[i]:xt.indptr[i + 1]].tolist())) for i in range(xt.shape[0])]
    pred, pred_s = _timed(lambda: [[lab for lab, _ in model.predict(r, top_k=K)] for r in rows])
    model.save(str(tmp / "m"))
    # its Python API takes one point per call: the batch timing is the single-point one
    return {"pred": _pad(pred), "train_s": fit_s, "predict_s": pred_s, "single_s": pred_s,
            "model_bytes": dir_bytes(tmp / "m"),
            "params": {"n_trees": hp.n_trees, "cluster_k": hp.cluster_k, "max_depth": hp.max_depth}}


def _napkinxc(variant, x, y, xt, train, tmp):
    from napkinxc.models import PLT

    ens = 3 if variant == "ens3" else 1
    model = PLT(str(tmp / "m"), ensemble=ens, threads=1, seed=0)
    labels = [y.indices[y.indptr[i]:y.indptr[i + 1]].tolist() for i in range(y.shape[0])]
    _, fit_s = _timed(lambda: model.fit(x, labels))
    pred, pred_s = _timed(lambda: model.predict(xt, top_k=K))
    return {"pred": _pad(pred), "train_s": fit_s, "predict_s": pred_s, "model_bytes": dir_bytes(tmp / "m"),
            "params": {"ensemble": ens}}


def _pecos(variant, x, y, xt, train, tmp):
    from pecos.xmc import Indexer, LabelEmbeddingFactory
    from pecos.xmc.xlinear.model import XLinearModel

    kw = {}
    if variant == "l2":
        from sklearn.preprocessing import normalize

        x, xt = normalize(x), normalize(xt)
        kw = {"beam_size": 20}

    def fit():
        emb = LabelEmbeddingFactory.create(y, x, method="pifa")
        tree = Indexer.gen(emb, indexer_type="hierarchicalkmeans", threads=1)
        return XLinearModel.train(x, y, C=tree, threads=1)

    model, fit_s = _timed(fit)
    scores, pred_s = _timed(lambda: model.predict(xt, only_topk=K, threads=1, **kw))
    scores = scores.tocsr()
    pred = []
    for i in range(scores.shape[0]):
        s, e = scores.indptr[i], scores.indptr[i + 1]
        order = np.argsort(-scores.data[s:e], kind="stable")
        pred.append(scores.indices[s:e][order].tolist())
    model.save(str(tmp / "m"))
    return {"pred": _pad(pred), "train_s": fit_s, "predict_s": pred_s, "model_bytes": dir_bytes(tmp / "m"),
            "params": kw or {"beam_size": 10}}


# -- orchestration ---------------------------------------------------------------------
def run_system(system: str, train: Path, data: Path, peer_python: str, workdir: Path) -> dict:
    """Run one system in a child process; `train` is the XC file (omikuji
    reads it), `data` the prefix of the .npz matrices."""
    peer = SYSTEMS[system][0]
    py = peer_python if peer else sys.executable
    out = workdir / system.replace(":", "_")
    env = {**os.environ, **ONE_THREAD}
    cmd = [py, str(Path(__file__).resolve()), "--worker", system, str(train), str(data), str(out)]
    if not Path(py).is_file():
        return {"system": system, "error": f"no interpreter at {py} (run `make xml-peers`)"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"system": system, "error": tail[0]}
    res = json.loads(Path(str(out) + ".json").read_text())
    res["pred"] = np.load(str(out) + ".npy")
    return {"system": system, **res}


def score(res: dict, y_train, y_test) -> dict:
    from irli.metrics import (
        label_coverage,
        ndcg_at_k,
        precision_at_k,
        propensity,
        psp_at_k,
    )

    pred = res.pop("pred")
    prop = propensity(y_train)
    m = {f"P@{k}": precision_at_k(pred, y_test, k) for k in (1, 3, 5)}
    m.update({f"nDCG@{k}": ndcg_at_k(pred, y_test, k) for k in (1, 3, 5)})
    m.update({f"PSP@{k}": psp_at_k(pred, y_test, k, prop) for k in (1, 3, 5)})
    m["coverage@5"] = label_coverage(pred, y_test, 5)
    m["ms_per_point"] = res["predict_s"] * 1e3 / y_test.shape[0]
    if "single_s" in res:
        m["single_ms_per_point"] = res["single_s"] * 1e3 / y_test.shape[0]
    return {**res, **m}


def table(results: dict) -> str:
    lines = []
    for ds, rows in results.items():
        lines += [f"### {ds}", "",
                  "| system | P@1 | P@3 | P@5 | PSP@1 | PSP@3 | PSP@5 | nDCG@5 | train s | predict ms/point "
                  "| one point per call, ms | model MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['system']} | failed: {r['error']} |" + " |" * 10)
                continue
            lines.append(f"| {r['system']} | " + " | ".join(f"{100 * r[c]:.2f}" for c in
                         ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5", "nDCG@5"))
                         + f" | {r['train_s']:.1f} | {r['ms_per_point']:.3f} | "
                         + (f"{r['single_ms_per_point']:.3f}" if "single_ms_per_point" in r else "–")
                         + f" | {r['model_bytes'] / 1e6:.1f} |")
        lines.append("")
    return "\n".join(lines)


def machine() -> dict:
    import scipy
    import torch

    import irli
    from irli.cli.demo import cpu_name

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(), "irli": irli.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__, "torch": torch.__version__,
            "threads": 1, "date": time.strftime("%Y-%m-%d %H:%M")}


def peer_versions(peer_python: str) -> dict:
    code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "('omikuji', 'napkinxc', 'libpecos', 'numpy')}))")
    try:
        return json.loads(subprocess.run([peer_python, "-c", code], capture_output=True, text=True,
                                         check=True).stdout)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return {}


def scaling(sizes: list[int], out: Path) -> list[dict]:
    """irli training and prediction time as the number of labels grows, on
    synthetic sets with a planted hierarchy (50,000 training and 2,000 test
    points, 20,000 features, 5 epochs; everything else at its default)."""
    import torch
    from tqdm import tqdm

    from irli import LabelIndex
    from irli.io.datasets import synthetic_labels
    from irli.metrics import precision_at_k

    torch.set_num_threads(1)
    import numba

    numba.set_num_threads(1)
    rows = []
    for n_labels in tqdm(sizes, desc="scaling", file=sys.stderr):
        x, y = synthetic_labels(52_000, n_labels, n_features=20_000, seed=n_labels)
        xtr, ytr, xte, yte = x[:-2000], y[:-2000], x[-2000:], y[-2000:]
        index, fit_s = _timed(lambda: LabelIndex(epochs=5, repartition_every=2).fit(xtr, ytr))
        index.predict(xte[:64], k=K)
        (pred, _, cand), pred_s = _timed(lambda: index.predict_with_counts(xte, k=K))
        cfg = index.fitted_config_
        rows.append({"labels": n_labels, "train_points": xtr.shape[0], "features": x.shape[1],
                     "n_buckets": cfg.n_buckets, "probes": cfg.probes, "train_s": fit_s,
                     "ms_per_point": pred_s * 1e3 / xte.shape[0], "candidates": float(cand.mean()),
                     "P@1": precision_at_k(pred, yte, 1), "P@5": precision_at_k(pred, yte, 5),
                     "model_bytes": index.model_bytes()})
        (out / "scaling.json").write_text(json.dumps(rows, indent=2))
    return rows


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(*sys.argv[2:6])
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["bibtex", "delicious"])
    p.add_argument("--systems", nargs="+", default=DEFAULT_SYSTEMS, choices=list(SYSTEMS))
    p.add_argument("--data-dir", default=DATA, required=not DATA,
                   help="folder of <name>/{train,test}.txt (default: $IRLI_XML_DATA)")
    p.add_argument("--peer-python", default=str(ROOT / ".venv-xc" / "bin" / "python"))
    p.add_argument("--scaling", default=None, help="comma-separated label counts for the synthetic scaling run")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    from tqdm import tqdm

    from irli.labels.xcformat import read_xc

    out = Path(a.out or ROOT / "runs" / f"xml-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine(), "peers": peer_versions(a.peer_python)}
    results: dict = {}
    if a.scaling:
        meta["scaling"] = scaling([int(v) for v in a.scaling.split(",")], out)
    work = Path(tempfile.mkdtemp(prefix="xmlbench-"))
    loaded: dict = {}
    try:
        jobs = [(ds, s) for ds in (a.datasets if not a.scaling else []) for s in a.systems]
        bar = tqdm(jobs, desc="systems", file=sys.stderr)
        for ds, system in bar:
            bar.set_postfix_str(f"{ds} {system}")
            train, test = Path(a.data_dir) / ds / "train.txt", Path(a.data_dir) / ds / "test.txt"
            if not train.is_file():
                raise SystemExit(f"xml_bench: {train} not found (see --data-dir)")
            if ds not in loaded:
                import scipy.sparse as sp

                x, ytr = read_xc(train)
                xt, yte = read_xc(test)
                for part, m in (("x", x), ("y", ytr), ("xt", xt)):
                    sp.save_npz(work / f"{ds}.{part}.npz", m)
                loaded[ds] = (ytr, yte)
            ytr, yte = loaded[ds]
            res = run_system(system, train, work / ds, a.peer_python, work)
            if "error" not in res:
                res = score(res, ytr, yte)
                bar.write(f"{ds:10s} {system:16s} P@1 {100 * res['P@1']:.2f}  P@5 {100 * res['P@5']:.2f}  "
                          f"train {res['train_s']:.1f} s  predict {res['ms_per_point']:.3f} ms/pt")
            else:
                bar.write(f"{ds:10s} {system:16s} failed: {res['error']}")
            results.setdefault(ds, []).append(res)
            (out / "results.json").write_text(json.dumps({**meta, "results": results}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (out / "results.json").write_text(json.dumps({**meta, "results": results}, indent=2))
    if results:
        (out / "table.md").write_text(table(results))
        print(table(results))
    if a.scaling:
        print("| labels | train points | B | probes | train s | predict ms/point | candidates | P@1 | P@5 |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in meta["scaling"]:
            print(f"| {r['labels']:,} | {r['train_points']:,} | {r['n_buckets']} | {r['probes']} | {r['train_s']:.1f} | "
                  f"{r['ms_per_point']:.3f} | {r['candidates']:.0f} | {100 * r['P@1']:.2f} | {100 * r['P@5']:.2f} |")
    print(f"results in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
