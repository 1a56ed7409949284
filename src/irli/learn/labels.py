"""Training a label index: R sparse-input MLP routers over hashed label
buckets, re-partitioned with power-of-K choices, and an optional per-label
scorer learned alongside (torch; the result is a numpy LabelModel).

Each router's input layer is an EmbeddingBag over feature ids weighted by the
feature values (X is never densified); all R input layers are one bag of
width R * h. Targets are multi-hot over the buckets of a point's labels.
Re-partitioning (IRLI): a label's representative is the sum of the router's
bucket probabilities over the training points that carry it; the label moves
to the least loaded of its top-K buckets.
"""

from __future__ import annotations

import numpy as np

from ..metrics import precision_at_k
from ..model.labels import LabelModel
from ..model.partition import fallback_width, power_of_k
from ..progress import Callback, report
from .loop import alternate, bucket_loss, torch_device, uniform, validation_split


def hash_labels(n_labels: int, n_buckets: int, reps: int, seed: int) -> np.ndarray:
    """A balanced random bucket for every label in every repetition: int32 (R, L)."""
    out = np.empty((reps, n_labels), dtype=np.int32)
    for r in range(reps):
        perm = np.random.default_rng([seed, r, 0x1AB]).permutation(n_labels)
        out[r, perm] = np.arange(n_labels) % n_buckets
    return out


class _Net:
    """The stacked routers and the scorer as torch parameters."""

    def __init__(self, n_feat, n_labels, cfg, device):
        import torch

        self.torch = torch
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        reps, h, b = cfg.n_reps, cfg.hidden, cfg.n_buckets

        def u(shape, fan_in):
            return uniform(shape, fan_in, g).to(device)

        # inputs are L2-normalised rows, so a unit fan-in keeps the first layer's scale
        p = {"w1": u((n_feat, reps * h), 1.0) * 0.1, "b1": torch.zeros(reps * h, device=device),
             "w2": u((reps, h, b), h), "b2": torch.zeros(reps, b, device=device)}
        if cfg.scorer:
            p["v"] = torch.zeros(n_labels, reps * h, device=device)
            p["c"] = torch.zeros(n_labels, 1, device=device)  # (L, 1): rows take sparse gradients
        self.p = {k: torch.nn.Parameter(v.float()) for k, v in p.items()}
        # In big models, w1 (features) and v, c (labels) take sparse gradients
        # and lazy SparseAdam steps that touch only the batch's features and
        # labels; small models keep plain Adam, which measured better on
        # bibtex and delicious.
        big = n_feat * reps * h + n_labels * reps * h > cfg.sparse_above
        self.sparse = [k for k in ("w1", "v", "c") if k in self.p] if big else []
        self.opts = [torch.optim.Adam([v for k, v in self.p.items() if k not in self.sparse], lr=cfg.lr)]
        if self.sparse:
            self.opts.append(torch.optim.SparseAdam([self.p[k] for k in self.sparse], lr=cfg.lr))

    def step(self, loss) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in self.opts:
            o.step()

    def scores(self, h, labels):
        """Scorer logits (b, len(labels)) for label ids (long tensor)."""
        F = self.torch.nn.functional
        sparse = "v" in self.sparse
        v = F.embedding(labels, self.p["v"], sparse=sparse)
        return self.torch.addmm(F.embedding(labels, self.p["c"], sparse=sparse)[:, 0], h, v.T)

    def hidden(self, idx, off, wts, train: bool):
        F = self.torch.nn.functional
        h = F.embedding_bag(idx, self.p["w1"], off, mode="sum", per_sample_weights=wts,
                            sparse="w1" in self.sparse)
        h = self.torch.relu(h + self.p["b1"])
        if train and self.cfg.dropout > 0:
            h = F.dropout(h, self.cfg.dropout, training=True)
        return h

    def router_logits(self, h):
        reps, hid = self.cfg.n_reps, self.cfg.hidden
        hr = h.view(h.shape[0], reps, hid).transpose(0, 1)  # (R, b, h)
        return self.torch.baddbmm(self.p["b2"][:, None, :], hr, self.p["w2"])  # (R, b, B)

    def export(self, assign, loss) -> LabelModel:
        a = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in self.p.items()}
        return LabelModel.build(w1=a["w1"], b1=a["b1"], w2=a["w2"], b2=a["b2"], assign=assign.copy(), loss=loss,
                                v=a.get("v"), c=a["c"].ravel() if "c" in a else None)


