"""The wire format of `irli serve`: declared request bodies (msgspec), their
decoding by content type, and answers encoded in the request's format.

Bodies (Content-Type):
  application/json (or any type not below) or application/msgpack: an object with
    the fields of SearchBody, AddBody or RemoveBody. `vectors` is a list of
    numbers (one vector), a list of lists (n vectors), or bytes (msgpack;
    base64 text in JSON) of little-endian float32 rows, with `dim` (checked
    against the index's dimension when given).
  application/x-npy (/search and /add): one .npy array, float32 (n, d) or
    (d,); the other fields come from the query string (?k=10&probes=18).
Answers to /search (application/json unless the request was binary):
  JSON: {"ids": [[int] * k] * n, "scores": [[float or null] * k] * n,
         "candidates": [int] * n}   (-1 / null where padded)
  msgpack: {"shape": [n, k], "ids": bytes int64, "scores": bytes float32,
            "candidates": bytes int64}   (little-endian, row-major)
  x-npy: three .npy arrays one after another: ids int64 (n, k), scores
         float32 (n, k), candidates int64 (n,)
Errors are always JSON: {"error": "<one line>"}.
"""

from __future__ import annotations

import io
import re
from typing import Any, Union
from urllib.parse import parse_qsl

import msgspec
import numpy as np

JSON = "application/json"
MSGPACK = "application/msgpack"
NPY = "application/x-npy"
_TYPES = {MSGPACK: MSGPACK, "application/x-msgpack": MSGPACK, NPY: NPY}

Vectors = Union[bytes, list[Union[float, list[float]]]]


class RequestError(Exception):
    """A request the service refuses: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, " ".join(str(message).split())


class SearchBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /search: queries, k, probes and refine (None: the index's
    defaults), allow: ids (one filter for all queries), booleans (a mask
    by id) or lists of ids (one filter per query)."""

    vectors: Vectors
    dim: Union[int, None] = None
    k: int = 10
    probes: Union[int, None] = None
    refine: Union[int, None] = None
    allow: Union[list[Union[bool, int, list[int]]], None] = None


class AddBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /add: item vectors, their ids (None: the next free ones) and
    whether an id already present is replaced."""

    vectors: Vectors
    dim: Union[int, None] = None
    ids: Union[list[int], None] = None
    replace: bool = False


class RemoveBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /remove: ids to remove."""

    ids: list[int]


_DECODERS = {(fmt, t): (msgspec.json.Decoder(t) if fmt == JSON else msgspec.msgpack.Decoder(t))
             for fmt in (JSON, MSGPACK) for t in (SearchBody, AddBody, RemoveBody)}
_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "array": "a list",
          "object": "an object", "str": "text", "null": "null", "bytes": "bytes",
          "float | array": "a number or a list", "bytes | array": "a list or bytes",
          "bool | int | array": "an id, true / false, or a list of ids"}
_MSG = re.compile(r"Expected `([^`]*)`, got `([^`]*)`(?: - at `\$\.?(.*)`)?")


def body_format(content_type: str) -> str:
    """MSGPACK or NPY for their Content-Type header values; JSON for any
    other (curl -d and urllib send form-urlencoded by default)."""
    return _TYPES.get(content_type.split(";", 1)[0].strip().lower(), JSON)


def _explain(e: msgspec.ValidationError) -> str:
    text = str(e)
    m = _MSG.fullmatch(text)
    if m:
        want, got, where = m.groups()
        want = _WORDS.get(want, want)
        return f"{where or 'the body'} must be {want}, got {_WORDS.get(got, got) if got == 'null' else got}"
    text = text.replace("Object missing required field", "missing field").replace(
        "Object contains unknown field", "unknown field")
    return text.replace(" - at `$`", "").replace("`", "'")


def decode(body: bytes, fmt: str, kind: type, query_string: bytes = b"") -> Any:
    """The request body as a `kind` (SearchBody, AddBody, RemoveBody);
    RequestError 400 when it does not fit."""
    if fmt == NPY:
        return _from_npy(body, kind, query_string)
    try:
        return _DECODERS[fmt, kind].decode(body)
    except msgspec.ValidationError as e:
        raise RequestError(400, _explain(e)) from None
    except msgspec.DecodeError as e:
        raise RequestError(400, f"malformed {'JSON' if fmt == JSON else 'msgpack'}: {e}") from None
    except RecursionError:
        raise RequestError(400, "the body is nested too deeply") from None


