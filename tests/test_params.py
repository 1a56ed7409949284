"""One rule for search parameters (irli.params), whatever answers the
search: Index, ShardedIndex, LabelIndex, and the service through them."""

import pytest
from conftest import fitted

import irli
from irli.io.datasets import synthetic_labels
from irli.params import K_MAX


@pytest.fixture(scope="module")
def kinds(data, tmp_path_factory):
    index = fitted("fast", data)
    sharded = irli.load(index.save(tmp_path_factory.mktemp("p") / "s", shards=2))
    x, y = synthetic_labels(300, 20, n_features=50, signature=4, seed=3)
    labels = irli.LabelIndex(n_reps=2, hidden=8, epochs=1).fit(x, y)
    return {"index": index, "sharded": sharded, "labels": labels}


@pytest.mark.parametrize("kind", ["index", "sharded", "labels"])
def test_every_index_checks_search_parameters_alike(kinds, kind):
    ix = kinds[kind]
    b = ix.fitted_config_.n_buckets if kind == "labels" else ix.n_buckets
    assert ix.search_params(k=3, probes=10**6).probes == b  # clamped, as FAISS clamps nprobe
    assert ix.search_params(k=K_MAX).k == K_MAX  # beyond the items: padded
    for bad, words in ((dict(k=0), "k must be a positive integer, got 0"),
                       (dict(k=1.5), "k must be a positive integer, got 1.5"),
                       (dict(k=True), "k must be a positive integer, got True"),
                       (dict(probes=0), "probes must be a positive integer, got 0"),
                       (dict(k=10**7), "k=10000000 out of range")):
        with pytest.raises(irli.InvalidInputError, match=words):
            ix.search_params(**bad)


def test_codes_refuse_exact_candidate_filters(kinds):
    with pytest.raises(irli.InvalidInputError, match="this index scans PQ codes"):
        kinds["index"].search_params(top_c=5)
    with pytest.raises(irli.InvalidInputError, match="min_votes=2 exceeds the 1 repetitions"):
        kinds["index"].search_params(min_votes=2)
