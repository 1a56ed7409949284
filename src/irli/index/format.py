"""Index's file format: what `save` writes (`to_arrays`) and how `load`
reads it back, checked."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Self

import numpy as np

from ..config import IndexConfig
from ..errors import IndexFormatError
from ..io.checks import check_vector_index
from ..io.storage import read_index, write_index
from ..learn.budget import ProbeBudget
from ..model.repetitions import Repetitions
from ..version import __version__
from .codes import PQ4Codes
from .state import exclusive


class FormatMixin:
    """Saving and loading an Index."""

    # -- persistence ---------------------------------------------------------------
    @exclusive
    def save(self, path: str | os.PathLike, shards: int | None = None, assignment: str = "locality") -> Path:
        """Write the index to the directory `path`, atomically (see
        irli.io.storage); returns its path.

        With `shards` = S, write a sharded index instead: S self-contained
        part directories, each holding only the items of the buckets it
        owns, plus the routers and the bucket -> part table (see
        irli.distributed.layout; `assignment` "locality" or "modulo"). `path` may then
        be an fsspec URL. Open it with `irli.ShardedIndex.open`."""
        if shards is not None:
            from ..distributed.layout import save_sharded

            return save_sharded(self, path, shards, assignment)
        return write_index(path, *self.to_arrays())

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
        """What `save` writes: (arrays by file name, router weights by
        "<rep>.<name>", the manifest's fields)."""
        self.check_fitted()
        arrays = {"vectors": self.vectors_, "ids": self.ids_, **self.reps_.arrays()}
        if self.codes_ is not None:
            arrays.update(self.codes_.arrays())
        if self.config.metric_type.l2:
            arrays["sqnorms"] = self.sqnorms_
        if self.n_removed:
            arrays["live"] = self.live_
        routers = self.reps_.router_tensors()
        manifest = {
            "task": "vectors", "irli_version": __version__, "preset": self.preset, "config": self.config.to_dict(),
            "n_items": len(self), "n_slots": int(self.vectors_.shape[0]), "next_id": self.next_id_,
            "dim": self.dim, "n_buckets": self.n_buckets,
            "n_reps": self.n_reps, "router": self.reps_.kind,
            "saved_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "history": self.history_,
        }
        if self.codes_ is not None:
            manifest["pq_residual"] = self.codes_.residual
            manifest["pq_eta"] = self.codes_.eta
        if self.budget_ is not None:
            manifest["probe_budget"] = self.budget_.to_dict()
        return arrays, routers, manifest

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> Self:
        """Read an index directory written by `save`. With `mmap`, the vectors
        and lists stay on disk, memory-mapped; `verify` checks every file's
        sha256 against the manifest."""
        man, arrays, tensors = read_index(path, mmap=mmap, verify=verify)
        return cls.from_saved(path, man, arrays, tensors)

    @classmethod
    def from_saved(cls, path, man: dict[str, Any], arrays: dict[str, np.ndarray],
                   tensors: dict[str, np.ndarray]) -> Self:
        """An index from what `to_arrays` gives or `storage.read_index`
        reads (manifest, arrays by name, router tensors), checked; `path`
        names it in errors. A part of a sharded index (manifest "part") is
        read-only."""
        task = man.get("task", "vectors")
        if task == "sharded":
            raise IndexFormatError(f"{path}: a sharded index; open it with irli.ShardedIndex.open or irli.load")
        if task != "vectors":
            raise IndexFormatError(f"{path}: a label index (task {task!r}); load it with irli.LabelIndex.load or irli.load")
        try:
            config = IndexConfig.from_dict(man["config"])
        except Exception as e:  # a config this version cannot build
            raise IndexFormatError(f"{path}: invalid config in manifest ({e})") from None
        check_vector_index(path, man, config.n_reps, config.copies, config.metric_type.l2, config.scan == "pq4",
                           arrays, tensors)
        n = arrays["vectors"].shape[0]
        reps = Repetitions.from_arrays(path, arrays, tensors, man.get("router"), config.n_reps, config.metric)
        lists, centroids = reps.lists, reps.centroids
        codes = None
        if config.scan == "pq4":
            codes = PQ4Codes.from_arrays(arrays["pq_books"], arrays["pq_codes"], centroids, config.metric,
                                         bool(man.get("pq_residual", True)), lists, arrays["assign"], n,
                                         eta=float(man.get("pq_eta", 0.0)))
        live = np.asarray(arrays["live"]) if "live" in arrays else None
        budget = None
        if config.learned_probes:
            try:
                budget = ProbeBudget.from_dict(man["probe_budget"])
            except Exception as e:  # missing or damaged
                raise IndexFormatError(f"{path}: invalid probe_budget in manifest ({e})") from None
        self = cls.from_arrays(config, man.get("preset", "custom"), arrays["vectors"], arrays["ids"],
                               reps.assign, centroids, lists, list(reps.routers), codes, man.get("history", {}), live=live,
                               next_id=man.get("next_id"), sqnorms=arrays.get("sqnorms"), budget=budget)
        self.part_ = man.get("part")
        return self
