"""Changing a fitted index without retraining: room for new items in the
stored arrays (`grow`, `append`) and seeded samples of rows. Where new items go and
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


def append(bufs: dict[str, np.ndarray], name: str, view: np.ndarray, new: np.ndarray,
           axis: int = 0) -> np.ndarray:
    """`view` + `new` along `axis`, written past the end of the growth buffer
    bufs[name] (made or grown as needed, see `grow`), so repeated appends
    copy O(total) in all and never write what `view`, which a published
    state may hold, covers. Returns the new view; bufs[name] is updated."""
    used = view.shape[axis]
    buf = bufs.get(name)
    if buf is None or view.base is not buf:  # views made here are slices of their buffer
        buf = view
    buf = grow(buf, used, new.shape[axis], axis)
    at = [slice(None)] * view.ndim
    at[axis] = slice(used, used + new.shape[axis])
    buf[tuple(at)] = new
    bufs[name] = buf
    at[axis] = slice(0, used + new.shape[axis])
    return buf[tuple(at)]


def sample_rows(n: int, sample: int, seed: int) -> np.ndarray:
    """A seeded sorted sample of min(n, sample) row numbers out of n, int64."""
    if n <= sample:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, 0xD21F]).choice(n, size=sample, replace=False))
