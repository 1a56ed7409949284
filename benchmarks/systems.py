"""The systems a benchmark compares: irli configurations and their peers.

Each system is built from a spec string and answers `settings()`: the query
settings to try, and `search(queries, k, setting)` -> (ids, candidates, scanned):
candidates are items scored exactly, scanned the entries read from inverted
lists (vectors or codes), both per query or None where a system has no such
count. `search` is what gets timed in the batched modes (on the threads
`set_threads` allows); `search_one(vector, k, setting)` -> ids is what gets
timed, once per query, in the single-query mode. A system whose counts cost
extra work returns None there and computes them in `counts(queries, k,
setting)`, untimed. `save(directory)` writes the built index with the
library's own format and `load(directory, d, metric)` opens it again: the
index's size on disk, and its resident memory in a fresh process that loads
it and searches (`resident_after_load`).

Spec strings:
  irli:<preset>[:key=value,...]   an irli Index with overrides, e.g. irli:ivf-ltr:epochs=10
  faiss-ivfflat                   FAISS IndexIVFFlat, spherical k-means, nlist = B
  faiss-ivfpqfs                   FAISS IVF{B},PQ{d}x4fs,RFlat (fast-scan PQ, exact refine; PQ{d/2} from d = 256)
  hnswlib                         hnswlib, M=16, ef_construction=200
  scann                           ScaNN: tree(B leaves, spherical) + score_ah(2, threshold 0.2) + reorder (swept)
  usearch                         USearch HNSW, connectivity 16, expansion_add 200
  faiss-flat                      FAISS IndexFlat (exact)
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

PROBES = [1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 56, 64, 80, 96, 128]
EFS = [10, 16, 24, 32, 48, 64, 80, 100, 120, 160, 240, 320, 480]


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _faiss_metric(metric: str):
    import faiss

    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


class System:
    """Interface: build(x) then search(q, k, setting) for each of settings()."""

    name: str

    def build(self, x: np.ndarray, metric: str, n_buckets: int) -> None:
        raise NotImplementedError

    def settings(self) -> list[dict]:
        raise NotImplementedError

    def search(self, q: np.ndarray, k: int, setting: dict) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def save(self, path: Path) -> None:
        """Write the built index into the (existing, empty) directory path."""
        raise NotImplementedError

    def load(self, path: Path, d: int, metric: str) -> None:
        """Open an index `save` wrote, ready to search."""
        raise NotImplementedError

    def search_one(self, v: np.ndarray, k: int, setting: dict) -> np.ndarray:
        """ids of one query vector v (d,): the single-query mode. The default
        searches a batch of one."""
        return self.search(v[None], k, setting)[0][0]

    def prepare_single(self, setting: dict) -> None:
        """Apply `setting` before a run of search_one calls (untimed)."""

    def counts(self, q: np.ndarray, k: int, setting: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(candidates, scanned) per query, computed outside the timed search."""
        return None, None

    def set_threads(self, n: int) -> None:
        """Pin every library this system uses to n threads."""
        import faiss
        import numba
        from threadpoolctl import threadpool_limits

        self.threads = n
        faiss.omp_set_num_threads(n)
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        if getattr(self, "_limits", None) is not None:
            self._limits.restore_original_limits()
        self._limits = threadpool_limits(n)
        try:
            import torch

            torch.set_num_threads(n)
        except ImportError:
            pass


