"""The permaweb store interface: data items and L1 transactions, readable whole or by range.

Two backends implement it: the embedded store (blobs on disk, metadata in the
database; ``ao.effects.embedded_store``) and the gateway store (the Arweave HTTP
API; ``ao.permaweb.gateway``). Callers depend on this interface only.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO


class StoreError(Exception):
    """Base of every store failure."""


class NotFound(StoreError):
    """No item or transaction with that id."""


class Invalid(StoreError):
    """The item or transaction is malformed or its signature does not verify."""


class Duplicate(StoreError):
    """An item with that id is already stored."""


class ChunkVerificationError(StoreError):
    """A chunk did not match its Merkle proof against the transaction's data_root."""


class StoreUnavailable(StoreError):
    """A transient failure reaching the backend; retrying may succeed."""


@dataclass(frozen=True)
class Tag:
    """One name/value tag, as raw bytes decoded to text (UTF-8)."""

    name: str
    value: str


@dataclass(frozen=True)
class Record:
    """What a GraphQL query returns for one transaction or data item."""

    id: str
    owner: str  # base64url public key
    owner_address: str
    tags: tuple[Tag, ...]
    data_size: int
    kind: str  # "item" (ANS-104) or "tx" (L1)
    block_height: int | None = None
    target: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class Store(abc.ABC):
    """Where data items and L1 transactions live."""

    @abc.abstractmethod
    def put_item(self, raw: bytes) -> str:
        """Verify and keep a signed ANS-104 data item; return its id. Raise Invalid or Duplicate."""

    @abc.abstractmethod
    def get_item_bytes(self, item_id: str) -> bytes:
        """The serialized data item, exactly as stored."""

    @abc.abstractmethod
    def put_transaction(self, header: dict, data: BinaryIO | bytes) -> str:
        """Verify and keep a signed L1 transaction (v2 header dict) and its data; return its id."""

    @abc.abstractmethod
    def get_transaction(self, tx_id: str) -> dict:
        """The L1 transaction header as the Arweave /tx/{id} endpoint returns it (data omitted)."""

    @abc.abstractmethod
    def data_size(self, tx_or_item_id: str) -> int:
        """Size in bytes of the data of a transaction or item."""

    @abc.abstractmethod
    def read(self, tx_or_item_id: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of the data; L1 chunks are verified against data_root before use."""

    def read_into(self, tx_or_item_id: str, start: int, end: int, fd: int) -> None:
        """Write bytes [start, end) of the data, verified as `read` verifies them, to file descriptor ``fd`` at the
        same offsets. Backends that can verify chunks in parallel, straight into the file, override this."""
        body = self.read(tx_or_item_id, start, end)
        if len(body) != end - start:
            raise StoreError(f"{tx_or_item_id}: bytes {start}-{end} came back short ({len(body)} bytes)")
        os.pwrite(fd, body, start)

    @abc.abstractmethod
    def query(
        self,
        *,
        ids: Sequence[str] | None = None,
        tags: Iterable[tuple[str, Sequence[str]]] = (),
        owners: Sequence[str] | None = None,
        first: int = 100,
        after: str | None = None,
        descending: bool = False,
        recipients: Sequence[str] | None = None,
    ) -> list[Record]:
        """Records matching every filter (tag: name equals, value in list), oldest first unless descending."""

    @abc.abstractmethod
    def block_height(self) -> int:
        """The current block height the backend reports."""
