"""`irli build`'s configuration options: every field of IndexConfig and of
LabelConfig as an option of its own (`--n-buckets 1024`, `--repartition` /
`--no-repartition`, `--loss sigmoid`), plus `--set KEY=VALUE`.

The options are generated from the config dataclasses (names, types and
choices), so a new field becomes an option without a change here; only its
help line lives here (tests/test_cli.py checks that every field has one).
They are the keys of a TypedDict that need not be total: cyclopts fills in
only those the command line gives, so the preset (or LabelConfig) keeps every
other value; `overrides` adds the --set pairs.
A field that may be None takes `none` (`--n-buckets none`: chosen from the
collection). `metric` stays the command's own `--metric`.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Any, Literal, TypedDict

from cyclopts import Group, Parameter

from ..config import (
    DEVICES,
    LOSSES,
    ROUTERS,
    SCANS,
    SCHEDULES,
    STARTS,
    IndexConfig,
    LabelConfig,
    ModelConfig,
)
from ..errors import InvalidInputError

SHARED = Group("Model and training (vector and label indexes)", sort_key=10,
               help="Override the preset's value (a label index: LabelConfig's); `irli info` shows an index's "
                    "values. The same as --set KEY=VALUE.")
VECTOR = Group("Vector index (IndexConfig)", sort_key=11)
LABEL = Group("Label index (LabelConfig, --task labels)", sort_key=12)

HELP: dict[str, str] = {
    # ModelConfig: both kinds of index
    "n_reps": "repetitions R: independent partitions, each with its own router (1 to 64)",
    "n_buckets": "buckets B per repetition (none: from the collection, about sqrt(n) items or 8 labels per bucket)",
    "hidden": "hidden units of an mlp router",
    "loss": "router training loss: softmax over the buckets, or sigmoid per bucket",
    "epochs": "epochs of router training (0: none)",
    "batch_size": "training batch size",
    "lr": "Adam's learning rate",
    "val_fraction": "share of the training queries held out to pick the best epoch",
    "repartition": "re-partition while training: items move to the least loaded of their top --k-choices buckets",
    "repartition_every": "epochs between two re-partitionings",
    "k_choices": "buckets an item may move to when re-partitioning",
    "max_load": "no bucket grows past this multiple of the mean when re-partitioning (none: no cap)",
    "probes": "buckets a search opens per repetition unless it says (a label index: none, about sqrt(B) / 3)",
    "min_votes": "a search keeps candidates seen in at least this many repetitions unless it says",
    "seed": "seed of every random choice",
    "device": "where torch trains",
    # IndexConfig only
    "start": "how each partition starts: k-means, or a seeded 2-universal hash",
    "router": "bucket scorer: similarity to the centroids, linear (W q), or mlp (d -> hidden -> B)",
    "router_bias": "a bias in the linear router (unset: only for l2)",
    "target_k": "training targets: the buckets of each training query's target-k exact neighbours "
                "(unless --train-targets)",
    "n_train": "training queries (items sampled as queries unless --train-queries)",
    "patience": "stop training after this many epochs without a better validation loss",
    "min_moved": "stop re-partitioning once less than this share of the items moves",
    "kmeans_iters": "k-means iterations",
    "kmeans_sample": "k-means learns from at most this many sampled items per bucket",
    "spill": "more buckets each item also sits in per repetition (SOAR spilling, 0 to 3)",
    "spill_lambda": "SOAR's weight: how orthogonal a spilled item's residuals must be",
    "scan": "score the gathered items on their float32 vectors (exact), or fast-scan 4-bit PQ codes (pq4)",
    "refine": "pq4: re-score the best REFINE x k items exactly",
    "pq_m": "pq4: sub-quantisers (none: d up to 64 dimensions, then d / 2, from 256 d / 4)",
    "pq_residual": "pq4: encode x minus its bucket's centre, or x itself (none: measured at fit)",
    "pq_anisotropic": "pq4 under ip / cosine: ScaNN's score-aware threshold T (0 or none: plain PQ)",
    "top_c": "exact scan: score only the C candidates of highest summed router probability",
    "learned_probes": "pq4, one repetition: learn a per-query probe budget whose mean is --probes (on in fast)",
    "schedule": "auto: with --train-queries, epochs, batch size and lr follow the log's size; fixed: as set",
    # LabelConfig only
    "dropout": "dropout on the routers' hidden layer while training",
    "scorer": "learn a per-label scorer on the routers' hidden layer",
    "full_scorer_labels": "the scorer learns on all labels up to this many, else on sampled negatives",
    "sparse_above": "weights above this many parameters learn with sparse (lazy) Adam",
    "blend": "final score: (1 - BLEND) x scorer + BLEND x mean bucket probability",
    "normalize": "scale each feature row to unit L2 norm",
}

CHOICES = {"loss": LOSSES, "device": DEVICES, "start": STARTS, "router": ROUTERS, "scan": SCANS,
           "schedule": SCHEDULES}
OWN = {"metric"}  # fields `irli build` has its own option for


def _fields() -> dict[str, Any]:
    """Field name -> type over ModelConfig, IndexConfig and LabelConfig
    (a field that is int in one and int | None in another takes None)."""
    out: dict[str, Any] = {}
    for cls in (ModelConfig, IndexConfig, LabelConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in OWN:
                continue
            hint = hints[f.name]
            if f.name in CHOICES:
                hint = Literal[CHOICES[f.name]]
            old = out.get(f.name)
            out[f.name] = hint if old is None or old == hint else old | None
    return out


def _group(name: str) -> Group:
    if name in {f.name for f in dataclasses.fields(ModelConfig)}:
        return SHARED
    return VECTOR if name in {f.name for f in dataclasses.fields(IndexConfig)} else LABEL


def _option(name: str, hint: Any) -> Any:
    """`hint` annotated as an option, with its help and group (a flag
    comes with its --no- form)."""
    return Annotated[hint, Parameter(help=HELP.get(name, f"IndexConfig / LabelConfig field {name}"),
                                     group=_group(name))]


# A TypedDict that need not be total: cyclopts fills in only the options
# given, so the preset keeps every other value (no sentinel defaults)
ConfigOptions = TypedDict("ConfigOptions", {n: _option(n, h) for n, h in _fields().items()},  # type: ignore[misc]
                          total=False)

# the parameter of `irli build` that holds them: flattened into top-level options
Options = Annotated[ConfigOptions, Parameter(name="*")]


def overrides(options: Any, pairs: typing.Sequence[str], labels: bool = False) -> dict[str, Any]:
    """The configuration the command line gives: the options set, then the
    --set KEY=VALUE pairs, read as fields of IndexConfig (LabelConfig with
    `labels`). A field given both ways is an error."""
    given = dict(options)
    for key, value in (LabelConfig if labels else IndexConfig).parse_overrides(pairs or ()).items():
        if key in given:
            raise InvalidInputError(f"{key} is given twice: as --{key.replace('_', '-')} and with --set")
        given[key] = value
    return given