class IrliSystem(System):
    def __init__(self, spec: str):
        parts = spec.split(":", 2)
        self.preset = parts[1] if len(parts) > 1 else "irli"
        self.overrides: dict = {}
        if len(parts) > 2 and parts[2]:  # search options (probes, min_votes, top_c) are config defaults too
            from irli.config import IndexConfig

            self.overrides = IndexConfig.parse_overrides(parts[2].split(","))
        self.name = spec

    def build(self, x, metric, n_buckets):
        import irli

        kw = {"n_buckets": n_buckets, **self.overrides}
        self.index = irli.Index(self.preset, metric=metric, **kw).fit(x)

    def settings(self):
        probes = [p for p in PROBES if p <= self.index.n_buckets]
        if self.index.codes_:  # the re-rank factor is a query knob too, as FAISS's k_factor
            fine = sorted(set(probes) | {p for p in (10, 14, 18, 22, 28) if p <= self.index.n_buckets})
            return [{"probes": p, "refine": f} for p in fine if p >= 4 for f in (2, 3, 4, 6, 8)]
        if self.index.n_reps > 1 and "min_votes" not in self.overrides:  # the vote filter across repetitions
            return [{"probes": p, "min_votes": v} for p in probes for v in (1, 2)]
        return [{"probes": p} for p in probes]

    def set_threads(self, n):
        import irli

        super().set_threads(n)
        irli.set_num_threads(n)

    def search(self, q, k, setting):
        res = self.index.search(q, k=k, threads=self.threads, **setting)
        return res.ids, res.candidates, res.scanned

    def search_one(self, v, k, setting):
        return self.index.search(v, k=k, **setting).ids[0]

    def save(self, path):
        self.index.save(Path(path) / "index")

    def load(self, path, d, metric):
        import irli

        self.index = irli.Index.load(Path(path) / "index")


class _FaissFile(System):
    """save / load through FAISS's own file format; `_opened` sets up what
    searching needs once the index is in memory."""

    def _opened(self):
        pass

    def save(self, path):
        import faiss

        faiss.write_index(self.index, str(Path(path) / "faiss.index"))

    def load(self, path, d, metric):
        import faiss

        self.index = faiss.read_index(str(Path(path) / "faiss.index"))
        self._opened()


class FaissIVFFlat(_FaissFile):
    name = "faiss-ivfflat"

    def build(self, x, metric, n_buckets):
        self._build(x, metric, f"IVF{n_buckets},Flat")

    def _build(self, x, metric, spec):
        """Build the FAISS index `spec` (spherical k-means unless l2)."""
        import faiss

        self.index = faiss.index_factory(x.shape[1], spec, _faiss_metric(metric))
        if metric != "l2":
            faiss.extract_index_ivf(self.index).cp.spherical = True
        self.index.train(x)
        self.index.add(x)
        self._opened()

    def _opened(self):
        import faiss

        self.ivf = faiss.extract_index_ivf(self.index)
        self.sizes = np.array([self.ivf.invlists.list_size(i) for i in range(self.ivf.nlist)])

    def settings(self):
        return [{"nprobe": p} for p in PROBES if p <= self.ivf.nlist]

    def search(self, q, k, setting):
        self.ivf.nprobe = setting["nprobe"]
        _, ids = self.index.search(q, k)
        return ids, None, None

    def prepare_single(self, setting):
        self.search(np.zeros((1, self.index.d), np.float32), 1, setting)  # sets nprobe (and k_factor)

    def search_one(self, v, k, setting):
        return self.index.search(v[None], k)[1][0]

    def counts(self, q, k, setting):
        # every item of the lists the quantizer picks is scored exactly
        _, lists = self.ivf.quantizer.search(q, setting["nprobe"])
        read = self.sizes[lists].sum(axis=1)
        return read, read


class FaissIVFPQFastScan(FaissIVFFlat):
    name = "faiss-ivfpqfs"

    def build(self, x, metric, n_buckets):
        d = x.shape[1]
        m = d if d < 256 else d // 2  # from d = 256 two dimensions per code, as irli's fast and ScaNN's AH
        m = m if m % 2 == 0 else m - 1
        while d % m:
            m -= 1
        self._build(x, metric, f"IVF{n_buckets},PQ{m}x4fs,RFlat")

    def settings(self):
        return [{"nprobe": p, "k_factor": f} for p in PROBES if p <= self.ivf.nlist for f in (4, 10, 20)]

    def search(self, q, k, setting):
        self.index.k_factor = setting["k_factor"]
        return super().search(q, k, setting)

    def counts(self, q, k, setting):
        # codes of the picked lists are scanned; k_factor x k of them re-scored exactly
        _, read = super().counts(q, k, setting)
        return np.full(q.shape[0], setting["k_factor"] * k), read


