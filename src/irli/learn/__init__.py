"""Learning: the train <-> re-partition loop and its vector targets
(`loop`), what label indexes need on top (`labels`), and the learned
per-query probe budget (`budget`)."""
