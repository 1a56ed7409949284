"""On disk: the index directory format (`storage`: atomic writes, pinned
reads, checksums, the writer lock) and vector files and datasets
(`datasets`)."""