def _batch(x, rows, device, torch):
    """EmbeddingBag inputs for CSR rows."""
    sub = x[rows]
    idx = torch.from_numpy(sub.indices.astype(np.int64)).to(device)
    off = torch.from_numpy(sub.indptr[:-1].astype(np.int64)).to(device)
    wts = torch.from_numpy(sub.data.astype(np.float32)).to(device)
    return idx, off, wts


def learn_labels(x, y, cfg, callback: Callback = None) -> tuple[LabelModel, list[dict]]:
    """Fit routers, partitions and scorer on CSR x (n, F) (rows normalised as
    the model expects) and CSR y (n, L) 0/1, in the train <-> re-partition
    loop of irli.learn.loop.alternate; the model kept is the one of the epoch
    with the best validation P@1. Returns (model, history)."""
    import torch

    device = torch_device(cfg)
    n, n_labels = y.shape
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 0x7E1])
    val_rows, tr_rows = validation_split(n, cfg.val_fraction, rng, 20)
    net = _Net(x.shape[1], n_labels, cfg, device)
    y = y.tocsr()
    full_scorer = n_labels <= cfg.full_scorer_labels
    best = [-1.0, None, None]  # val P@1, model, epoch

    def train(assign, epochs, done, rnd):
        at = torch.from_numpy(assign.astype(np.int64)).to(device)
        entries = []
        for e in range(epochs):
            order = tr_rows[rng.permutation(tr_rows.size)]
            total = 0.0
            for s in range(0, order.size, cfg.batch_size):
                rows = np.sort(order[s:s + cfg.batch_size])
                loss = _step_loss(net, x, y, rows, at, full_scorer, rng, device)
                net.step(loss)
                total += float(loss.detach()) * rows.size
            entry = {"round": rnd, "epoch": done + e + 1, "loss": total / max(tr_rows.size, 1)}
            if val_rows.size:
                model = net.export(assign, cfg.loss)
                pred, _, _ = model.predict(x[val_rows], 1, cfg.probes, rerank=cfg.scorer, blend=cfg.blend)
                entry["val_p1"] = precision_at_k(pred, y[val_rows], 1)
                if entry["val_p1"] > best[0]:
                    best[:] = [entry["val_p1"], model, done + e + 1]
            entries.append(entry)
            report(callback, "train", done + e + 1, cfg.epochs, round=rnd, loss=entry["loss"],
                   val_p1=entry.get("val_p1"))
        return entries

    def repartition(assign, seed):
        return _repartition(net, x, y, tr_rows, assign, cfg, device, seed)

    start = hash_labels(n_labels, cfg.n_buckets, cfg.n_reps, cfg.seed)
    assign, history = alternate(cfg, start, train, repartition, callback)
    model = best[1] if best[1] is not None else net.export(assign, cfg.loss)
    if best[1] is not None:
        history.append({"best_epoch": best[2], "val_p1": best[0]})
    model = model.changed(background=background_sample(model, x, cfg.seed))
    return model, history


def _step_loss(net, x, y, rows, at, full_scorer, rng, device):
    torch = net.torch
    F = torch.nn.functional
    cfg = net.cfg
    idx, off, wts = _batch(x, rows, device, torch)
    h = net.hidden(idx, off, wts, train=True)
    logits = net.router_logits(h)  # (R, b, B)
    yb = y[rows]
    prow = torch.from_numpy(np.repeat(np.arange(len(rows)), np.diff(yb.indptr))).to(device)
    plab = torch.from_numpy(yb.indices.astype(np.int64)).to(device)
    target = torch.zeros_like(logits)
    if plab.numel():
        target.index_put_((torch.arange(cfg.n_reps, device=device)[:, None].expand(-1, plab.numel()),
                           prow[None].expand(cfg.n_reps, -1), at[:, plab]), torch.tensor(1.0, device=device))
    loss = bucket_loss(logits, target, cfg.loss).sum()
    if cfg.scorer:
        if full_scorer:
            z = net.scores(h, torch.arange(y.shape[1], device=device))
            yt = torch.from_numpy(yb.toarray()).to(device)
        else:  # the batch's labels plus as many random ones
            labs = np.unique(np.concatenate([yb.indices, rng.integers(0, y.shape[1], max(yb.nnz, 256))]))
            lt = torch.from_numpy(labs.astype(np.int64)).to(device)
            z = net.scores(h, lt)
            yt = torch.from_numpy(yb[:, labs].toarray()).to(device)
        loss = loss + F.binary_cross_entropy_with_logits(z, yt, reduction="none").sum(1).mean()
    return loss


