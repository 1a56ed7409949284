"""The model: partitions (hash, k-means, power-of-K placement, spill,
inverted lists) and routers (centroid, linear, MLP; compiled routing)."""
