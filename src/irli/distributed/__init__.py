"""Scale-out on Ray: the executor (`executor`), sharded directories and
their layout (`layout`), and `ShardedIndex` (`sharded`)."""

from .executor import DistributedError, RayExecutor

__all__ = ["DistributedError", "RayExecutor"]