def _repartition(net, x, y, rows, assign, cfg, device, seed, batch: int = 4096, top: int = 16
                 ) -> np.ndarray:
    """New buckets int32 (R, L): each label to the least loaded of the top-K
    buckets of its representative, the sum of the router's bucket
    probabilities over its training points (each point's `top` most probable
    buckets, so the sums stay sparse at any B). Labels without training
    points, and ties, keep their bucket."""
    import scipy.sparse as sp

    torch = net.torch
    reps, n_buckets = cfg.n_reps, cfg.n_buckets
    t = min(top, n_buckets)
    n_labels = y.shape[1]
    parts = [[] for _ in range(reps)]
    with torch.no_grad():
        for s in range(0, rows.size, batch):
            part = np.sort(rows[s:s + batch])
            h = net.hidden(*_batch(x, part, device, torch), train=False)
            lg = net.router_logits(h)
            pr = torch.sigmoid(lg) if cfg.loss == "sigmoid" else torch.softmax(lg, dim=2)
            val, idx = torch.topk(pr, t, dim=2)
            val, idx = val.cpu().numpy(), idx.cpu().numpy()
            yt = y[part].T.tocsr()
            for r in range(reps):
                pm = sp.csr_matrix((val[r].ravel(), idx[r].ravel(), np.arange(0, part.size * t + 1, t)),
                                   shape=(part.size, n_buckets))
                parts[r].append(yt @ pm)
    width = fallback_width(cfg.k_choices, n_buckets)
    out = np.empty_like(assign)
    for r in range(reps):
        rep = sum(parts[r][1:], parts[r][0]).tocsr() if parts[r] else sp.csr_matrix((n_labels, n_buckets))
        rep = rep + sp.csr_matrix((np.full(n_labels, 1e-6, np.float32), assign[r], np.arange(n_labels + 1)),
                                  shape=(n_labels, n_buckets))
        choices = ranked_buckets(rep, assign[r], width)
        out[r] = power_of_k(choices, cfg.k_choices, n_buckets, cfg.max_load, seed + r)
    return out


def ranked_buckets(rep, default: np.ndarray, width: int) -> np.ndarray:
    """Each label's `width` best buckets, int32 (L, width), best first, by
    its representative `rep` (sparse (L, B) sums of bucket probabilities);
    slots past a label's non-zero buckets hold `default` int (L,)."""
    rep = rep.tocsr()
    rep.sum_duplicates()
    n_labels = rep.shape[0]
    choices = np.repeat(np.asarray(default, dtype=np.int32)[:, None], width, axis=1)
    row = np.repeat(np.arange(n_labels), np.diff(rep.indptr))
    order = np.lexsort((-rep.data, row))  # by row, then by value, best first
    rank = np.arange(order.size) - rep.indptr[row[order]]
    keep = rank < width
    choices[row[order][keep], rank[keep]] = rep.indices[order][keep]
    return choices


# -- adding labels to a trained model (LabelIndex.add) -----------------------------
def background_sample(model: LabelModel, x, seed: int, size: int = 512) -> np.ndarray:
    """The hidden layer, float32 (S, D), of S = min(size, n) rows of CSR x
    (n, F) drawn with `seed`: the negatives a label added later is learned
    against (see `learn_new_scorers`)."""
    rows = np.random.default_rng([seed, 0xB6]).choice(x.shape[0], min(size, x.shape[0]), replace=False)
    return model.hidden(x[np.sort(rows)])


