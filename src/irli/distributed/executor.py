"""Ray as irli's distributed engine (optional: pip install 'irli[ray]').

* `RayExecutor` runs independent work as Ray tasks: groups of repetitions
  training in parallel (`Index.fit(..., executor=...)`), each task with its own
  CPU/GPU request and retried when its worker dies.
* `irli.distributed.sharded.ShardedIndex` runs the parts of a sharded index in Ray
  actors (see there).

Nothing here imports Ray until it is used, and `import irli` never does.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from ..errors import InvalidInputError, IrliError


class DistributedError(IrliError, RuntimeError):
    """A Ray task or actor failed for good (after its retries)."""


def _ray():
    try:
        import ray
    except ImportError:
        raise IrliError("Ray is not installed; pip install 'irli[ray]'") from None
    return ray


def failure(e: Exception, what: str) -> DistributedError:
    """A one-line DistributedError for a failed Ray call: `what` and the cause."""
    cause = getattr(e, "cause", None) or e
    first = " ".join(str(cause).split())[:300]
    return DistributedError(f"{what} failed: {type(cause).__name__}: {first}")


class RayExecutor:
    """Where distributed work runs: a Ray cluster.

    address: None starts (or reuses) a local Ray in this process, "local"
    always starts a new one (never joins another's), "auto" joins
    the cluster of `ray start`, or a "ray://host:port" address. workers:
    parallel tasks (default: the cluster's CPUs / cpus_per_task).
    cpus_per_task / gpus_per_task: each task's resource request; torch in a
    task uses that many threads. max_retries: re-runs of a task whose worker
    died (Ray's own retry); a task that raises is not retried. quiet: Ray
    logs only errors to this process's terminal. timeout_s:
    how long `map` waits for all its tasks (a hung task raises
    DistributedError naming it, never a hang).
    """

    def __init__(self, address: str | None = None, workers: int | None = None, cpus_per_task: int = 1,
                 gpus_per_task: float = 0, max_retries: int = 2, timeout_s: float = 6 * 3600.0,
                 quiet: bool = False) -> None:
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise InvalidInputError(f"workers must be a positive integer, got {workers!r}")
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise InvalidInputError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        self.address, self.workers, self.timeout_s = address, workers, float(timeout_s)
        self.cpus_per_task, self.gpus_per_task, self.max_retries = cpus_per_task, gpus_per_task, max_retries
        self.quiet = quiet

    def ray(self):
        """The ray module, connected (ray.init on first use)."""
        ray = _ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": self.address, "include_dashboard": False,
                                      "log_to_driver": False}
            if self.quiet:
                kwargs["logging_level"] = logging.ERROR
            if self.address in (None, "local"):
                kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(_package_paths())}}
            ray.init(**kwargs)
        return ray

    def n_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        cpus = int(self.ray().cluster_resources().get("CPU", 1))
        return max(1, cpus // max(1, self.cpus_per_task))

    def map(self, fn, items: list, **shared) -> list:
        """[fn(item, **shared) for item in items] as parallel Ray tasks; the
        `shared` values go to the object store once. Raises
        DistributedError naming the first task that failed."""
        ray = self.ray()
        refs = {k: ray.put(v) for k, v in shared.items()}
        task = ray.remote(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
                          max_retries=self.max_retries)(fn)
        futures = [task.remote(item, **refs) for item in items]
        deadline = time.monotonic() + self.timeout_s
        out = []
        for i, f in enumerate(futures):
            try:
                out.append(ray.get(f, timeout=max(0.0, deadline - time.monotonic())))
            except Exception as e:  # RayTaskError, WorkerCrashedError, GetTimeoutError, ...
                for g in futures[i:]:
                    ray.cancel(g, force=True)
                what = f"Ray task {i} of {len(futures)} ({getattr(fn, '__name__', fn)})"
                if isinstance(e, ray.exceptions.GetTimeoutError):
                    raise DistributedError(f"{what} did not finish within {self.timeout_s:g} s") from None
                raise failure(e, what) from None
        return out

    def learn(self, x: np.ndarray, cfg, n_buckets: int, train_queries: np.ndarray | None, tset=None):
        """`training.learn` with the repetitions split into `workers` groups,
        one Ray task each; joined in repetition order. `tset`: the training
        set when the caller has it (a log with its own targets)."""
        from ..learn.loop import join, training_set

        groups = [g for g in np.array_split(np.arange(cfg.n_reps), min(self.n_workers(), cfg.n_reps)) if g.size]
        items = [(int(g[0]), int(g.size)) for g in groups]
        # the training queries' exact neighbours serve every repetition: computed
        # once here rather than once per task
        if tset is None and cfg.learns:
            tset = training_set(x, cfg, train_queries)
        parts = self.map(_learn_group, items, x=x, cfg=cfg, n_buckets=n_buckets,
                         train_queries=train_queries, tset=tset, threads=max(1, int(self.cpus_per_task)))
        return join(parts)


def _package_paths() -> list[str]:
    """Where this irli is imported from, so local Ray workers import the same."""
    here = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))  # the folder holding irli/
    return [here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def _learn_group(item: tuple[int, int], x, cfg, n_buckets, train_queries, tset, threads):
    """Ray task: repetitions first .. first + count - 1 of `cfg`."""
    import faiss
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    from ..learn.loop import learn

    torch.set_num_threads(threads)  # a task uses the CPUs it asked for, not the node's
    faiss.omp_set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    first, count = item
    with threadpool_limits(threads):
        return learn(x, cfg.replace(n_reps=count), n_buckets, train_queries, first_rep=first, tset=tset)
