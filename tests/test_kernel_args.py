"""The index's kernel arguments are named once: each NamedTuple's fields are
the kernel's parameters, in order, and what an index publishes is that tuple."""

import inspect

import numpy as np
from conftest import fitted

from irli.kernels.exact_scan import ExactIndexArgs, exact_block
from irli.kernels.pq_scan import PQIndexArgs, pq_block, pq_one


def _params(kernel) -> list[str]:
    return list(inspect.signature(kernel.py_func).parameters)


def _span(kernel, named) -> list[str]:
    params = _params(kernel)
    first = params.index(named._fields[0])
    return params[first : first + len(named._fields)]


def test_pq_args_are_pq_block_parameters_in_order():
    assert _span(pq_block, PQIndexArgs) == list(PQIndexArgs._fields)
    assert _params(pq_block)[-4:] == ["out_ids", "out_score", "out_ncand", "out_scanned"]
    # the one-query kernel takes the same arguments, without lo / hi, and its scratch last
    assert _params(pq_one) == [p for p in _params(pq_block) if p not in ("lo", "hi")] + ["scratch"]


def test_one_query_kernel_asks_for_its_scratch_and_answers_as_a_block(data):
    """pq_one with too little scratch searches nothing and says how much it
    needs; given that, it answers as pq_block does (ids, scores, counts)."""
    from irli.learn.budget import FIXED

    for preset in ("fast", "irli"):
        index = fitted(preset, data)
        st = index._snapshot()
        q = data[1][:5]
        head = (8, 20, 10, *FIXED)
        for i in range(q.shape[0]):
            outs = [(np.zeros((1, 10), np.int64), np.zeros((1, 10), np.float32), np.zeros(1, np.int64),
                     np.zeros(1, np.int64)) for _ in range(3)]
            need = -2 - pq_one(q[i:i + 1], *head, *st.kernel_args, *outs[0], np.empty(0, np.uint8))
            assert need > 0 and not outs[0][0].any()  # nothing searched
            assert pq_one(q[i:i + 1], *head, *st.kernel_args, *outs[1], np.empty(need, np.uint8)) == -1
            assert pq_block(q[i:i + 1], 0, 1, *head, *st.kernel_args, *outs[2]) == -1
            for a, b in zip(outs[1], outs[2]):
                np.testing.assert_array_equal(a, b)


def test_exact_args_are_exact_block_parameters_in_order():
    assert _span(exact_block, ExactIndexArgs) == list(ExactIndexArgs._fields)
    assert _params(exact_block)[-4:] == ["out_ids", "out_scores", "out_ncand", "out_scanned"]


def test_an_index_publishes_its_kernel_arguments_by_name(data):
    x = data[0]
    for preset, named in (("fast", PQIndexArgs), ("ivf", ExactIndexArgs)):
        index = fitted(preset, data)
        args = index._snapshot().kernel_args
        assert type(args) is named
        assert args.x.shape == x.shape and not args.x.flags.writeable
        assert args.ids.dtype == np.int64 and args.cosine == (index.config.metric == "cosine")


def test_label_args_are_predict_block_parameters_in_order():
    from irli.kernels.label_predict import LabelModelArgs, predict_block

    assert _span(predict_block, LabelModelArgs) == list(LabelModelArgs._fields)
    assert _params(predict_block)[-3:] == ["out_ids", "out_scores", "out_ncand"]


def _search_with(index, q, i, **changed):
    """(batched search of q on one thread, search of q[i] alone) with the
    index's published kernel arguments `changed`; the index is left as it was."""
    st = index._snapshot()
    index._state = st._replace(kernel_args=st.kernel_args._replace(**changed), plans={})
    try:
        return index.search(q, k=10, probes=4, threads=1), index.search(q[i], k=10, probes=4)
    finally:
        index._state = st


def test_residual_terms_come_from_the_routing_scores_when_the_router_is_the_centroids(data, truth):
    """A centroid router without bias scores each bucket q.c_b, the residual
    codes' bucket term: the kernel adds that score instead of a second dot
    product (route_base). The answers match computing it again; l2 (tables
    per bucket) and direct codes do not take the shortcut."""
    from irli.metrics import recall_at_k

    index = fitted("fast", data, pq_residual=True)
    st = index._snapshot()
    assert st.kernel_args.route_base and st.kernel_args.residual
    q = data[1]
    res = index.search(q, k=10, probes=4, threads=1)
    slow, one = _search_with(index, q, 0, route_base=False)
    np.testing.assert_array_equal(one.ids[0], slow.ids[0])
    assert np.mean(np.all(res.ids == slow.ids, axis=1)) >= 0.99
    assert abs(recall_at_k(res.ids, truth, 10) - recall_at_k(slow.ids, truth, 10)) <= 0.005
    assert not fitted("fast", data, pq_residual=False)._snapshot().kernel_args.route_base
    assert not fitted("fast", data, metric="l2", pq_residual=True)._snapshot().kernel_args.route_base


def test_repetitions_share_one_codebook_and_its_tables_are_built_once(data):
    """A multi-repetition index trains one codebook for all repetitions and
    hands the kernel one set of tables; the answers are those of the same
    tables given once per repetition (each built again), alone and in a
    batch, and for l2's per-bucket tables."""
    for metric in ("cosine", "l2"):
        index = fitted("irli", data, metric=metric)
        codes = index.codes_
        assert codes.books.shape[0] == index.n_reps > 1
        assert all(np.array_equal(codes.books[0], b) for b in codes.books[1:])
        st = index._snapshot()
        assert st.kernel_args.books.shape[0] == 1
        q = data[1][:50]
        once = index.search(q, k=10, probes=4, threads=1)
        every = np.ascontiguousarray(np.repeat(st.kernel_args.books, index.n_reps, axis=0))
        again, one = _search_with(index, q, 3, books=every)
        np.testing.assert_array_equal(once.ids, again.ids)
        np.testing.assert_array_equal(once.scores, again.scores)
        np.testing.assert_array_equal(one.ids[0], once.ids[3])
