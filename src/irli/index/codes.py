"""Compressed codes of the items, bucket by bucket: 4-bit product quantisation
in buckets that irli chooses, laid out for `irli.kernels.pq_scan`.

Each repetition has a codebook of M sub-quantisers (`pq_m`, d / M dimensions
each) with 16 centroids, trained with FAISS. An item's code is M nibbles,
ceil(M / 2) bytes. Codes are either *residual* (x - c_b for the centre c_b of
the bucket the entry sits in, so a spilled item has one code per copy) or
*direct* (x itself, one code per item). Which one is better depends on the
data: on irli's synthetic data residuals win, on real MiniLM sentence
embeddings direct codes do. `residual=None` chooses at fit by measuring both
on a sample (see `choose_residual`).

For inner product and cosine, codes can be *anisotropic* (ScaNN's score-aware
quantisation, Guo et al., ICML 2020): the codebooks and each item's code
minimise h_par |e_par|^2 + h_perp |e_perp|^2, where e = x - x~ splits into the
part along the item's direction and the rest, with h_par / h_perp = eta =
(d - 1) T^2 / (1 - T^2) for the threshold T (`pq_anisotropic`). The error
along x is what moves a high inner product, so it is weighted up. Plain PQ
trains the starting codebooks; alternating re-encoding (coordinate descent
over the sub-quantisers) and codebook updates (a small least-squares solve
per centroid) do the rest. Where eta <= 1 (T small for the dimension) the
weighting would not favour inner products, and plain PQ codes are used.

The scan layout packs every bucket into blocks of 32 entries: 16 M bytes of
codes (the interleaving of `irli.kernels.simd`) followed by the 32 item positions as
int32 (-1 pads the last block of a bucket), so a block's positions arrive with
its codes. It is derived from the per-item codes and the inverted lists, and
rebuilt (O(entries x M)) after adds, removes and compaction.
"""

from __future__ import annotations

import faiss
import numba
import numpy as np

from ..errors import IndexFormatError, InvalidInputError
from ..io.storage import release
from ..kernels.pq_encode import ah_encode, ah_update
from ..kernels.pq_scan import PQIndexArgs, table_books


def default_pq_m(d: int) -> int:
    """One 4-bit sub-quantiser per dimension up to d = 64, then one per two
    dimensions (d / 2), and from d = 256 one per four (d / 4): at 384 and
    768 dimensions d / 4 is faster than d / 2 at equal recall in every
    search mode (BENCHMARKS.md). Where 4 (or 2) does not divide d, the
    next finer split that does (d itself when d is odd)."""
    if d >= 256 and d % 4 == 0:
        return d // 4
    return d if d <= 64 or d % 2 else d // 2


