"""The model: partitions (hash, k-means, power-of-K placement, spill,
inverted lists), routers (centroid, linear, MLP) and a label index's model
(its label -> bucket assignments and sparse-input routers)."""
