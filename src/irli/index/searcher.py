"""Index's searches: checks, routing, the compiled kernel per block of
queries, and the filtered path (`allow=`)."""

from __future__ import annotations

import numpy as np

from ..kernels.exact import exact_knn
from ..kernels.exact_scan import exact_block, marks, outputs, scan, scanned, subset
from ..kernels.pq_scan import pq_block, pq_one
from ..kernels.scoring import prepare, query_error
from ..learn.budget import FIXED
from ..params import SearchParams
from ..result import SearchResult
from ..threads import resolve, run_blocks
from ..validation import as_matrix, positive_int
from .filters import Allowed, parse_allow
from .state import State

_I64, _F32, _U8 = np.dtype(np.int64), np.dtype(np.float32), np.dtype(np.uint8)


class SearchMixin:
    """Searching an Index (see Index.search)."""

    # -- searching ---------------------------------------------------------------
    def _raw_queries(self, queries) -> np.ndarray:
        """`queries` as float32 (n, d) C-contiguous, shape and dtype checked
        (values are checked by the search kernels). A float32 (d,) vector
        takes a short path: one query per request is the common case."""
        d = self.vectors_.shape[1]
        if (type(queries) is np.ndarray and queries.dtype == np.float32 and queries.ndim == 1
                and queries.shape[0] == d and queries.flags.c_contiguous):
            return queries.reshape(1, d)
        return as_matrix(queries, "queries", dim=d, allow_1d=True, finite=False)

    def prepare_queries(self, queries) -> np.ndarray:
        """Queries checked and prepared as searches prepare them (unit
        length for cosine): float32 (n, d)."""
        self.check_fitted()
        raw = self._raw_queries(queries)
        q, bad = prepare(raw, self.config.metric_type.cosine)
        if bad >= 0:
            raise query_error(raw, bad)
        return q

    def probes_for(self, probes: int | None) -> int:
        """`probes` checked (None: the config's), clamped to B."""
        p = self.config.probes if probes is None else positive_int(probes, "probes")
        return min(p, self.lists_.offsets.shape[1] - 1)

    def route(self, queries, probes: int | None = None) -> np.ndarray:
        """Buckets each repetition would open: int32 (R, n, m), best first."""
        q = self.prepare_queries(queries)
        m = self.probes_for(probes)
        probed = np.empty((self.n_reps, q.shape[0], m), dtype=np.int32)
        run_blocks(lambda lo, hi: self.routing_.block(q, lo, hi, probed, np.empty((self.n_reps, 0, 0), np.float32)),
                   q.shape[0], None)
        return probed

    def search(self, queries, k: int = 10, probes: int | None = None, min_votes: int | None = None,
               top_c: int | None = None, refine: int | None = None, allow=None,
               threads: int | None = None, batch_size: int = 4096) -> SearchResult:
        """Approximate top-`k` items for each query.

        queries: (n, d) or a single (d,) vector (answered as n = 1).
        probes: buckets opened per repetition (default `config.probes`;
        clamped to B). min_votes: keep only candidates seen in at least this
        many repetitions (default `config.min_votes`). top_c: score only the C
        candidates with the highest summed router probability (default
        `config.top_c`, None: all). Survivors are scored exactly. refine
        (scan="pq4" only): re-score the best refine x k distinct items by
        code exactly (default `config.refine`); with refine x k >= the items
        probed the search is exact over the probed buckets.
        allow: return only these ids (see `irli.index.filters` for the forms: ids
        or a boolean mask by id, for all queries or one per query). The
        filter applies before the top-k. A query whose allowed items are
        fewer than the entries a search would read (R x copies x probes x
        N / B), or whose probed buckets hold fewer than k of them, is
        answered by exact search over its allowed items.
        threads: threads for this call (None: irli.get_num_threads(), all
        cores unless set); results are the same for any value. Queries run
        in blocks of at most `batch_size`.
        Returns SearchResult(ids, scores) with `.candidates`; see its doc.
        """
        st = self.__dict__.get("_state") or self._snapshot()
        # one query per request, the common case, checked in the kernel (`is`: a native float32 array's dtype is
        # numpy's one object; any other float32 dtype takes the general path)
        if (type(queries) is np.ndarray and queries.dtype is _F32 and queries.ndim == 1
                and queries.shape[0] == st.dim and queries.flags.c_contiguous):
            q = queries[None]
            if (st.codes is not None and allow is min_votes is top_c is threads is None and batch_size == 4096
                    and type(k) is int and (probes is None or type(probes) is int)
                    and (refine is None or type(refine) is int)):  # the settings checked once (_plan)
                kernel, plan, need, spare = (st.plans.get((k, probes, refine))
                                             or self._plan(st, q, k, probes, refine))
                shape = (1, plan[2])  # dtype objects, not types: np.empty resolves those in half the time
                ids, scores, cand, read = (np.empty(shape, _I64), np.empty(shape, _F32), np.empty(1, _I64),
                                           np.empty(1, _I64))
                # a scratch buffer from the plan's spares (list pop and append are atomic): one a thread that
                # searches at the same time, where a fresh one each call cost 0.4-1.3 us in cold writes
                scratch = spare.pop() if spare else np.empty(need, _U8)
                bad = kernel(q, *plan, ids, scores, cand, read, scratch)
                spare.append(scratch)
                if bad >= 0:
                    raise query_error(q, 0)
                return SearchResult(ids, scores, cand, read)
        else:
            q = self._raw_queries(queries)
        k, m, votes, cut, refine = self._params(st, k, probes, min_votes, top_c, refine)
        if batch_size != 4096:
            batch_size = positive_int(batch_size, "batch_size")
        if threads is not None:
            resolve(threads)
        nq = q.shape[0]
        if allow is None:  # the kernels write every entry, padding included
            outs = (np.empty((nq, k), np.int64), np.empty((nq, k), np.float32), np.empty(nq, np.int64),
                    np.empty(nq, np.int64))
            if nq <= 16:  # one query per request (or a few): no pool, no closure
                bad = self._block(st, q, 0, nq, k, m, votes, cut, refine, outs)
                bad = [bad] if bad >= 0 else []
            else:
                bad = []

                def block(lo, hi):
                    row = self._block(st, q, lo, hi, k, m, votes, cut, refine, outs)
                    if row >= 0:
                        bad.append(row)

                run_blocks(block, nq, threads, max_block=batch_size)
            if bad:
                raise query_error(q, min(bad))
            return SearchResult(*outs)
        raw = q
        q, row = prepare(raw, self.config.metric_type.cosine)
        if row >= 0:
            raise query_error(raw, row)
        pos, sc, cand, read = self._filtered(st, q, k, m, votes, cut, allow, threads, batch_size)
        ids = np.where(pos >= 0, st.ids[np.maximum(pos, 0)], -1) if st.ids.size else np.full(pos.shape, -1)
        scores = self.config.metric_type.user_scores(sc)
        return SearchResult(ids, scores, cand, read)

    def search_params(self, k=10, probes=None, min_votes=None, top_c=None, refine=None) -> SearchParams:
        """The checked parameters of a search (irli.params: the one rule of
        every index, the service and the CLI)."""
        return self._params(self._snapshot(), k, probes, min_votes, top_c, refine)

    def _params(self, st: "State", k, probes, min_votes, top_c, refine) -> SearchParams:
        return SearchParams.resolve(self.config, st.vectors.shape[0], st.n_buckets, k, probes, min_votes, top_c,
                                    refine, codes=st.codes is not None)

    def _plan(self, st: "State", q, k, probes, refine) -> tuple:
        """(kernel, its arguments after q and before the outputs, the bytes
        of scratch it needs, a list of spare scratch buffers) for one query
        q float32 (1, d) searched with these arguments (checked here), kept
        in st.plans. The kernel is
        pq_one's compiled entry for these argument types: what a call needs
        is then fixed (the query's shape and dtype are checked by the
        caller, the rest is the state's), and the dispatcher's typing of 36
        arguments (about 1.2 µs) is paid once."""
        k_, m, _, _, factor = self._params(st, k, probes, None, None, refine)
        plan = (*self._pq_head(st, k_, m, factor), *st.kernel_args)
        outs = (np.empty((1, k_), np.int64), np.empty((1, k_), np.float32), np.empty(1, np.int64),
                np.empty(1, np.int64))
        need = -2 - pq_one(q, *plan, *outs, np.empty(0, _U8))  # compiled (or loaded); it asks for its scratch
        args = (q, *plan, *outs, np.empty(need, _U8))
        kernel = pq_one
        try:
            kernel = pq_one.overloads[tuple(pq_one.typeof_pyval(a) for a in args)].entry_point
        except (AttributeError, KeyError, TypeError):  # a numba without these: the dispatcher
            pass
        if len(st.plans) >= 64:  # a few settings are in use at a time; a sweep of them starts afresh
            st.plans.clear()
        st.plans[(k, probes, refine)] = plan = (kernel, plan, need, [])
        return plan

    @staticmethod
    def _pq_head(st: "State", k, m, refine) -> tuple:
        """pq_block's (m, n_rerank, k, stop_w, m0, budget): the routing
        width, the distinct items re-ranked, k and the probe budget."""
        n_rerank = max(1, min(refine * k, st.n_live))
        if st.budget is None or m >= st.n_buckets:  # every bucket asked for: every bucket opened, as without one
            return (m, n_rerank, k, *FIXED)
        stop_w, first, budget, width = st.budget.args(m, st.n_buckets)
        return (width, n_rerank, k, stop_w, first, budget)

    def _block(self, st: "State", q, lo, hi, k, m, votes, cut, refine, outs) -> int:
        """Raw queries lo .. hi - 1, unfiltered, into rows lo .. hi - 1 of
        outs = (ids, scores, candidates, entries read): one compiled call.
        Returns -1, or the first row holding NaN or inf."""
        if st.codes is not None:  # approximate scan of codes, exact re-rank of the best refine x k distinct
            return pq_block(q, lo, hi, *self._pq_head(st, k, m, refine), *st.kernel_args, *outs)
        # exact scan of the lists; removed items are skipped
        dedup = st.routing.n_reps > 1 or cut is not None or st.copies > 1
        _, mark, cnt, stamp0 = marks(dedup, False, st.vectors.shape[0], hi - lo)
        return exact_block(q, lo, hi, m, k, votes, cut or 0, dedup, mark, cnt, stamp0, *st.kernel_args, *outs)

    def _filtered(self, st: "State", q, k, m, votes, cut, allow, threads, batch_size):
        """Search prepared queries with allow-lists: an exact scan of the
        probed buckets that skips disallowed items, and exact search over
        the allowed items for queries with tiny allow-lists or too few
        allowed items probed. Returns (positions, scores higher-is-better,
        candidates, entries read)."""
        nq = q.shape[0]
        pos, scores, cand = outputs(nq, k)
        read = np.zeros(nq, dtype=np.int64)
        l2 = self.config.metric_type.l2
        allowed = parse_allow(allow, nq, st.idmap, st.ids, st.live)
        counts = allowed.counts(nq)
        bucketed = np.flatnonzero(counts > self._exact_below(st, m))  # tiny allow-lists: exact search over them
        for s in range(0, bucketed.shape[0], batch_size):
            rows = bucketed[s : s + batch_size]
            sub = allowed.rows(rows)
            qr = q[rows]
            probed, probs = self._route(st, qr, m, cut is not None, threads)
            keep = allow_pairs = None
            if sub.per_query:
                allow_pairs = (sub.ptr, sub.pos)
            else:
                keep = sub.keep
            p, sc, c = scan(qr, st.vectors, st.sqnorms, st.lists.offsets, st.lists.lists, probed, probs, k,
                            votes, cut or 0, l2, copies=st.copies, keep=keep, allow=allow_pairs, threads=threads)
            pos[rows], scores[rows], cand[rows], read[rows] = p, sc, c, scanned(st.lists.offsets, probed)
        found = (pos >= 0).sum(axis=1)
        exact = np.flatnonzero(found < np.minimum(k, counts))  # the small and the short
        if exact.size:
            pos[exact], scores[exact], cand[exact] = self._exact_allowed(st, q[exact], k, allowed.rows(exact),
                                                                         threads)
            read[exact] = cand[exact]
        return pos, scores, cand, read

    @staticmethod
    def _route(st: "State", q, m, with_probs: bool, threads) -> tuple[np.ndarray, np.ndarray]:
        reps = st.routing.a1.shape[0]
        probed = np.empty((reps, q.shape[0], m), dtype=np.int32)
        probs = np.empty((reps, q.shape[0], m) if with_probs else (reps, 0, 0), dtype=np.float32)
        run_blocks(lambda lo, hi: st.routing.block(q, lo, hi, probed, probs), q.shape[0], threads)
        return probed, probs

    @staticmethod
    def _exact_below(st: "State", probes: int) -> float:
        """Entries a search of the state `st` reads per query, on average:
        allow-lists up to this size are searched exactly (it costs no more)."""
        return st.copies * st.routing.n_reps * probes * st.n_live / st.n_buckets

    def _exact_allowed(self, st: "State", q, k, allowed: Allowed, threads=None):
        """Exact top-k of each query among its allowed items: (positions,
        scores higher-is-better, candidates)."""
        kind = self.config.metric_type
        if allowed.per_query:
            return subset(q, st.vectors, st.sqnorms, allowed.ptr, allowed.pos, k, kind.l2, threads=threads)[:3]
        p = allowed.positions
        nq = q.shape[0]
        if p.size == 0:
            return (np.full((nq, k), -1, np.int64), np.full((nq, k), -np.inf, np.float32),
                    np.zeros(nq, np.int64))
        idx, d = exact_knn(np.asarray(st.vectors[p]), q, k, "l2" if kind.l2 else "ip")
        pos = np.where(idx >= 0, p[np.maximum(idx, 0)], -1)
        return pos, kind.ranked_scores(d), np.full(nq, p.size, dtype=np.int64)