def _from_npy(body: bytes, kind: type, query_string: bytes) -> Any:
    if kind is RemoveBody:
        raise RequestError(415, f"/remove takes {JSON} or {MSGPACK}")
    try:
        a = np.load(io.BytesIO(body), allow_pickle=False)
    except Exception as e:  # numpy raises ValueError, OSError, EOFError, ... for a bad file
        raise RequestError(400, f"the body is not a .npy array: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
        raise RequestError(400, f"the .npy array must hold floats, got {getattr(a, 'dtype', type(a))}")
    fields: dict[str, Any] = {}
    try:
        for key, value in parse_qsl(query_string.decode("latin-1"), strict_parsing=True):
            fields[key] = value.lower() == "true" if key == "replace" else int(value)
    except ValueError:
        raise RequestError(400, f"query string {query_string[:100]!r}: expected key=integer pairs") from None
    allowed = ("k", "probes", "refine") if kind is SearchBody else ("replace",)
    for key in fields:
        if key not in allowed:
            raise RequestError(400, f"unknown query parameter {key!r} (with {NPY}: {', '.join(allowed)})")
    return kind(vectors=a, **fields)


def as_vectors(v: Any, dim: int, given: int | None = None, name: str = "vectors",
               finite: bool = True) -> np.ndarray:
    """Decoded vectors as float32 (n, d), checked: dimension (`given`: the
    request's own `dim` field), finite (unless `finite` is False: searches
    leave that to the search kernels, which check every query anyway)."""
    if isinstance(v, np.ndarray):
        a = v.reshape(1, -1) if v.ndim == 1 else v
        if a.ndim != 2:
            raise RequestError(400, f"{name} must be one vector or rows of vectors, got shape {v.shape}")
        a = a.astype(np.float32, copy=False)
    elif isinstance(v, (bytes, bytearray)):
        if given is not None and given != dim:
            raise RequestError(400, f"{name} have dimension {given}, the index has {dim}")
        if len(v) % (4 * dim):
            raise RequestError(400, f"{name}: {len(v)} bytes are not whole float32 rows of dimension {dim}")
        a = np.frombuffer(v, dtype="<f4").reshape(-1, dim).astype(np.float32, copy=False)
    else:
        if not v:
            raise RequestError(400, f"{name} is empty")
        try:
            with np.errstate(over="ignore"):  # beyond float32: inf, refused below
                a = np.array(v, dtype=np.float32)
        except (ValueError, TypeError):
            raise RequestError(400, f"{name} must be a list of numbers or a list of lists of equal length") \
                from None
        if a.ndim == 1:
            a = a.reshape(1, -1)
    if a.shape[0] == 0:
        raise RequestError(400, f"{name} is empty")
    if a.shape[1] != dim:
        raise RequestError(400, f"{name} have dimension {a.shape[1]}, the index has {dim}")
    if finite:
        rows = np.isfinite(a).all(axis=1)
        if not rows.all():
            raise RequestError(400, f"{name} row {int(np.argmin(rows))} holds NaN or inf (or a number too large "
                               "for float32)")
    return a


def as_allow(allow: list | None, n: int):
    """A decoded `allow` as Index.search takes it: int64 ids, a bool mask
    by id, or a list of n int64 id arrays (one per query); None stays."""
    if allow is None:
        return None
    kinds = {type(a) for a in allow}
    try:
        if not allow or kinds == {int}:
            return np.array(allow, dtype=np.int64)
        if kinds == {bool}:
            return np.array(allow, dtype=bool)
        if kinds == {list}:
            if len(allow) != n:
                raise RequestError(400, f"allow holds {len(allow)} lists for {n} queries; give one per query")
            return [np.array(a, dtype=np.int64) for a in allow]
    except OverflowError:
        raise RequestError(400, "allow: ids must fit in int64") from None
    raise RequestError(400, "allow must be ids, booleans (a mask by id) or one list of ids per query, "
                       "not a mix")


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def encode_result(ids: np.ndarray, scores: np.ndarray, candidates: np.ndarray, fmt: str) -> bytes:
    """A search answer (ids int64 (n, k), scores float32 (n, k), candidates
    int64 (n,)) in the format `fmt`."""
    if fmt == JSON:
        finite = np.isfinite(scores)
        if finite.all():
            s = scores.tolist()
        else:
            s = scores.astype(object)
            s[~finite] = None
            s = s.tolist()
        return msgspec.json.encode({"ids": ids.tolist(), "scores": s, "candidates": candidates.tolist()})
    if fmt == MSGPACK:
        return msgspec.msgpack.encode({"shape": list(ids.shape), "ids": ids.astype("<i8").tobytes(),
                                       "scores": scores.astype("<f4").tobytes(),
                                       "candidates": candidates.astype("<i8").tobytes()})
    return _npy(ids) + _npy(scores) + _npy(candidates)


def encode(doc: dict, fmt: str = JSON) -> bytes:
    """Any other answer (a dict of plain values) as JSON or msgpack (x-npy
    requests get JSON)."""
    return msgspec.msgpack.encode(doc) if fmt == MSGPACK else msgspec.json.encode(doc)


def content_type(fmt: str, search: bool) -> str:
    """The Content-Type of an answer in `fmt` (only /search answers x-npy)."""
    if fmt == NPY and not search:
        return JSON
    return fmt