def place_labels(model: LabelModel, h: np.ndarray, yl, loads: np.ndarray, cfg, seed: int,
                 batch: int = 4096, top: int = 16) -> np.ndarray:
    """Buckets int32 (R, m) for m new labels in every repetition, from the
    hidden layer h float32 (n, D) of the points that may carry them and yl
    CSR (m, n) 0/1 (which points carry each label): as in re-partitioning, a
    label's representative is the sum of the router's (top `top`) bucket
    probabilities over its points, and it goes to the least loaded of its
    top `k_choices` buckets, counting `loads` int (R, B), the labels already
    in each bucket (power of K choices; `max_load` caps the buckets)."""
    import scipy.sparse as sp

    n, reps, n_buckets = h.shape[0], model.n_reps, model.n_buckets
    t = min(top, n_buckets)
    width = fallback_width(cfg.k_choices, n_buckets)
    out = np.empty((reps, yl.shape[0]), dtype=np.int32)
    for r in range(reps):
        rep = sp.csr_matrix((yl.shape[0], n_buckets), dtype=np.float32)
        for s in range(0, n, batch):
            pr = model.bucket_probs(h[s:s + batch], r)
            idx = np.argpartition(-pr, t - 1, axis=1)[:, :t]
            val = np.take_along_axis(pr, idx, axis=1)
            pm = sp.csr_matrix((val.ravel(), idx.ravel(), np.arange(0, pr.shape[0] * t + 1, t)),
                               shape=(pr.shape[0], n_buckets))
            rep = rep + yl[:, s:s + batch] @ pm
        best = np.asarray(rep.argmax(axis=1)).ravel().astype(np.int32)
        choices = ranked_buckets(rep, best, width)
        out[r] = power_of_k(choices, cfg.k_choices, n_buckets, cfg.max_load, seed + r, loads=loads[r])
    return out


def learn_new_scorers(h: np.ndarray, yl, background: np.ndarray | None, weight: float, cfg,
                      chunk: int = 512, others: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """The scorer (v float32 (m, D), c float32 (m,)) of m new labels on the
    model's frozen hidden layer: per label, L2-regularised logistic
    regression (L-BFGS; convex, deterministic) of its points in h float32
    (n, D) (yl CSR (m, n) 0/1) against the other points of h and the
    `background` rows (S, D) of the training set, each of which stands for
    `weight` training points, so that a new label's scores are calibrated
    like those of a label trained with the model. Labels are learned
    `chunk` at a time, with at most `others` sampled rows of h that carry
    none of the chunk's labels (weighted up to stand for all)."""
    import torch

    device = torch_device(cfg)
    n, dh = h.shape
    m = yl.shape[0]
    v = np.zeros((m, dh), dtype=np.float32)
    c = np.zeros(m, dtype=np.float32)
    bg = np.zeros((0, dh), np.float32) if background is None else np.asarray(background, dtype=np.float32)
    rng = np.random.default_rng([cfg.seed, 0x5C0])
    for lo in range(0, m, chunk):
        part = yl[lo:lo + chunk].tocsc()  # (labels, points)
        pos = np.flatnonzero(np.diff(part.indptr))
        rest = np.setdiff1d(np.arange(n), pos)
        pick = np.sort(rng.choice(rest, others, replace=False)) if rest.size > others else rest
        rows = np.concatenate([pos, pick])
        wts = np.concatenate([np.ones(pos.size), np.full(pick.size, rest.size / max(pick.size, 1)),
                              np.full(bg.shape[0], weight)]).astype(np.float32)
        feats = np.concatenate([h[rows], bg])
        target = np.zeros((feats.shape[0], part.shape[0]), dtype=np.float32)
        target[:rows.size] = part[:, rows].T.toarray()
        v[lo:lo + chunk], c[lo:lo + chunk] = _logistic(torch, device, feats, target, wts)
    return v, c


def _logistic(torch, device, feats, target, wts, lam: float = 1e-4, iters: int = 100):
    """Weighted multi-output logistic regression of target float32 (N, k)
    0/1 on feats float32 (N, D) with row weights wts (N,): (W float32 (k, D),
    b (k,)) minimising the weighted mean binary cross-entropy + lam / 2
    |W|^2 (lam measured on a planted set: 1e-3 cost 7 points of the new
    labels' recall@5, 1e-2 over 40, 1e-5 gained nothing), b starting at the
    log-odds of the weighted prior."""
    f = torch.from_numpy(feats).to(device)
    t = torch.from_numpy(target).to(device)
    w = torch.from_numpy(wts / wts.sum()).to(device)[:, None]
    prior = (w * t).sum(0).clamp(1e-6, 1 - 1e-6)
    W = torch.zeros(feats.shape[1], target.shape[1], device=device, requires_grad=True)
    b = torch.logit(prior).detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def closure():
        opt.zero_grad()
        loss = (w * bce(f @ W + b, t, reduction="none")).sum() + 0.5 * lam * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach().T.cpu().numpy().astype(np.float32), b.detach().cpu().numpy().astype(np.float32)