def _train_pq(x: np.ndarray, m: int, seed: int) -> np.ndarray:
    """Codebook float32 (m, 16, d / m) trained on the rows of x (float32 (n, d))."""
    d = x.shape[1]
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[0] < 16:  # fewer rows than codes: repeat them (the codebook then holds every row)
        x = np.tile(x, (-(-16 // x.shape[0]), 1))
    pq = faiss.ProductQuantizer(d, m, 4)
    pq.cp.seed = seed
    pq.cp.min_points_per_centroid = 1  # small data: no warning on stderr (the library never prints)
    pq.train(x)
    return faiss.vector_to_array(pq.centroids).reshape(m, 16, d // m).astype(np.float32)


def anisotropic_eta(threshold: float, d: int) -> float:
    """h_par / h_perp for ScaNN's threshold T in dimension d: (d - 1) T^2 / (1 - T^2)."""
    return (d - 1) * threshold * threshold / (1.0 - threshold * threshold)


def _directions(x: np.ndarray) -> np.ndarray:
    """Rows of x scaled to unit length (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return np.ascontiguousarray(x / n)


def _pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """uint8 (n, M) codes -> uint8 (n, ceil(M / 2)), code 2p in the low nibble."""
    n, m = codes.shape
    out = np.zeros((n, (m + 1) // 2), dtype=np.uint8)
    out[:, :] = codes[:, 0::2]
    out[:, : m // 2] |= codes[:, 1::2] << 4
    return out


def _train_book(target: np.ndarray, xdir: np.ndarray | None, m: int, seed: int, eta: float,
                rounds: int = 8) -> np.ndarray:
    """A codebook for `target` (float32 (n, d)): plain PQ, then, with eta >
    1, `rounds` of anisotropic re-encoding and updates for items of
    directions `xdir`."""
    book = _train_pq(target, m, seed)
    if eta > 1.0:
        codes = np.empty((target.shape[0], m), dtype=np.uint8)
        t = np.ascontiguousarray(target, dtype=np.float32)
        for _ in range(rounds):
            ah_encode(t, xdir, book, np.float32(eta), 4, codes)
            ah_update(t, xdir, codes, book, eta)
    return book


def _quantizer(book: np.ndarray) -> faiss.ProductQuantizer:
    m, _, dsub = book.shape
    pq = faiss.ProductQuantizer(m * dsub, m, 4)
    faiss.copy_array_to_vector(np.ascontiguousarray(book, dtype=np.float32).ravel(), pq.centroids)
    return pq


def choose_residual(x: np.ndarray, home: np.ndarray, centroids: np.ndarray, metric: str, m: int, seed: int,
                    queries: np.ndarray | None = None, refine: int = 1, k: int = 10,
                    sample: int = 20_000, n_queries: int = 200, eta: float = 0.0,
                    rounds: int = 2) -> tuple[bool, dict, np.ndarray]:
    """Whether residual codes rank better than direct codes on this data.

    On a seeded sample of `sample` items (x float32 (n, d), home int (n,) their
    buckets, centroids float32 (B, d)), both kinds of codebook are trained and
    each is scored by what a search needs of it: the share of a query's exact
    top-k (among the sample) found in its top refine x k by approximate score
    (refine 1 by default: with a larger budget both kinds find nearly all of
    a 20,000-item sample's neighbours and the measure cannot tell them apart).
    Queries are `queries` if given (a query log), else `n_queries` other items.
    Anisotropic codebooks get `rounds` of training (2: 4 or 8 gave the same
    recall and QPS on GloVe and MiniLM-384 at 0.7 s and 5 s more build,
    BENCHMARKS.md issue 23).
    Returns (residual wins, {"residual": recall, "direct": recall}, the
    winner's codebook float32 (m, 16, d / m), trained on the sample: `build`
    keeps it for repetition 0 rather than train a third one).
    """
    n = x.shape[0]
    rng = np.random.default_rng([seed, 0x5E5])
    perm = rng.permutation(n)
    rows = np.sort(perm[: min(n, sample)])
    if queries is None:
        rest = perm[min(n, sample):]
        pick = rest[: n_queries] if rest.size >= 10 else perm[: n_queries]
        q = np.ascontiguousarray(x[np.sort(pick)], dtype=np.float32)
    else:
        q = np.ascontiguousarray(queries[: n_queries], dtype=np.float32)
    xs = np.ascontiguousarray(x[rows], dtype=np.float32)
    cs = np.ascontiguousarray(centroids[home[rows]], dtype=np.float32)
    l2 = metric == "l2"

    def scores(a):
        s = q @ a.T
        return 2 * s - (a * a).sum(1)[None, :] if l2 else s  # -|q - a|^2 up to a per-query constant

    kk = min(refine * k, xs.shape[0])
    exact = _top(scores(xs), k)
    out, books = {}, {}
    xdir = _directions(xs) if eta > 1.0 else None
    for name, target, shift in (("residual", xs - cs, cs), ("direct", xs, 0.0)):
        target = np.ascontiguousarray(target, dtype=np.float32)
        books[name] = book = _train_book(target, xdir, m, seed, eta, rounds=rounds)
        approx = _decode(book, _encode_book(book, target, xdir, eta)) + shift
        top = np.argpartition(-scores(approx), kk - 1, axis=1)[:, :kk]
        out[name] = float(np.mean([np.isin(a, t).mean() for a, t in zip(exact, top)]))
    residual = out["residual"] > out["direct"]
    return residual, out, books["residual" if residual else "direct"]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """The k best columns of each row of scores float32 (n, m), in no
    order (a full sort of 200 x 20,000 scores cost 0.2 s): int64 (n, k)."""
    return np.argpartition(-scores, min(k, scores.shape[1]) - 1, axis=1)[:, :k]


def _encode_book(book: np.ndarray, target: np.ndarray, xdir: np.ndarray | None, eta: float) -> np.ndarray:
    """uint8 (n, M) codes of `target` with `book`: anisotropic when eta > 1."""
    m = book.shape[0]
    codes = np.empty((target.shape[0], m), dtype=np.uint8)
    if eta > 1.0:
        ah_encode(np.ascontiguousarray(target, dtype=np.float32), xdir, book, np.float32(eta), 4, codes)
        return codes
    packed = _quantizer(book).compute_codes(np.ascontiguousarray(target, dtype=np.float32))
    codes[:, 0::2] = packed & 15
    codes[:, 1::2] = (packed >> 4)[:, : m // 2]
    return codes


def _decode(book: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Reconstructions float32 (n, d) of uint8 (n, M) codes."""
    m = book.shape[0]
    return book[np.arange(m)[None, :], codes.astype(np.int64)].reshape(codes.shape[0], -1)


@numba.njit(nogil=True, cache=True)
def _pack(codes, assign, lists, offsets, n_sub):
    """The scan layout of one repetition: (blocks uint8 (nblocks, stride),
    bstart int64 (B + 1,)). codes uint8 (C, N, nb), assign int (Ca, N),
    lists int (Ca N,), offsets int64 (B + 1,)."""
    n_buckets = offsets.shape[0] - 1
    m2 = n_sub + (n_sub & 1)
    cbytes = 16 * m2
    stride = cbytes + 128
    bstart = np.zeros(n_buckets + 1, dtype=np.int64)
    for b in range(n_buckets):
        bstart[b + 1] = bstart[b] + (offsets[b + 1] - offsets[b] + 31) // 32
    blocks = np.zeros((bstart[n_buckets], stride), dtype=np.uint8)
    pos = blocks.view(np.int32)
    pos[:, cbytes // 4:] = -1
    per_copy = codes.shape[0] > 1
    for b in range(n_buckets):
        for t in range(offsets[b], offsets[b + 1]):
            i = lists[t]
            c = 0
            if per_copy:
                for cc in range(assign.shape[0]):
                    if assign[cc, i] == b:
                        c = cc
                        break
            e = t - offsets[b]
            blk = bstart[b] + e // 32
            slot = e % 32
            lane = slot % 16
            shift = 4 * (slot // 16)
            pos[blk, cbytes // 4 + slot] = i
            for p in range(codes.shape[2]):
                v = codes[c, i, p]
                blocks[blk, 32 * p + lane] |= np.uint8((v & 15) << shift)
                blocks[blk, 32 * p + 16 + lane] |= np.uint8((v >> 4) << shift)
    return blocks, bstart


class PQ4Codes:
    """4-bit PQ codes of all R repetitions and their scan layout.

    books float32 (R, M, 16, d / M): codebooks (built with one codebook for
    every repetition, `build`); codes uint8 (R, C, N,
    ceil(M / 2)): item codes, two per byte (low nibble first), C = copies
    for residual codes, else 1; centroids float32 (R, B, d); residual bool;
    eta: the anisotropic weight (0: plain PQ). Built by `build`, grown by
    `extended`; immutable otherwise, so a search may keep using an old
    object while an update makes a new one.
    """

    def __init__(self, books: np.ndarray, codes: np.ndarray, centroids: np.ndarray, metric: str,
                 residual: bool, lists=None, assign=None, eta: float = 0.0) -> None:
        self.eta = float(eta) if metric != "l2" else 0.0
        self.books = np.ascontiguousarray(books, dtype=np.float32)
        self.codes = codes
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.metric = metric
        self.l2 = metric == "l2"
        self.residual = bool(residual)
        # the codebooks as the search kernel's tables read them: one when every repetition shares it
        shared = all(np.array_equal(self.books[0], b) for b in self.books[1:])
        self.tables = table_books(self.books[:1] if shared else self.books, self.l2)
        self._pqs: list[faiss.ProductQuantizer] | None = None
        if lists is not None:
            self._layout(lists, assign)

    @property
    def n_sub(self) -> int:
        return self.books.shape[1]

    def encoder(self) -> "PQ4Codes":
        """The codebooks alone (no item codes, no layout): what `encode`
        needs, small enough to send to a worker process."""
        return PQ4Codes(self.books, None, self.centroids, self.metric, self.residual, eta=self.eta)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_pqs"] = None  # FAISS objects do not pickle; rebuilt on first use
        return state

    def _layout(self, lists, assign) -> None:
        parts, starts, total = [], [], 0
        for r in range(self.books.shape[0]):
            blocks, bstart = _pack(self.codes[r], np.asarray(assign[r]), np.asarray(lists.lists[r]),
                                   np.asarray(lists.offsets[r]), self.n_sub)
            parts.append(blocks)
            starts.append(bstart + total)
            total += blocks.shape[0]
        stride = parts[0].shape[1]
        blocks = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self.block_pos = blocks.view(np.int32).reshape(total, stride // 4)
        self.blocks = blocks.reshape(-1)
        self.bstart = np.ascontiguousarray(np.stack(starts))
        self.bsizes = np.ascontiguousarray(np.diff(lists.offsets, axis=1))
        release(self.codes)  # scans read the blocks: a mapped codes file need not stay resident

    # -- building ------------------------------------------------------------------
    @classmethod
    def build(cls, x: np.ndarray, assign: np.ndarray, centroids: np.ndarray, metric: str,
              pq_m: int | None = None, residual: bool | None = None, seed: int = 0,
              train_size: int = 1 << 16, queries: np.ndarray | None = None, lists=None,
              anisotropic: float | None = None) -> "PQ4Codes":
        """Train codebooks on `x` (float32 (N, d)) in buckets `assign` (int (R,
        C, N)) with bucket centroids `centroids` (float32 (R, B, d)) and encode
        every item. `residual` None chooses by `choose_residual` on
        repetition 0 (with `queries`, float32 (m, d), when given).
        `anisotropic`: ScaNN's threshold T for score-aware codes (ip and
        cosine; None or 0: plain PQ). Every repetition shares repetition
        0's codebook (trained on its residuals): a query then builds its
        lookup tables once, not R times (the `irli` preset on GloVe: 2.4 µs
        of a query's 50 saved at the same recall, BENCHMARKS.md)."""
        n, d = x.shape
        m = pq_m or default_pq_m(d)
        if d % m:
            raise InvalidInputError(f"pq_m={m} must divide the dimension d={d}")
        assign = np.asarray(assign)
        reps = assign.shape[0]
        eta = anisotropic_eta(anisotropic, d) if anisotropic and metric != "l2" else 0.0
        books = np.empty((reps, m, 16, d // m), dtype=np.float32)
        if residual is None:  # both kinds are trained to choose; the winner serves every repetition
            residual, _, books[0] = choose_residual(x, assign[0, 0], centroids[0], metric, m, seed, queries=queries,
                                                    eta=eta)
        else:
            rows = np.sort(np.random.default_rng([seed, 0x9C4]).choice(n, size=min(n, train_size), replace=False))
            sample = np.asarray(x[rows], dtype=np.float32)
            xdir = _directions(sample) if eta > 1.0 else None
            if residual:
                sample = sample - centroids[0][assign[0, 0, rows]]
            books[0] = _train_book(np.ascontiguousarray(sample), xdir, m, seed, eta)
        books[1:] = books[0]
        self = cls(books, None, centroids, metric, residual, eta=eta)
        self.codes = self.encode(x, assign)
        if lists is not None:
            self._layout(lists, assign)
        return self

    def encode(self, x: np.ndarray, assign: np.ndarray, batch: int = 1 << 16) -> np.ndarray:
        """Codes of items `x` (float32 (n, d)) in buckets `assign` (int (R, C,
        n)): uint8 (R, C', n, ceil(M / 2)), C' = C for residual codes, else 1."""
        if self._pqs is None:
            self._pqs = [_quantizer(b) for b in self.books]
        assign = np.asarray(assign)
        reps, copies, n = assign.shape
        cc = copies if self.residual else 1
        out = np.empty((reps, cc, n, (self.n_sub + 1) // 2), dtype=np.uint8)
        for s in range(0, n, batch):
            xs = np.asarray(x[s : s + batch], dtype=np.float32)
            xdir = _directions(xs) if self.eta > 1.0 else None
            for r, pq in enumerate(self._pqs):
                for c in range(cc):
                    xb = xs - self.centroids[r][assign[r, c, s : s + batch]] if self.residual else xs
                    xb = np.ascontiguousarray(xb, dtype=np.float32)
                    if self.eta > 1.0:
                        out[r, c, s : s + batch] = _pack_nibbles(_encode_book(self.books[r], xb, xdir, self.eta))
                    else:
                        out[r, c, s : s + batch] = pq.compute_codes(xb)
        return out

    def extended(self, codes: np.ndarray, lists, assign) -> "PQ4Codes":
        """A new object with all item codes `codes` (uint8 (R, C', N, nb),
        e.g. these plus new ones) laid out for the inverted lists `lists` and
        assignments `assign` (int (R, C, N))."""
        out = PQ4Codes(self.books, codes, self.centroids, self.metric, self.residual, lists, assign, eta=self.eta)
        out._pqs = self._pqs
        return out

    # -- searching -----------------------------------------------------------------
    def kernel_args(self, cosine: bool, routing, x, sqnorms, keep, ids) -> PQIndexArgs:
        """The index's arguments of pq_scan.pq_block."""
        rows = routing.rows
        route_base = (self.residual and not self.l2 and rows.shape == self.centroids.shape
                      and not routing.b1.any() and np.array_equal(rows, self.centroids))
        return PQIndexArgs(cosine=cosine, l2=self.l2, residual=self.residual, route_base=bool(route_base),
                           n_sub=self.n_sub, a1=routing.first_tiles,
                           b1=routing.b1, tiles=routing.tiles, b2=routing.b2, rows=routing.rows, half=routing.half,
                           slack=routing.slack, tiles8=routing.tiles8, scale8=routing.scale8,
                           centroids=self.centroids, books=self.tables,
                           blocks=self.blocks, block_pos=self.block_pos, bstart=self.bstart, bsizes=self.bsizes,
                           x=x, sqn=sqnorms, keep=keep, ids=ids)

    # -- persistence ---------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """What a save writes: pq_books float32 (R, M, 16, dsub), pq_codes
        uint8 (R, C', N, nb)."""
        return {"pq_books": self.books, "pq_codes": self.codes}

    @classmethod
    def from_arrays(cls, books, codes, centroids, metric, residual, lists, assign, n_items,
                    eta: float = 0.0) -> "PQ4Codes":
        """Codes read from an index directory, checked against its shapes."""
        books = np.asarray(books)
        reps, b, d = centroids.shape
        if books.ndim != 4 or books.shape[0] != reps or books.shape[2] != 16 or books.dtype != np.float32 \
                or books.shape[1] * books.shape[3] != d:
            raise IndexFormatError(f"pq_books.npy has shape {books.shape} {books.dtype}; "
                                   f"expected float32 ({reps}, M, 16, {d} / M)")
        cc = assign.shape[1] if residual else 1
        want = (reps, cc, n_items, (books.shape[1] + 1) // 2)
        if codes.shape != want or codes.dtype != np.uint8:
            raise IndexFormatError(f"pq_codes.npy has shape {codes.shape} {codes.dtype}; expected uint8 {want}")
        return cls(books, codes, centroids, metric, residual, lists, assign, eta=eta)
