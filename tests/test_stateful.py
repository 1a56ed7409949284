"""Random sequences of fit / add / remove / compact / save / load, checked
after every step against a model (a dict of id -> vector) and exact search:
the index loads, holds exactly the model's items, and with every bucket
opened (and, for `fast`, a re-rank budget above the items) it returns the
exact top-k over them."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import irli
from irli.kernels.exact import exact_knn

D, B, K = 8, 4, 5
POOL = np.random.default_rng(5).standard_normal((4000, D)).astype(np.float32)
QUERIES = np.random.default_rng(6).standard_normal((6, D)).astype(np.float32)


class IndexMachine(RuleBasedStateMachine):
    preset = "ivf"
    metric = "cosine"

    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="irli-stateful-"))
        self.cursor = 0

    def take(self, n):
        rows = POOL[self.cursor : self.cursor + n]
        self.cursor += n
        return rows

    @initialize(n=st.integers(min_value=B, max_value=60))
    def fit(self, n):
        x = self.take(n)
        ids = np.arange(n, dtype=np.int64) * 3
        self.index = irli.Index(self.preset, metric=self.metric, n_buckets=B).fit(x, ids=ids)
        self.model = {int(i): v for i, v in zip(ids, x)}
        self.next_id = int(ids.max()) + 1

    @rule(n=st.integers(min_value=1, max_value=25), own_ids=st.booleans())
    def add(self, n, own_ids):
        x = self.take(n)
        if own_ids:
            # spaced ids of the caller's, above every id handed out so far (a
            # fixed offset from the data cursor collided once the cursor wrapped)
            ids = np.arange(n, dtype=np.int64) * 7 + max(10_000, self.next_id)
            self.index.add(x, ids=ids)
        else:
            ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
            self.index.add(x)
        self.model.update({int(i): v for i, v in zip(ids, x)})
        self.next_id = max(self.next_id, int(ids.max()) + 1)

    @rule(share=st.floats(min_value=0.0, max_value=1.0), seed=st.integers(0, 100))
    def remove(self, share, seed):
        have = np.array(sorted(self.model), dtype=np.int64)
        if not have.size:
            return
        gone = np.random.default_rng(seed).choice(have, size=int(round(share * have.size)), replace=False)
        assert self.index.remove(gone) == gone.size
        for i in gone:
            del self.model[int(i)]

    @rule(ids=st.lists(st.integers(0, 10), min_size=1, max_size=3, unique=True))
    def replace(self, ids):
        have = sorted(self.model)
        if not have:
            return
        ids = np.array([have[i % len(have)] for i in ids], dtype=np.int64)
        ids = np.unique(ids)
        x = self.take(ids.size)
        self.index.add(x, ids=ids, replace=True)
        self.model.update({int(i): v for i, v in zip(ids, x)})

    @rule()
    def compact(self):
        self.index.compact()
        assert self.index.n_removed == 0

    @rule(mmap=st.booleans())
    def save_and_load(self, mmap):
        self.index.save(self.dir / "idx")
        self.index = irli.load(self.dir / "idx", mmap=mmap)

    @precondition(lambda self: self.cursor < POOL.shape[0] - 200)
    @rule()
    def refresh(self):
        if len(self.model) >= B:
            self.index.refresh()

    @invariant()
    def agrees_with_model_and_exact_search(self):
        if not hasattr(self, "index"):
            return
        ids = np.array(sorted(self.model), dtype=np.int64)
        assert len(self.index) == ids.size
        np.testing.assert_array_equal(self.index.ids, ids)
        if ids.size:
            np.testing.assert_allclose(self.index.get_vectors(ids[:5]), self._stored(ids[:5]), atol=1e-6)
        got = self.index.search(QUERIES, k=K, probes=B, refine=10_000).ids
        if ids.size:
            x = np.stack([self.model[int(i)] for i in ids])
            pos, _ = exact_knn(x, QUERIES, K, self.metric)
            want = np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)
        else:
            want = np.full((QUERIES.shape[0], K), -1)
        np.testing.assert_array_equal(got, want)

    def _stored(self, ids):
        x = np.stack([self.model[int(i)] for i in ids])
        return x / np.linalg.norm(x, axis=1, keepdims=True) if self.metric == "cosine" else x

    def teardown(self):
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


class FastL2Machine(IndexMachine):
    preset = "fast"
    metric = "l2"


SETTINGS = settings(max_examples=12, stateful_step_count=8, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.mark.parametrize("machine", [IndexMachine, FastL2Machine], ids=["ivf-cosine", "fast-l2"])
def test_random_histories(machine):
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(machine, settings=SETTINGS)
