"""Arweave deep-hash (SHA-384): the structure that ANS-104 items and v2 transactions sign.

    deep_hash(blob) = sha384(sha384("blob" + len) + sha384(blob))
    deep_hash(list) = fold(acc = sha384("list" + len), item -> sha384(acc + deep_hash(item)))

A list's hash is a left fold, so a list that starts with the same elements as another shares its running
value: ``Prefix`` keeps it, and ``Prefix.extend`` finishes the list from there (every data item of one signer
starts with the same four elements).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from hashlib import sha384

DeepHashable = bytes | Sequence["DeepHashable"]


@lru_cache(maxsize=4096)
def _tag_hash(kind: bytes, length: int) -> bytes:
    """sha384("blob<n>") or sha384("list<n>"): the same for every blob or list of one length."""
    return sha384(kind + str(length).encode("ascii")).digest()


def blob_hash(blob: bytes) -> bytes:
    """The deep hash of one blob."""
    return sha384(_tag_hash(b"blob", len(blob)) + sha384(blob).digest()).digest()


def deep_hash(value: DeepHashable) -> bytes:
    """Return the 48-byte deep hash of a blob or a (nested) list of blobs."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return blob_hash(bytes(value))
    items = list(value)
    return Prefix(len(items)).extend(items).digest


class Prefix:
    """The running deep hash of a list of `length` elements after its first few."""

    __slots__ = ("digest", "length")

    def __init__(self, length: int, digest: bytes | None = None) -> None:
        self.length = length
        self.digest = _tag_hash(b"list", length) if digest is None else digest

    def extend(self, items: Sequence[DeepHashable]) -> Prefix:
        """The running hash after `items` more elements."""
        acc = self.digest
        for item in items:
            acc = sha384(acc + deep_hash(item)).digest()
        return Prefix(self.length, acc)
