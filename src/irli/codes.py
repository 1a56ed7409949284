"""Compressed codes of the items, bucket by bucket: 4-bit product quantisation
scanned with FAISS's fast-scan kernels, in buckets that irli chooses.

The codes are residuals from each bucket's centre (PQ with 16 centroids per
sub-quantiser, `pq_m` sub-quantisers, d / 2 bytes per item when pq_m = d).
A scan of the probed buckets returns each query's best `kk` item positions by
approximate score; search.refine re-scores them exactly.

The codes live in a plain FAISS IndexIVFPQ (`base`), which takes items in
buckets that irli chooses and drops removed ones; the fast-scan index that
searches is re-packed from it after every change (about 12 ms per 400,000
items).
"""

from __future__ import annotations

import faiss
import numpy as np

from .errors import IndexFormatError, InvalidInputError


def default_pq_m(d: int) -> int:
    """One 4-bit sub-quantiser per dimension up to d = 64, then per pair."""
    return d if d <= 64 or d % 2 else d // 2


class PQ4Codes:
    """4-bit PQ codes of one repetition's buckets: `base`, a FAISS IndexIVFPQ
    whose lists hold item positions as ids (None for codes saved before
    irli could update them), and `index`, its fast-scan twin for searching."""

    def __init__(self, index: faiss.IndexIVFPQFastScan, centres: np.ndarray, metric: str,
                 base: faiss.IndexIVFPQ | None = None) -> None:
        self.index = index
        self.base = base
        self.centres = np.ascontiguousarray(centres, dtype=np.float32)
        self.l2 = metric == "l2"

    @classmethod
    def from_base(cls, base: faiss.IndexIVFPQ, centres: np.ndarray, metric: str) -> "PQ4Codes":
        return cls(faiss.IndexIVFPQFastScan(base), centres, metric, base)

    @property
    def updatable(self) -> bool:
        return self.base is not None

    def add(self, x: np.ndarray, assign: np.ndarray, first: int) -> None:
        """Encode new items `x` (float32 (n, d)) at positions first .. first +
        n - 1 into the buckets `assign` (int (c, n): c copies)."""
        encode_into(self.base, x, assign, first)
        self.index = faiss.IndexIVFPQFastScan(self.base)

    def remove(self, positions: np.ndarray) -> None:
        """Drop the codes of the items at `positions` (int64)."""
        sel = faiss.IDSelectorBatch(np.ascontiguousarray(positions, dtype=np.int64))
        self.base.remove_ids(sel)
        self.index = faiss.IndexIVFPQFastScan(self.base)

    def empty_base(self) -> faiss.IndexIVFPQ:
        """A copy of `base` with this PQ and no items (to encode into)."""
        base = faiss.deserialize_index(faiss.serialize_index(self.base))
        base.reset()
        return base

    def rebuilt(self, x: np.ndarray, assign: np.ndarray) -> "PQ4Codes":
        """New codes for all items `x` (float32 (N, d)) in `assign` (int (c,
        N)) with this PQ (no retraining), e.g. after positions changed."""
        base = self.empty_base()
        encode_into(base, x, assign, 0)
        return PQ4Codes.from_base(base, self.centres, "l2" if self.l2 else "ip")

    @classmethod
    def build(cls, x: np.ndarray, assign: np.ndarray, centres: np.ndarray, metric: str,
              pq_m: int | None = None, seed: int = 0, train_size: int = 1 << 16) -> "PQ4Codes":
        """Encode `x` (float32 (N, d)) into the buckets `assign` (int (c, N):
        c copies) with residuals from `centres` (float32 (B, d))."""
        n, d = x.shape
        m = pq_m or default_pq_m(d)
        if d % m:
            raise InvalidInputError(f"pq_m={m} must divide the dimension d={d}")
        fmetric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        quantizer = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
        quantizer.add(np.ascontiguousarray(centres, dtype=np.float32))
        base = faiss.IndexIVFPQ(quantizer, d, centres.shape[0], m, 4, fmetric)
        base.by_residual = True
        base.pq.cp.seed = seed
        rows = np.random.default_rng([seed, 0x9C4]).choice(n, size=min(n, train_size), replace=False)
        base.train(np.ascontiguousarray(x[np.sort(rows)], dtype=np.float32))
        # `base` points at the local `quantizer`; serialising and reading it back
        # gives an index that owns everything it points to
        base = faiss.deserialize_index(faiss.serialize_index(base))
        encode_into(base, x, assign, 0)
        return cls.from_base(base, centres, metric)

    def search(self, q: np.ndarray, probed: np.ndarray, kk: int) -> np.ndarray:
        """Best `kk` item positions (int64 (n, kk), -1 padded; may repeat an
        item found in two buckets) by approximate score in the buckets `probed`
        (int (n, m)) for queries `q` (float32 (n, d))."""
        lists = np.ascontiguousarray(probed, dtype=np.int64)
        c = self.centres[lists]  # (n, m, d)
        if self.l2:
            diff = q[:, None, :] - c
            coarse = np.einsum("nmd,nmd->nm", diff, diff)
        else:
            coarse = np.einsum("nd,nmd->nm", q, c)
        self.index.nprobe = lists.shape[1]
        _, ids = self.index.search_preassigned(q, kk, lists, np.ascontiguousarray(coarse, dtype=np.float32))
        return ids

    def to_array(self) -> np.ndarray:
        """The FAISS index serialised (FAISS's own format, not pickle): uint8
        (bytes,); the updatable IndexIVFPQ where there is one."""
        return faiss.serialize_index(self.base if self.base is not None else self.index)

    @classmethod
    def from_array(cls, blob: np.ndarray, centres: np.ndarray, metric: str) -> "PQ4Codes":
        try:
            # deserialize_index returns the concrete type and owns the object; a
            # further downcast_index would make a non-owning proxy of it
            index = faiss.deserialize_index(np.ascontiguousarray(blob, dtype=np.uint8))
        except RuntimeError as e:
            raise IndexFormatError(f"unreadable PQ codes ({' '.join(str(e).split())[:120]})") from None
        if not isinstance(index, (faiss.IndexIVFPQ, faiss.IndexIVFPQFastScan)) or index.nlist != centres.shape[0]:
            raise IndexFormatError("PQ codes do not match the index (wrong type or bucket count)")
        if isinstance(index, faiss.IndexIVFPQFastScan):  # saved by irli <= 0.1.0 before updates
            return cls(index, centres, metric)
        return cls.from_base(index, centres, metric)


def encode_into(base: faiss.IndexIVFPQ, x: np.ndarray, assign: np.ndarray, first: int) -> None:
    """Encode `x` (float32 (n, d)) into `base` at ids first .. first + n - 1,
    once per row of `assign` (int (c, n))."""
    n = x.shape[0]
    for copy in np.asarray(assign).reshape(-1, n):
        for s in range(0, n, 1 << 18):  # FAISS reads raw pointers: keep every array alive
            xs = np.ascontiguousarray(x[s : s + (1 << 18)], dtype=np.float32)
            ids = np.arange(first + s, first + s + xs.shape[0], dtype=np.int64)
            lists = np.ascontiguousarray(copy[s : s + xs.shape[0]], dtype=np.int64)
            base.add_core(xs.shape[0], faiss.swig_ptr(xs), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
