"""Parameter types the commands share, and the readers of their inputs:
vectors files, id lists, extreme-classification files, probe lists.

A command's positional arguments are `str` paths (an index may sit at an
fsspec URL); its options are annotated with these types so that a bad
value is refused while parsing (exit status 2), as argparse did.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from cyclopts import Parameter

from ..errors import InvalidInputError


def positive(type_, value) -> None:
    """cyclopts validator: a positive integer (None, for unset, passes)."""
    if value is not None and (isinstance(value, bool) or value < 1):
        raise ValueError(f"must be a positive integer, got {value!r}")


# an on/off switch: --force, never --no-force; its default (off) goes without saying
Flag = Annotated[bool, Parameter(negative=(), show_default=False)]
# a positive integer option (refused at parse time otherwise)
Positive = Annotated[int, Parameter(validator=positive)]
# a positive integer option that may be left unset (None: the command's default)
MaybePositive = Annotated[int | None, Parameter(validator=positive)]
# --threads: a positive integer, or unset for every core
Threads = MaybePositive
# -q / --quiet
Quiet = Annotated[bool, Parameter(name=["--quiet", "-q"], negative=(), show_default=False)]
# -k
K = Annotated[int, Parameter(name="-k")]
# optional options named for what they take, for the help page
File = Annotated[str | None, Parameter(metavar="FILE")]
Ids = Annotated[str | None, Parameter(metavar="IDS")]
List = Annotated[str, Parameter(metavar="LIST")]
Name = Annotated[str, Parameter(metavar="NAME")]
Address = Annotated[str | None, Parameter(metavar="ADDRESS")]


def probe_list(text: str) -> list[int]:
    """'1,2,4' as [1, 2, 4]: positive integers separated by commas."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--probes expects integers separated by commas, got {text!r}") from None
    if not vals or min(vals) <= 0:
        raise ValueError(f"--probes expects positive integers, got {text!r}")
    return vals


def read(path: str, key: str):
    """The vectors of a file (.npy, .fvecs, .ivecs, .bvecs, .hdf5 dataset `key`)."""
    from ..io.datasets import read_vectors

    return read_vectors(path, key=key)


def read_xc(path: str, labels: str | None):
    """(features, labels) of an extreme-classification file, or of a
    features file and its `labels` file (the split format)."""
    from ..labels.xcformat import read_xc, read_xc_split

    return read_xc_split(path, labels) if labels else read_xc(path)


def read_ids(spec: str, what: str, mask: bool = False) -> np.ndarray:
    """Ids from a .npy file (int ids, or with `mask` a bool mask by id) or
    a comma-separated list."""
    if spec.endswith(".npy"):
        a = np.load(spec, allow_pickle=False)
        if a.dtype == bool and mask:
            return a
        if a.dtype.kind not in "iu":
            raise InvalidInputError(f"{what} {spec}: expected integer ids{' or a bool mask' if mask else ''}, "
                                    f"got {a.dtype}")
        return a.astype(np.int64).ravel()
    try:
        return np.array([int(v) for v in spec.split(",") if v.strip()], dtype=np.int64)
    except ValueError:
        raise InvalidInputError(f"{what} expects a .npy file or comma-separated integer ids, got {spec!r}") from None


KINDS = {"Index": "a vector index", "ShardedIndex": "a sharded index", "LabelIndex": "a label index"}


def refuse(index, what: dict[str, object]) -> None:
    """InvalidInputError naming the first option in `what` that is set
    (not None, not False) though it does not apply to `index`."""
    for name, value in what.items():
        if value is not None and value is not False:
            kind = KINDS.get(type(index).__name__, f"a {type(index).__name__}")
            raise InvalidInputError(f"{name} does not apply to {kind}")
