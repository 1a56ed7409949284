"""Compiled loops (numba): scoring and query preparation, top-k heaps,
gathering candidates with votes, the AVX2 primitives, the exact scan, the
4-bit PQ scan, and exact search (FAISS) for ground truth and tiny sets."""
