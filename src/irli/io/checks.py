"""What an index directory must hold: the checks that refuse a crafted or
corrupted vector or label index before any kernel reads it."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import IndexFormatError
from ..validation import first_duplicate


def check_vector_index(path, man: dict[str, Any], n_reps: int, copies: int, l2: bool, pq: bool,
                       arrays: dict[str, np.ndarray], tensors: dict[str, np.ndarray]) -> None:
    """Refuse (IndexFormatError) a vector index directory whose arrays miss,
    disagree in shape with each other or the manifest, point outside their
    range (list positions, bucket ids), hold NaN in the small float arrays
    (vectors are left to the checksums), or whose ids, live mask, next_id or
    history are malformed. Checks what a crafted directory could use to read
    out of bounds even when checksums are not verified."""
    need = ["vectors", "ids", "offsets", "lists", "assign", "centres"]
    part = man.get("part") is not None  # one part of a sharded index: only its buckets' entries are listed
    need += ["sqnorms"] if l2 else []
    need += ["pq_books", "pq_codes"] if pq else []
    _require(path, arrays, need)
    n, d = arrays["vectors"].shape
    reps, b1 = arrays["offsets"].shape
    width = arrays["lists"].shape[1] if arrays["lists"].ndim == 2 else -1
    if (arrays["ids"].shape != (n,) or arrays["lists"].shape != (reps, width)
            or width != copies * n and not (part and width <= copies * n)
            or arrays["assign"].shape != (reps, copies, n) or arrays["centres"].shape != (reps, b1 - 1, d)
            or reps != n_reps or b1 - 1 != man.get("n_buckets")):
        raise IndexFormatError(f"{path}: array shapes do not agree with each other or the manifest")
    offsets = np.asarray(arrays["offsets"])
    ends = offsets[:, -1]
    if ((offsets[:, 0] != 0).any() or (np.diff(offsets, axis=1) < 0).any()
            or ((ends > width) if part else (ends != width)).any()):
        raise IndexFormatError(f"{path}: inverted-list offsets are inconsistent")
    for name, hi in (("lists", n), ("assign", b1 - 1)):
        a = np.asarray(arrays[name])
        if a.size and (a.min() < 0 or a.max() >= hi):
            raise IndexFormatError(f"{path}: {name}.npy holds entries outside [0, {hi}) (corrupted)")
    small = {name: arrays[name] for name in ("centres", "sqnorms", "pq_books") if name in arrays}
    _check_finite(path, {**small, **tensors})
    live = arrays.get("live")
    if live is not None and (live.shape != (n,) or live.dtype != bool):
        raise IndexFormatError(f"{path}: live.npy must be bool ({n},), got {live.dtype} {live.shape}")
    ids = np.asarray(arrays["ids"])
    alive = ids if live is None else ids[np.asarray(live)]
    if alive.size and (alive.min() < 0 or first_duplicate(alive) is not None):
        raise IndexFormatError(f"{path}: item ids are negative or repeat (corrupted ids.npy)")
    next_id = man.get("next_id")
    if next_id is not None:
        if type(next_id) is not int or not 0 <= next_id <= 2**63:
            raise IndexFormatError(f"{path}: next_id in the manifest must be an integer >= 0, got {next_id!r}")
        if alive.size and next_id <= int(alive.max()):
            raise IndexFormatError(f"{path}: next_id {next_id} is not above the largest id {int(alive.max())}")
    history = man.get("history", {})
    if not isinstance(history, dict) or any(type(history.get(c, 0)) is not int for c in ("added", "removed")) \
            or not isinstance(history.get("drift_at_fit", {}), dict):
        raise IndexFormatError(f"{path}: history in the manifest is malformed (corrupted)")


def check_label_index(path, man: dict[str, Any], scorer: bool, n_buckets: int | None, probes: int | None,
                      loss: str, arrays: dict[str, np.ndarray]) -> None:
    """Refuse (IndexFormatError) a label index directory whose arrays miss,
    disagree in shape with each other or the manifest, hold bucket ids out
    of range or NaN."""
    _require(path, arrays, ("w1", "b1", "w2", "b2", "assign", "label_counts") + (("v", "c") if scorer else ()))
    a = arrays
    f, d = a["w1"].shape
    reps, h, b = a["w2"].shape
    n_labels = a["assign"].shape[1] if a["assign"].ndim == 2 else -1
    ok = (a["b1"].shape == (d,) and d == reps * h and a["b2"].shape == (reps, b)
          and a["assign"].shape == (reps, n_labels) and n_labels == man.get("n_labels")
          and b == man.get("n_buckets") and f == man.get("n_features")
          and a["label_counts"].shape == (n_labels,)
          and (not scorer or (a["v"].shape == (n_labels, d) and a["c"].shape == (n_labels,))))
    ok = ok and n_buckets == b and probes is not None and 1 <= probes <= b
    ok = ok and man.get("loss", loss) in ("sigmoid", "softmax") and type(man.get("n_train", 0)) is int
    assign = np.asarray(a["assign"])
    if not ok or assign.size and (assign.min() < 0 or assign.max() >= b):
        raise IndexFormatError(f"{path}: array shapes or bucket ids do not agree with each other or the manifest")
    _check_finite(path, a)


def _require(path, arrays: dict[str, np.ndarray], names) -> None:
    for name in names:
        if name not in arrays:
            raise IndexFormatError(f"{path}: missing {name}.npy")


def _check_finite(path, arrays: dict[str, np.ndarray]) -> None:
    """Refuse float arrays holding NaN or inf."""
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise IndexFormatError(f"{path}: {name} holds NaN or inf (corrupted)")
