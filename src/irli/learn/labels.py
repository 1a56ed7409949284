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
        return LabelModel(w1=a["w1"], b1=a["b1"], w2=a["w2"], b2=a["b2"], assign=assign.copy(), loss=loss,
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
    if best[1] is not None:
        history.append({"best_epoch": best[2], "val_p1": best[0]})
        return best[1], history
    return net.export(assign, cfg.loss), history


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
        rep = rep.tocsr()
        rep.sum_duplicates()
        choices = np.repeat(assign[r][:, None], width, axis=1).astype(np.int32)
        row = np.repeat(np.arange(n_labels), np.diff(rep.indptr))
        order = np.lexsort((-rep.data, row))  # by row, then by value, best first
        rank = np.arange(order.size) - rep.indptr[row[order]]
        keep = rank < width
        choices[row[order][keep], rank[keep]] = rep.indices[order][keep]
        out[r] = power_of_k(choices, cfg.k_choices, n_buckets, cfg.max_load, seed + r)
    return out
