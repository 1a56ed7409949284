"""irli: learning to index.

Learned partitions and learned routing for fast nearest-neighbour search: R
repetitions, each a partition of the items into B buckets and a router that
picks the few buckets a query should open.

    import irli
    index = irli.Index("irli", metric="cosine").fit(vectors)
    ids, scores = index.search(queries, k=10, probes=16)   # all cores; threads=1 pins
    irli.set_num_threads(4)                                  # the default for every call
    index.save("my.index"); index = irli.load("my.index")

Extreme multi-label classification (the items are labels):

    labels = irli.LabelIndex().fit(X, Y)     # X: CSR features, Y: label sets
    ids, scores = labels.predict(X_test, k=5)
"""

from . import metrics
from .config import PRESETS, IndexConfig, LabelConfig
from .distributed.sharded import ShardedIndex
from .errors import (
    ConfigError,
    IndexFormatError,
    InvalidInputError,
    IrliError,
    NotFittedError,
)
from .index import Index
from .index.build import build
from .io import datasets, storage
from .labels import LabelIndex, xcformat
from .loader import load
from .progress import Progress
from .result import Searchable, SearchResult
from .serving import Client
from .threads import get_num_threads, set_num_threads
from .version import __version__

__all__ = [
    "Index", "ShardedIndex", "Client", "SearchResult",
    "Searchable", "load", "build", "LabelIndex", "LabelConfig", "IndexConfig", "PRESETS", "Progress",
    "IrliError", "ConfigError", "InvalidInputError", "NotFittedError", "IndexFormatError",
    "set_num_threads", "get_num_threads", "__version__", "metrics", "datasets", "storage", "xcformat",
]
