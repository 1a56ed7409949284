"""Changing a fitted index without retraining: room for new items in the
stored arrays (`grow`) and seeded samples of rows. Where new items go and
how far the partition has drifted are the model's (irli.model.repetitions:
`place`, `measure`, `Drift`)."""

from __future__ import annotations

import numpy as np


def grow(buf: np.ndarray, used: int, extra: int, axis: int = 0) -> np.ndarray:
    """`buf`, or a copy with room for `used + extra` along `axis` (capacity
    grows by half, so n appends cost O(n) copies in all); the first `used`
    entries are kept. A read-only buffer (a memory map) is always copied."""
    cap = buf.shape[axis]
    if used + extra <= cap and buf.flags.writeable:
        return buf
    shape = list(buf.shape)
    shape[axis] = max(used + extra, cap + cap // 2)
    out = np.empty(shape, dtype=buf.dtype)
    keep = [slice(None)] * buf.ndim
    keep[axis] = slice(0, used)
    out[tuple(keep)] = buf[tuple(keep)]
    return out


def sample_rows(n: int, sample: int, seed: int) -> np.ndarray:
    """A seeded sorted sample of min(n, sample) row numbers out of n, int64."""
    if n <= sample:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, 0xD21F]).choice(n, size=sample, replace=False))