class Hnswlib(System):
    name = "hnswlib"

    def build(self, x, metric, n_buckets):
        import hnswlib

        self.index = hnswlib.Index(space="l2" if metric == "l2" else "ip", dim=x.shape[1])
        self.index.init_index(max_elements=x.shape[0], M=16, ef_construction=200, random_seed=0)
        self.index.set_num_threads(2)
        self.index.add_items(x, np.arange(x.shape[0]))

    def set_threads(self, n):
        super().set_threads(n)
        if hasattr(self, "index"):
            self.index.set_num_threads(n)

    def settings(self):
        return [{"ef": e} for e in EFS]

    def search(self, q, k, setting):
        self.index.set_ef(max(setting["ef"], k))
        ids, _ = self.index.knn_query(q, k=k, num_threads=self.threads)
        return ids.astype(np.int64), None, None

    def prepare_single(self, setting):
        self.index.set_ef(max(setting["ef"], 10))
        self.index.set_num_threads(1)

    def search_one(self, v, k, setting):
        return self.index.knn_query(v, k=k)[0][0]

    def save(self, path):
        self.index.save_index(str(Path(path) / "h.bin"))

    def load(self, path, d, metric):
        import hnswlib

        self.index = hnswlib.Index(space="l2" if metric == "l2" else "ip", dim=d)
        self.index.load_index(str(Path(path) / "h.bin"))


class FaissFlat(_FaissFile):
    name = "faiss-flat"

    def build(self, x, metric, n_buckets):
        import faiss

        self.index = faiss.IndexFlatL2(x.shape[1]) if metric == "l2" else faiss.IndexFlatIP(x.shape[1])
        self.index.add(x)

    def settings(self):
        return [{"exact": True}]

    def search(self, q, k, setting):
        _, ids = self.index.search(q, k)
        n = np.full(q.shape[0], self.index.ntotal)
        return ids, n, n


class Scann(System):
    """ScaNN as BENCHMARKS.md configures it: a spherical tree of B leaves,
    anisotropic 4-bit AH on 2-dimension blocks, exact re-ordering of the
    best `pre_reorder_num_neighbors`."""

    name = "scann"
    LEAVES = [4, 6, 8, 10, 12, 15, 18, 20, 22, 25, 28, 30, 35, 40, 50, 60, 80, 100]
    REORDER = [30, 50, 100, 200]
    # from d = 256 its 4-bit codes lose more, so the exact re-order must reach further
    LEAVES_HIGH_D = [8, 12, 16, 20, 25, 30, 40, 50, 60, 80, 100, 130, 160]
    REORDER_HIGH_D = [50, 100, 200, 400, 800]

    def build(self, x, metric, n_buckets):
        import scann

        dist = "squared_l2" if metric == "l2" else "dot_product"
        self.k_build = 10
        self.searcher = (scann.scann_ops_pybind.builder(x, self.k_build, dist)
                         .tree(num_leaves=n_buckets, num_leaves_to_search=16, training_sample_size=x.shape[0],
                               spherical=metric != "l2")
                         .score_ah(2, anisotropic_quantization_threshold=0.2 if metric != "l2" else float("nan"))
                         .reorder(100).build())
        self.n_leaves = n_buckets
        self.high_d = x.shape[1] >= 256

    def set_threads(self, n):
        super().set_threads(n)
        if hasattr(self, "searcher"):
            self.searcher.set_num_threads(n)

    def settings(self):
        leaves, reorder = (self.LEAVES_HIGH_D, self.REORDER_HIGH_D) if self.high_d else (self.LEAVES, self.REORDER)
        return [{"leaves": lv, "reorder": r} for lv in leaves if lv <= self.n_leaves for r in reorder]

    def search(self, q, k, setting):
        kw = dict(final_num_neighbors=k, pre_reorder_num_neighbors=max(k, setting["reorder"]),
                  leaves_to_search=setting["leaves"])
        if self.threads > 1:
            ids, _ = self.searcher.search_batched_parallel(q, **kw)
        else:
            ids, _ = self.searcher.search_batched(q, **kw)
        return ids.astype(np.int64), None, None

    def search_one(self, v, k, setting):
        return self.searcher.search(v, final_num_neighbors=k, pre_reorder_num_neighbors=max(k, setting["reorder"]),
                                    leaves_to_search=setting["leaves"])[0]

    def save(self, path):
        self.searcher.serialize(str(path))
        (Path(path) / "bench.json").write_text(json.dumps({"n_leaves": self.n_leaves, "high_d": self.high_d}))

    def load(self, path, d, metric):
        import scann

        self.searcher = scann.scann_ops_pybind.load_searcher(str(path))
        meta = json.loads((Path(path) / "bench.json").read_text())
        self.n_leaves, self.high_d = meta["n_leaves"], meta["high_d"]


