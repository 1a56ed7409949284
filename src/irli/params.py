"""Search parameters, checked by one rule for every kind of index (Index,
ShardedIndex, LabelIndex, the service, the CLI).

  k          results per query, 1 .. max(K_MAX, items); rows are padded
             with -1 past the items there are
  probes     buckets opened per repetition (None: the config's); beyond
             B it is clamped to B, as FAISS clamps nprobe
  min_votes  keep candidates seen in >= this many repetitions, 1 .. R
  top_c      score only the C candidates of highest router probability
  refine     with PQ codes, re-rank the best refine x k exactly
min_votes > 1 and top_c filter exact candidates: an index that scans codes
refuses them. Every refusal is an InvalidInputError naming the parameter.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import InvalidInputError
from .validation import positive_int

# k may exceed the items stored (rows are padded with -1) up to this many
K_MAX = 4096


class SearchParams(NamedTuple):
    """Checked search parameters (see the module doc)."""

    k: int
    probes: int
    min_votes: int
    top_c: int | None
    refine: int

    @classmethod
    def resolve(cls, config, n_items: int, n_buckets: int, k=10, probes=None, min_votes=None, top_c=None,
                refine=None, codes: bool = False) -> "SearchParams":
        """`k`, `probes`, ... checked against an index of `n_items` items in
        `n_buckets` buckets with `config` (its defaults, its n_reps);
        `codes`: the index scans PQ codes."""
        if type(k) is not int or k <= 0:
            k = positive_int(k, "k")
        if k > K_MAX and k > n_items:
            raise InvalidInputError(f"k={k} out of range: the index holds {n_items} items (k may exceed them, "
                                    f"with -1 padding, up to {max(K_MAX, n_items)})")
        m = config.probes if probes is None else positive_int(probes, "probes")
        votes = config.min_votes if min_votes is None else positive_int(min_votes, "min_votes")
        if votes > config.n_reps:
            raise InvalidInputError(f"min_votes={votes} exceeds the {config.n_reps} repetitions")
        cut = getattr(config, "top_c", None) if top_c is None else positive_int(top_c, "top_c")
        if codes and (votes > 1 or cut is not None):
            raise InvalidInputError("min_votes and top_c filter exact candidates; this index scans PQ codes")
        factor = getattr(config, "refine", 1) if refine is None else positive_int(refine, "refine")
        return cls(k, min(m, n_buckets), votes, cut, factor)
