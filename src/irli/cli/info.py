"""`irli info`: what an index directory holds."""

from __future__ import annotations

import numpy as np

from .options import Flag


def info(index: str, /, *, no_verify: Flag = False) -> int:
    """What an index directory holds.

    Prints the manifest, sizes and bucket loads of INDEX (a vector, sharded or label index), and the
    configuration settings that shape it.

    Parameters
    ----------
    index
        index directory
    no_verify
        skip checksum verification
    """
    from ..io.storage import read_manifest
    from ..loader import load
    from ..metrics import bucket_load

    man = read_manifest(index)
    if man.get("task") == "sharded":
        return _info_sharded(index, man, no_verify)
    opened = load(index, verify=not no_verify)
    size = sum(f.get("bytes", 0) for f in man["files"].values())
    if man.get("task") == "labels":
        load_stats = bucket_load(np.diff(opened.model_.offsets, axis=1))
        print(f"index      {index}  (label index, extreme classification)")
        print(f"labels     {man['n_labels']:,}  features {man['n_features']:,}  repetitions "
              f"{opened.fitted_config_.n_reps}  buckets {man['n_buckets']:,}  "
              f"trained on {man.get('n_train', 0):,} points")
        print(f"load       labels per bucket max/mean {load_stats['max_over_mean']:.2f}  empty {load_stats['empty']}")
        print(f"size       {size / 1e6:.1f} MB in {len(man['files'])} files")
        print("config     " + ", ".join(f"{k}={v}" for k, v in man["config"].items()))
        return 0
    load_stats = bucket_load(opened.lists_.sizes())
    cfg = man["config"]
    print(f"index      {index}")
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
          f"{'skipped' if no_verify else 'verified'})")
    fit = (man.get("history") or {}).get("fit_seconds")
    if fit is not None:
        print(f"fit        {fit:.1f} s")
    print("config     " + ", ".join(f"{k}={v}" for k, v in applies(cfg).items()))
    return 0


def applies(cfg: dict) -> dict:
    """The settings of a vector index's config that shape it (those of
    training, re-partitioning, codes, k-means or spill only where used)."""
    learns = cfg.get("router") != "centroid" and cfg.get("epochs", 0) > 0
    drop = set()
    if not learns:
        drop |= {"hidden", "loss", "lr", "batch_size", "val_fraction", "patience", "n_train", "target_k", "device",
                 "epochs", "schedule"}
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
    return {k: v for k, v in cfg.items() if k not in drop}


def _info_sharded(index: str, man: dict, no_verify: bool) -> int:
    from ..distributed.layout import Layout
    from ..io.storage import read_manifest

    layout = Layout.read(index, verify=not no_verify)
    cfg = man["config"]
    print(f"index      {index}  (sharded: {layout.n_shards} parts, buckets by {layout.assignment})")
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