class USearch(System):
    """USearch's HNSW: connectivity 16, expansion_add 200."""

    name = "usearch"

    def build(self, x, metric, n_buckets):
        from usearch.index import Index

        self.index = Index(ndim=x.shape[1], metric="l2sq" if metric == "l2" else "ip", dtype="f32",
                           connectivity=16, expansion_add=200)
        self.index.add(np.arange(x.shape[0]), x, threads=2)

    def settings(self):
        return [{"ef": e} for e in EFS]

    def search(self, q, k, setting):
        self.index.expansion_search = max(setting["ef"], k)
        return self.index.search(q, k, threads=self.threads).keys.astype(np.int64), None, None

    def prepare_single(self, setting):
        self.index.expansion_search = max(setting["ef"], 10)

    def search_one(self, v, k, setting):
        return self.index.search(v, k).keys

    def save(self, path):
        self.index.save(str(Path(path) / "u.usearch"))

    def load(self, path, d, metric):
        from usearch.index import Index

        self.index = Index.restore(str(Path(path) / "u.usearch"))


def make(spec: str) -> System:
    if spec.startswith("irli"):
        return IrliSystem(spec)
    table = {c.name: c for c in (FaissIVFFlat, FaissIVFPQFastScan, Hnswlib, Scann, USearch, FaissFlat)}
    if spec not in table:
        raise ValueError(f"unknown system {spec!r}; use irli:<preset>[:k=v,...] or one of {', '.join(table)}")
    return table[spec]()


def rss_mb(field: str = "VmHWM") -> float:
    """This process's own peak resident memory (VmHWM), or with field="VmRSS"
    its resident memory now, in MB: ru_maxrss of a child started by fork +
    exec can report its parent's peak on Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resident_after_load(spec: str, path: Path, queries: Path, d: int, metric: str, k: int) -> float:
    """MB the index takes in a fresh process: resident memory (VmRSS) after
    opening the index `save` wrote at path and searching every query of the
    .npy file `queries` at its first setting (one thread), less what the
    process held before opening it (interpreter, libraries, the queries).
    Run in its own process: `python systems.py resident <spec> <path> ...`."""
    import subprocess

    cmd = [sys.executable, __file__, "resident", spec, str(path), str(queries), str(d), metric, str(k)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _resident_main(spec, path, queries, d, metric, k):
    import gc

    q = np.load(queries)
    sysm = make(spec)
    sysm.set_threads(1)
    # a small index built and searched first: the libraries' code (and irli's compiled kernels) is in
    # the baseline, so what is left is the index
    x = np.random.default_rng(0).standard_normal((4096, int(d))).astype(np.float32)
    sysm.build(x, metric, 64)
    sysm.set_threads(1)
    sysm.search(q[:64], int(k), sysm.settings()[0])
    del sysm, x
    gc.collect()
    sysm = make(spec)
    before = rss_mb("VmRSS")
    sysm.load(Path(path), int(d), metric)
    sysm.set_threads(1)
    sysm.search(q, int(k), sysm.settings()[0])
    print(rss_mb("VmRSS") - before)


def timed(fn, repeats: int = 3, slow: float = 3.0):
    """(result of the last call, median seconds over `repeats` calls); a call
    slower than `slow` seconds is not repeated (its noise is small anyway)."""
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        if times[-1] > slow:
            break
    return out, float(np.median(times))


if __name__ == "__main__" and len(sys.argv) == 8 and sys.argv[1] == "resident":
    _resident_main(*sys.argv[2:])
