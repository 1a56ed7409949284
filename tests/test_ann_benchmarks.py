"""The ann-benchmarks adapter, driven the way that project's harness drives
an algorithm, and its config file."""

from pathlib import Path

import numpy as np
import pytest
import yaml

import irli
from irli.integrations.ann_benchmarks import IrliANN
from irli.kernels.exact import exact_knn

CONFIG = Path(__file__).resolve().parent.parent / "benchmarks" / "ann-benchmarks" / "config.yml"


@pytest.mark.parametrize("metric,preset", [("angular", "fast"), ("euclidean", "ivf")])
def test_harness_protocol(data, metric, preset):
    x, q = data
    algo = IrliANN(metric, preset, 32)
    algo.fit(x)
    algo.set_query_arguments(32)  # every bucket: exact
    assert "probes=32" in str(algo) and preset in str(algo)
    truth = exact_knn(x, q, 10, "cosine" if metric == "angular" else "l2")[0]
    single = np.array([algo.query(v, 10) for v in q])
    algo.batch_query(q, 10)
    batch = algo.get_batch_results()
    assert len(batch) == len(q)
    np.testing.assert_array_equal(np.stack(batch), single)
    assert all(len(np.unique(r)) == len(r) == 10 for r in batch)  # unique ids
    hits = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(batch, truth)])
    assert hits >= 0.97
    mem = algo.get_memory_usage()
    assert isinstance(mem, float) and mem > 1000  # kB of a live Python process
    assert algo.get_additional()["probes"] == 32
    extra = 2 if preset == "fast" else 1  # second argument: refine for pq4, min_votes otherwise
    algo.set_query_arguments(1, extra)
    assert (f"refine={extra}" if preset == "fast" else f"min_votes={extra}") in str(algo)
    assert len(algo.query(q[0], 5)) == 5
    # approximate settings too: one query per call answers as the batch does
    algo.set_query_arguments(3, extra)
    single = [algo.query(v, 10) for v in q]
    algo.batch_query(q, 10)
    for a, b in zip(single, algo.get_batch_results()):
        np.testing.assert_array_equal(a, b)
    algo.done()


def test_unsupported_distance():
    with pytest.raises(irli.InvalidInputError, match="jaccard"):
        IrliANN("jaccard")


def test_config_lists_valid_arguments():
    conf = yaml.safe_load(CONFIG.read_text())
    entries = conf["float"]["any"]
    assert {e["name"] for e in entries} >= {"irli-fast", "irli-ivf", "irli-learned"}
    for e in entries:
        assert e["constructor"] == "IrliANN" and e["base_args"] == ["@metric"]
        for group in e["run_groups"].values():
            presets, buckets = group["args"]
            assert set(presets) <= set(irli.PRESETS)
            assert all(isinstance(b, int) and b >= 2 for b in buckets)
            probes = group["query_args"][0]
            assert probes == sorted(probes) and all(p >= 1 for p in probes)
            for preset in presets:  # every combination builds a valid config
                for b in buckets:
                    irli.IndexConfig.from_preset(preset, n_buckets=b)
