"""Learning: training queries and targets, router training, and the
train <-> re-partition loop that makes partitions and routers agree.

The R routers of an index train together as one batched torch module (their
weights stacked along a leading R axis), so repetitions train in parallel on
whatever threads or GPU torch has. Inference lives in routers.py (numpy); this
module converts both ways.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..config import IndexConfig, ModelConfig
from ..kernels.exact import exact_knn
from ..model.partition import (
    assign_nearest,
    bucket_means,
    fallback_width,
    hash_assign,
    kmeans,
    nearest_centroids,
    power_of_k,
    soar_spill,
)
from ..model.routers import CentroidRouter, LinearRouter, MLPRouter, Router, Routing, route
from ..progress import Callback, report


@dataclass
class TrainingSet:
    """Training queries float32 (n, d) and, for each, the positions of its
    exact nearest items, int64 (n, t), best first."""

    queries: np.ndarray
    neighbors: np.ndarray


@dataclass
class LearnResult:
    """What `learn` produces: item buckets int32 (R, c, N) (c = 1 + spill;
    [:, 0] is each item's home bucket), one router per repetition, bucket
    centroids float32 (R, B, d) (for spilling and residual codes), and a log of
    the rounds (epochs, losses, items moved)."""

    assign: np.ndarray
    routers: list[Router]
    centroids: np.ndarray | None = None
    history: list[dict] = field(default_factory=list)


def training_set(x: np.ndarray, cfg: IndexConfig, queries: np.ndarray | None = None,
                 callback: Callback = None) -> TrainingSet:
    """Training queries and their exact top-`target_k` neighbours among `x`.

    Without `queries`, `n_train` items are sampled (seeded) as pseudo-queries
    and each one's own row is removed from its neighbours. `x` and `queries`
    are float32 and already normalised for cosine.
    """
    n = x.shape[0]
    t = min(cfg.target_k, n - 1 if queries is None else n)
    metric = "l2" if cfg.metric_type.l2 else "ip"
    if queries is not None:
        nb, _ = exact_knn(x, queries, t, metric, callback=callback)
        return TrainingSet(queries, nb)
    rng = np.random.default_rng([cfg.seed, 0x7A1])
    m = min(cfg.n_train, n)
    rows = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
    q = np.ascontiguousarray(x[rows])
    nb, _ = exact_knn(x, q, t + 1, metric, callback=callback)
    self_hit = nb == rows[:, None]
    self_hit[~self_hit.any(axis=1), -1] = True  # a duplicate outranked it: drop the last
    return TrainingSet(q, nb[~self_hit].reshape(m, t))


# -- the train <-> re-partition loop -------------------------------------------
def learn(x: np.ndarray, cfg: IndexConfig, n_buckets: int, train_queries: np.ndarray | None = None,
          callback: Callback = None, first_rep: int = 0, executor=None,
          tset: TrainingSet | None = None, train_targets: np.ndarray | None = None) -> LearnResult:
    """Partition `x` (float32 (N, d), normalised for cosine) into R x B buckets,
    fit the routers and spill, following `cfg`. Returns a LearnResult.

    Repetitions are independent: `first_rep` numbers them from there (their
    seeds follow), and an `executor` (irli.distributed.RayExecutor) trains
    groups of them in parallel tasks and joins the results. `tset`: the
    training set, when already computed (it is shared by all repetitions).
    A query log `train_queries` (m, d) sizes the training schedule
    (`IndexConfig.scaled_schedule`); `train_targets` int64 (m, t), positions
    in x, are its queries' targets instead of their exact neighbours."""
    if train_queries is not None:
        cfg = cfg.scaled_schedule(train_queries.shape[0]).replace(schedule="fixed")  # sized once
        if train_targets is not None and tset is None and cfg.learns:
            tset = TrainingSet(train_queries, train_targets)
    if executor is not None:
        return executor.learn(x, cfg, n_buckets, train_queries, tset=tset)
    res = _learn_homes(x, cfg, n_buckets, train_queries, callback, first_rep, tset)
    centroids = []
    for r, router in enumerate(res.routers):
        if isinstance(router, CentroidRouter):
            centroids.append(router.centroids)
        else:
            centroids.append(bucket_means(x, res.assign[r], n_buckets, cfg.spherical))
    res.centroids = np.stack(centroids)
    homes = res.assign[:, None, :]
    if cfg.spill:
        extra = [soar_spill(x, res.centroids[r], res.assign[r], cfg.spill, cfg.spill_lambda)
                 for r in range(cfg.n_reps)]
        report(callback, "spill", 1, 1)
        res.assign = np.concatenate([homes, np.stack(extra)], axis=1)
    else:
        res.assign = homes
    return res


def join(parts: list[LearnResult]) -> LearnResult:
    """The LearnResults of consecutive groups of repetitions as one."""
    return LearnResult(assign=np.concatenate([p.assign for p in parts]),
                       routers=[r for p in parts for r in p.routers],
                       centroids=np.concatenate([p.centroids for p in parts]),
                       history=[{"group": g, "rounds": p.history} for g, p in enumerate(parts)])


def _learn_homes(x, cfg, n_buckets, train_queries, callback, first_rep=0, tset=None) -> LearnResult:
    """The home bucket of every item (R, N) and the routers."""
    reps = cfg.n_reps
    assign = np.empty((reps, x.shape[0]), dtype=np.int32)
    centroids: list[np.ndarray] = []
    for r in range(reps):
        if cfg.start == "kmeans":
            c = kmeans(x, n_buckets, cfg.spherical, cfg.kmeans_iters, cfg.kmeans_sample,
                       seed=cfg.seed + first_rep + r, callback=callback)
            assign[r] = assign_nearest(x, c, cfg.spherical)
            centroids.append(c)
        else:
            assign[r] = hash_assign(x.shape[0], n_buckets, seed=cfg.seed + first_rep + r)
    if cfg.router == "centroid":
        return _learn_centroids(x, cfg, n_buckets, assign, callback, first_rep)

    history: list[dict] = []
    if not cfg.learns:  # a linear router read off k-means centroids, untrained
        return LearnResult(assign, [_linear_from_centroids(c, cfg) for c in centroids], history=history)

    if tset is None:
        tset = training_set(x, cfg, train_queries, callback)
    trainer = _Trainer(x.shape[1], n_buckets, cfg, centroids or None, sample=tset.queries, first_rep=first_rep)

    def train(assign, epochs, done, rnd):
        return [{"round": rnd, **trainer.train(tset, assign, epochs, done, rnd, callback)}]

    assign, history = alternate(cfg, assign, train, lambda a, seed: trainer.repartition(x, seed), callback,
                                first_rep, cfg.min_moved)
    return LearnResult(assign, trainer.export(), history=history)


def alternate(cfg: ModelConfig, assign: np.ndarray, train, repartition, callback: Callback = None,
              first_rep: int = 0, min_moved: float = 0.0) -> tuple[np.ndarray, list[dict]]:
    """IRLI's loop, for items (vectors) and labels alike: train the routers
    `repartition_every` epochs against the partition `assign` int32 (R, n),
    re-partition, and again, `epochs` epochs in all (one round without
    `repartition`); stop early when fewer than `min_moved` of the items
    moved. `train(assign, epochs, done, round)` trains and returns its log
    entries; `repartition(assign, seed)` returns the new partition. Round
    r's re-partition seed is seed + 1000 (r + 1) + first_rep (repetitions
    numbered from first_rep in a parallel fit). Returns (assign, history)."""
    every = cfg.repartition_every if cfg.repartition else cfg.epochs
    rounds = math.ceil(cfg.epochs / every)
    history: list[dict] = []
    done = 0
    for rnd in range(rounds):
        epochs = min(every, cfg.epochs - done)
        entries = train(assign, epochs, done, rnd)
        done += epochs
        history.extend(entries)
        if cfg.repartition and rnd < rounds - 1:
            new = repartition(assign, cfg.seed + 1000 * (rnd + 1) + first_rep)
            moved = (new != assign).mean(axis=1)
            assign = new
            history[-1]["moved"] = [float(v) for v in moved]
            report(callback, "repartition", rnd + 1, rounds - 1, moved=float(moved.mean()))
            if moved.mean() < min_moved:
                report(callback, "train", cfg.epochs, cfg.epochs, stopped="few items moved")
                break
    return assign, history


def validation_split(n: int, fraction: float, rng: np.random.Generator, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation rows, training rows) of range(n) from one permutation by
    `rng`: round(n x fraction) rows held out, none when n < min_rows. The
    validation rows come sorted, the training rows in permuted order."""
    perm = rng.permutation(n)
    n_val = int(round(n * fraction)) if n >= min_rows else 0
    return np.sort(perm[:n_val]), perm[n_val:]


def uniform(shape: tuple[int, ...], fan_in: float, gen):
    """torch tensor of `shape` drawn uniformly from +-1 / sqrt(fan_in) with
    the torch generator `gen` (torch's default init for linear layers)."""
    import torch

    return (torch.rand(shape, generator=gen) * 2 - 1) * (1.0 / math.sqrt(fan_in))


def bucket_loss(logits, target, loss: str):
    """Mean loss per repetition, torch (R,), of logits (R, b, B) against
    target (R, b, B) (the weight of each bucket for each point, 0 where it
    holds nothing relevant). "sigmoid": per-bucket binary cross-entropy with
    the buckets of positive weight as positives (the IRLI authors' code);
    "softmax": cross-entropy against the weights normalised to sum to one."""
    import torch.nn.functional as F

    if loss == "sigmoid":
        return F.binary_cross_entropy_with_logits(logits, (target > 0).to(logits.dtype),
                                                  reduction="none").sum(2).mean(1)
    t = target / target.sum(2, keepdim=True).clamp_min(1.0)
    return -(t * F.log_softmax(logits, dim=2)).sum(2).mean(1)


def _linear_from_centroids(c: np.ndarray, cfg: IndexConfig) -> LinearRouter:
    if cfg.uses_bias:  # -|q - c|^2 = 2 q.c - |c|^2 + const
        return LinearRouter(weight=2 * c, bias=-(c**2).sum(1))
    return LinearRouter(weight=c, bias=None)


def _learn_centroids(x, cfg, n_buckets, assign, callback, first_rep=0) -> LearnResult:
    """Centroid routers: the centroids are bucket means; with `repartition`,
    each round moves items to the least loaded of their K nearest centroids
    (a balanced k-means) and recomputes the means."""
    reps = assign.shape[0]
    cents = [bucket_means(x, assign[r], n_buckets, cfg.spherical) for r in range(reps)]
    history: list[dict] = []
    rounds = math.ceil(cfg.epochs / cfg.repartition_every) if cfg.repartition else 0
    for rnd in range(rounds):
        moved = []
        for r in range(reps):
            choices = nearest_centroids(x, cents[r], cfg.spherical,
                                        fallback_width(cfg.k_choices, n_buckets))
            new = power_of_k(choices, cfg.k_choices, n_buckets, cfg.max_load,
                             seed=cfg.seed + 1000 * (rnd + 1) + first_rep + r)
            moved.append(float((new != assign[r]).mean()))
            assign[r] = new
            cents[r] = bucket_means(x, new, n_buckets, cfg.spherical, old=cents[r])
        history.append({"round": rnd, "moved": moved})
        report(callback, "repartition", rnd + 1, rounds, moved=float(np.mean(moved)))
        if np.mean(moved) < cfg.min_moved:
            break
    routers = [CentroidRouter(c, l2=cfg.metric_type.l2) for c in cents]
    return LearnResult(assign, routers, history=history)


# -- torch side ------------------------------------------------------------------
def torch_device(cfg: ModelConfig):
    """The torch device `cfg.device` names ("auto": a CUDA GPU when torch
    sees one, else the CPU)."""
    import torch

    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from ..errors import ConfigError

            raise ConfigError("device='cuda' but torch sees no CUDA GPU")
        return torch.device("cuda")
    return torch.device("cpu")


class LinearTwin:
    """The torch side of R LinearRouters: weight (R, d, B), bias (R, B) when
    the config uses one; started from k-means centroids when given."""

    router = LinearRouter

    def __init__(self, d, n_buckets, cfg, centroids, sample, gen, device):
        import torch

        reps = cfg.n_reps
        self.from_centroids = centroids is not None
        p = {}
        if centroids is not None:
            init = [_linear_from_centroids(c, cfg) for c in centroids]
            p["weight"] = torch.from_numpy(np.stack([r.weight.T for r in init]))
            if cfg.uses_bias:
                p["bias"] = torch.from_numpy(np.stack([r.bias for r in init]))
        else:
            p["weight"] = uniform((reps, d, n_buckets), d, gen)
            if cfg.uses_bias:
                p["bias"] = torch.zeros(reps, n_buckets)
        self.params = {k: torch.nn.Parameter(v.float().to(device)) for k, v in p.items()}

    def forward(self, q):
        """q float tensor (b, d) -> logits (R, b, B)."""
        import torch

        s = torch.matmul(q, self.params["weight"])
        return s + self.params["bias"][:, None, :] if "bias" in self.params else s

    def export(self) -> list[Router]:
        p = {k: v.detach().cpu().numpy() for k, v in self.params.items()}
        return [LinearRouter(weight=p["weight"][r].T, bias=p["bias"][r] if "bias" in p else None)
                for r in range(p["weight"].shape[0])]


class MLPTwin:
    """The torch side of R MLPRouters: w1 (R, d, h), b1 (R, h), w2 (R, h,
    B), b2 (R, B), on inputs standardised with the training sample's mean
    and spread while training; export folds those back into w1 and b1."""

    router = MLPRouter
    from_centroids = False

    def __init__(self, d, n_buckets, cfg, centroids, sample, gen, device):
        import torch

        reps, h = cfg.n_reps, cfg.hidden
        mu = sample.mean(0) if sample is not None else np.zeros(d, np.float32)
        sd = sample.std(0) if sample is not None else np.ones(d, np.float32)
        self.shift = torch.from_numpy(mu.astype(np.float32)).to(device)
        self.scale = torch.from_numpy(np.where(sd > 1e-8, sd, 1.0).astype(np.float32)).to(device)
        p = {"w1": uniform((reps, d, h), d, gen), "b1": uniform((reps, h), d, gen),
             "w2": uniform((reps, h, n_buckets), h, gen), "b2": uniform((reps, n_buckets), h, gen)}
        self.params = {k: torch.nn.Parameter(v.float().to(device)) for k, v in p.items()}

    def forward(self, q):
        """q float tensor (b, d) -> logits (R, b, B)."""
        import torch

        p = self.params
        q = (q - self.shift) / self.scale
        h = torch.relu(torch.matmul(q, p["w1"]) + p["b1"][:, None, :])
        return torch.matmul(h, p["w2"]) + p["b2"][:, None, :]

    def export(self) -> list[Router]:
        p = {k: v.detach().cpu().numpy() for k, v in self.params.items()}
        shift, scale = self.shift.cpu().numpy(), self.scale.cpu().numpy()
        w1 = p["w1"] / scale[None, :, None]  # relu(((q - mu) / sd) W1 + b1) == relu(q W1' + b1')
        b1 = p["b1"] - np.einsum("d,rdh->rh", shift, w1)
        return [MLPRouter(w1=w1[r], b1=b1[r], w2=p["w2"][r], b2=p["b2"][r]) for r in range(w1.shape[0])]


# the trainable router kinds: a new kind is a Router subclass (routers.py) and its twin here
TWINS = {twin.router.kind: twin for twin in (LinearTwin, MLPTwin)}


class _Trainer:
    """R routers of one kind (their torch twin) with their optimiser, the
    training epochs and the re-partition step."""

    def __init__(self, d: int, n_buckets: int, cfg: IndexConfig, centroids: list[np.ndarray] | None,
                 sample: np.ndarray | None = None, first_rep: int = 0):
        import torch

        self.torch = torch
        self.cfg = cfg
        self.n_buckets = n_buckets
        self.device = torch_device(cfg)
        self.gen = torch.Generator().manual_seed(cfg.seed + first_rep)
        self.twin = TWINS[cfg.router](d, n_buckets, cfg, centroids, sample, self.gen, self.device)
        self.params = self.twin.params
        self.from_centroids = self.twin.from_centroids
        self.opt = torch.optim.Adam(self.params.values(), lr=cfg.lr)
        self._val_rows = None

    def forward(self, q):
        """q float tensor (b, d) -> logits (R, b, B)."""
        return self.twin.forward(q)

    def _loss(self, logits, buckets):
        """Per-repetition mean loss, (R,). buckets: long (R, b, t), the
        buckets of each point's t neighbours: a bucket's target weight is the
        share of the neighbours it holds."""
        target = self.torch.zeros_like(logits)
        target.scatter_add_(2, buckets, self.torch.full(buckets.shape, 1.0 / buckets.shape[2],
                                                         device=logits.device))
        return bucket_loss(logits, target, self.cfg.loss)

    def train(self, tset: TrainingSet, assign: np.ndarray, epochs: int, done: int, rnd: int,
              callback: Callback) -> dict:
        """`epochs` epochs against the buckets of `assign` (R, N); restores each
        repetition's weights from its best validation epoch. Returns a log entry."""
        torch = self.torch
        cfg = self.cfg
        n = tset.queries.shape[0]
        if self._val_rows is None:
            self._val_rows, rows = validation_split(n, cfg.val_fraction, np.random.default_rng([cfg.seed, 0x5A1]), 10)
            self._train_rows = np.sort(rows)
        q = torch.from_numpy(np.ascontiguousarray(tset.queries)).to(self.device)
        nb = torch.from_numpy(tset.neighbors).to(self.device)
        at = torch.from_numpy(assign.astype(np.int64)).to(self.device)
        tr = torch.from_numpy(self._train_rows).to(self.device)
        va = torch.from_numpy(self._val_rows).to(self.device)
        bs = cfg.batch_size
        reps = assign.shape[0]
        if rnd == 0 and cfg.loss == "sigmoid" and "b2" in self.params:
            self._bias_prior(at, nb[tr[:4096]])
        if rnd == 0 and self.from_centroids:
            self._calibrate_scale(q, nb, at, tr[:8192])
        # epoch 0 (the starting weights) competes too: training that only
        # hurts on the validation split is undone
        best = self._mean_loss(q, nb, at, va).cpu() if va.numel() else torch.full((reps,), float("inf"))
        best_state = {k: v.detach().clone() for k, v in self.params.items()}
        best_epoch = [0] * reps
        stale = 0
        losses: list[float] = []
        vals: list[float] = []
        for e in range(epochs):
            order = tr[torch.randperm(tr.numel(), generator=self.gen).to(self.device)]
            total, count = 0.0, 0
            for s in range(0, order.numel(), bs):
                rows = order[s : s + bs]
                loss = self._loss(self.forward(q[rows]), at[:, nb[rows]]).sum()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                total += float(loss.detach()) * rows.numel()
                count += rows.numel()
            losses.append(total / max(count, 1) / reps)
            if va.numel():
                vl = self._mean_loss(q, nb, at, va).cpu()
                vals.append(float(vl.mean()))
                better = vl < best
                if better.any():
                    stale = 0
                    for r in torch.nonzero(better).flatten().tolist():
                        best[r] = vl[r]
                        best_epoch[r] = e + 1
                        for k, v in self.params.items():
                            best_state[k][r] = v.detach()[r]
                else:
                    stale += 1
            report(callback, "train", done + e + 1, cfg.epochs, round=rnd, loss=losses[-1],
                   val_loss=vals[-1] if vals else None)
            if stale >= cfg.patience:
                if e + 1 < epochs:  # the round's remaining epochs count as done
                    report(callback, "train", done + epochs, cfg.epochs, round=rnd, stopped="no better validation")
                break
        if va.numel():
            with torch.no_grad():
                for k, v in self.params.items():
                    v.copy_(best_state[k])
        return {"epochs": len(losses), "best_epoch": best_epoch, "loss": losses, "val_loss": vals}

    def _mean_loss(self, q, nb, at, rows, batch: int = 4096):
        """Mean loss per repetition (R,) over training rows `rows`, no grad."""
        torch = self.torch
        with torch.no_grad():
            total = torch.zeros(at.shape[0], device=self.device)
            for s in range(0, rows.numel(), batch):
                r = rows[s : s + batch]
                total += self._loss(self.forward(q[r]), at[:, nb[r]]) * r.numel()
        return total / max(rows.numel(), 1)

    def _calibrate_scale(self, q, nb, at, rows) -> None:
        """Scale a router read off centroids by the power of two (1..1024) that
        minimises the training loss. Unit centroids give logits in [-1, 1],
        a nearly flat softmax; without this, training first spends its steps
        on the scale and wanders from the good starting partition scores."""
        torch = self.torch
        start = {k: v.detach().clone() for k, v in self.params.items()}
        best, best_scale = None, None
        for e in range(11):
            with torch.no_grad():
                for k, v in self.params.items():
                    v.copy_(start[k] * 2.0**e)
            loss = self._mean_loss(q, nb, at, rows)
            best = loss if best is None else best
            best_scale = torch.zeros_like(loss) if best_scale is None else best_scale
            better = loss <= best
            best = torch.where(better, loss, best)
            best_scale = torch.where(better, torch.full_like(loss, 2.0**e), best_scale)
        with torch.no_grad():
            for k, v in self.params.items():
                v.copy_(start[k] * best_scale.view(-1, *([1] * (v.dim() - 1))))

    def _bias_prior(self, at, nb) -> None:
        """Start each output bias at the logit of the mean positive rate, so
        sigmoid training does not spend its first epochs pushing every bucket
        from p = 0.5 down to the few positives."""
        torch = self.torch
        buckets = at[:, nb]  # (R, m, t)
        target = torch.zeros(buckets.shape[0], buckets.shape[1], self.n_buckets, device=self.device)
        target.scatter_(2, buckets, 1.0)
        rate = target.mean().clamp(1e-4, 0.5)
        with torch.no_grad():
            self.params["b2"].fill_(float(torch.log(rate / (1 - rate))))

    def repartition(self, x: np.ndarray, seed: int, batch: int = 8192) -> np.ndarray:
        """Each item into the least loaded of its routers' top-K buckets, per
        repetition, using the item itself as the router input (see
        `power_of_k` for the load cap). int32 (R, N). On the CPU the routers
        are exported and run through the search's compiled routing on every
        core (irli.model.routers.route): on GloVe, torch's forward pass and
        top-k took 10 s of a re-partition's 12.8 (issue 24)."""
        torch = self.torch
        cfg = self.cfg
        width = fallback_width(cfg.k_choices, self.n_buckets)
        if self.device.type == "cpu":
            # as the search routes (8-bit last layers where it does): items go where their own vector is routed
            choices = route(Routing.from_routers(self.export()), np.ascontiguousarray(x, dtype=np.float32), width)[0]
        else:
            choices = np.empty((cfg.n_reps, x.shape[0], width), dtype=np.int32)
            with torch.no_grad():
                for s in range(0, x.shape[0], batch):
                    part = torch.from_numpy(np.ascontiguousarray(x[s : s + batch])).to(self.device)
                    top = torch.topk(self.forward(part), width, dim=2).indices
                    choices[:, s : s + part.shape[0]] = top.cpu().numpy()
        return np.stack([power_of_k(choices[r], cfg.k_choices, self.n_buckets, cfg.max_load, seed + r)
                         for r in range(cfg.n_reps)])

    def export(self) -> list[Router]:
        """The trained weights as numpy routers, one per repetition."""
        return self.twin.export()
