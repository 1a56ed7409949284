"""The vector index: `Index` (the facade) and what it is made of: PQ codes,
allow-list filters, the id map, adds and drift, and out-of-core builds."""

from ..params import K_MAX
from .index import Index

__all__ = ["Index", "K_MAX"]
