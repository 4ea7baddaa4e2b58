"""Arweave deep-hash (SHA-384): the structure that ANS-104 items and v2 transactions sign."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

DeepHashable = bytes | Sequence["DeepHashable"]


def _sha384(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def deep_hash(value: DeepHashable) -> bytes:
    """Return the 48-byte deep hash of a blob or a (nested) list of blobs."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        blob = bytes(value)
        tag = b"blob" + str(len(blob)).encode("ascii")
        return _sha384(_sha384(tag) + _sha384(blob))
    items = list(value)
    acc = _sha384(b"list" + str(len(items)).encode("ascii"))
    for item in items:
        acc = _sha384(acc + deep_hash(item))
    return acc
