"""The vector index: `Index` (the facade) and what it is made of: PQ codes,
allow-list filters, the id map, adds and drift, and out-of-core builds."""

from .index import K_MAX, Index

__all__ = ["Index", "K_MAX"]
