"""WeaveDrive, effects: admission queries over the log, verified chunk cache, the per-message drive.

Every 256 KiB chunk of a transaction's data is verified against its data_root (the store's
``read`` checks the Merkle proof) before a byte of it is used, then kept in a local cache
file; later reads of those chunks are plain file reads.

What a process may read is decided by the log alone, so refusals (not admitted, a bad path, a range
outside the data) are answers the process sees. What this node happens to hold is not: admitted data
missing from the local store, a chunk failing its proof against ``data_root`` (a corrupt local copy or
a lying gateway), a store or disk failure — each is a ``HostUnavailable`` fault, retried and never
recorded, because a healthy node would read the data.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db.models import Q

from ao import models
from ao.effects.stores import data_store, embedded_store
from ao.permaweb import merkle
from ao.errors import HostUnavailable
from ao.permaweb.store import ChunkVerificationError, NotFound, Store, StoreError
from ao.units import weavedrive as wd

FUEL_PER_KIB = 100  # host work charged per KiB read, a fixed rule
FUEL_PER_CALL = 10_000
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(tx_id: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(tx_id, threading.Lock())


@dataclass
class _Cached:
    """One transaction's cache file and which of its chunks this process has verified."""

    size: int
    bounds: list[tuple[int, int]]
    verified: bytearray
    fd: int


class ChunkCache:
    """Verified chunks of L1 transactions, cached in local files.

    Which chunks are verified is known only in memory: after a restart the cache file is
    reused as scratch, but every chunk is verified again from the store before use, so a
    crash can never leave an unverified byte marked good.
    """

    def __init__(self, root: Path, store: Store) -> None:
        self.root = root
        self.store = store
        self._open: dict[str, _Cached] = {}

    def _cached(self, tx_id: str) -> _Cached:
        found = self._open.get(tx_id)
        if found is None:
            size = self.store.data_size(tx_id)
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / f"{tx_id}.data", os.O_RDWR | os.O_CREAT, 0o600)
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)
            bounds = merkle.chunk_boundaries(size)
            found = _Cached(size, bounds, bytearray(len(bounds)), fd)
            self._open[tx_id] = found
        return found

    def read(self, tx_id: str, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of a transaction's data, every chunk verified before use."""
        cached = self._cached(tx_id)
        length = max(0, min(length, cached.size - offset))
        if offset < 0 or length <= 0:
            return b""
        self._ensure(tx_id, cached, offset, offset + length)
        return os.pread(cached.fd, length, offset)

    def _ensure(self, tx_id: str, cached: _Cached, start: int, end: int) -> None:
        """Verify and cache every chunk overlapping [start, end) not verified yet."""
        first = _chunk_index(cached.bounds, start)
        last = _chunk_index(cached.bounds, end - 1)
        if all(cached.verified[first:last + 1]):
            return
        # Read ahead: a read that must go to the store takes the next READAHEAD bytes along, so a sequential
        # reader (a model being loaded) costs one store call and one parallel verification per window.
        last = max(last, _chunk_index(cached.bounds, min(cached.size, start + READAHEAD) - 1))
        with _lock_for(tx_id):
            missing = [i for i in range(first, last + 1) if not cached.verified[i]]
            for lo_index, hi_index in _runs(missing):
                lo, hi = cached.bounds[lo_index][0], cached.bounds[hi_index][1]
                _reserve(cached.fd, lo, hi)
                try:
                    self.store.read_into(tx_id, lo, hi, cached.fd)  # every chunk's Merkle proof is checked
                except ChunkVerificationError as exc:
                    raise HostUnavailable(
                        f"the copy of {tx_id} this worker read fails its proof against data_root: {exc}") from exc
                for index in range(lo_index, hi_index + 1):
                    cached.verified[index] = 1

    def forget(self, tx_id: str) -> None:
        """Drop a transaction's cached copy: every chunk is fetched and verified again on its next use."""
        with _lock_for(tx_id):
            cached = self._open.pop(tx_id, None)
            if cached is not None:
                os.close(cached.fd)
            (self.root / f"{tx_id}.data").unlink(missing_ok=True)

    def local_file(self, tx_id: str) -> Path:
        """The whole data as a verified local file (for extensions that need a path, like llama.cpp)."""
        cached = self._cached(tx_id)
        for offset in range(0, cached.size, LOCAL_FILE_STEP):
            self._ensure(tx_id, cached, offset, min(cached.size, offset + LOCAL_FILE_STEP))
        return self.root / f"{tx_id}.data"


LOCAL_FILE_STEP = 64 * merkle.MAX_CHUNK_SIZE
READAHEAD = 128 * merkle.MAX_CHUNK_SIZE  # 32 MiB


def _reserve(fd: int, lo: int, hi: int) -> None:
    """Allocate the cache file's blocks for a window about to be written: the verify threads' writes then only
    copy (on ext4, 1.7x faster than letting each write allocate). Only the window: a reader of a few ranges of a
    large transaction keeps a sparse file. Where the file system cannot, the writes allocate as before."""
    if hi > lo:
        try:
            os.posix_fallocate(fd, lo, hi - lo)
        except OSError:
            pass


def _chunk_index(bounds: list[tuple[int, int]], offset: int) -> int:
    """Index of the chunk holding offset (bounds are sorted and contiguous)."""
    lo, hi = 0, len(bounds) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if bounds[mid][1] <= offset:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted indices, as (first, last)."""
    runs: list[tuple[int, int]] = []
    for index in indices:
        if runs and runs[-1][1] == index - 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


_caches: dict[str, ChunkCache] = {}


def chunk_cache() -> ChunkCache:
    """This worker's verified chunk cache over its data store (one per process and data dir): the node's own
    store, or the node's gateway for a worker elsewhere (``stores.data_store``)."""
    root = Path(settings.DATA_DIR) / "weavedrive"
    with _locks_guard:
        cache = _caches.get(str(root))
        if cache is None:
            cache = _caches[str(root)] = ChunkCache(root, data_store())
        return cache


@dataclass(frozen=True)
class Voucher:
    """An Attestation or Available item assigned in a process's log."""

    nonce: int
    block_height: int
    kind: str  # "Attestation" or "Available"
    signer: str
    tx_id: str


@dataclass
class Admissions:
    """Admission answers known for one process during one batch: tx id -> first nonce it is readable at.

    ``vouchers`` set (a replay that reads its log from memory, ``ao.verify``): the process's own log is that list,
    not this node's database.
    """

    process_id: str
    admitted_from: dict[str, int] = field(default_factory=dict)
    vouchers: list[Voucher] | None = None

    def saw(self, *, nonce: int, block_height: int, item_tags: list[tuple[str, str]], signer: str) -> None:
        """Remember a replayed slot's item if it vouches for data."""
        tags = dict(reversed(item_tags))  # the first value of each name
        if self.vouchers is not None and tags.get("Type") in ("Attestation", "Available") and tags.get("Message"):
            self.vouchers.append(Voucher(nonce, block_height, tags["Type"], signer, tags["Message"]))


class WeaveDrive:
    """The drive one message sees (WIT imports weavedrive.size/read, and the LLM extension)."""

    def __init__(
        self, *, policy: wd.Policy, process_id: str, nonce: int, block_height: int, admissions: Admissions,
        cache: ChunkCache,
    ) -> None:
        self.policy, self.process_id, self.nonce, self.block_height = policy, process_id, nonce, block_height
        self.admissions, self.cache = admissions, cache
        self.fuel = 0

    # -- WIT -----------------------------------------------------------------------------

    def size(self, path: str) -> int | str:
        """Size in bytes of what a path names, or an error text."""
        try:
            parsed = self._admit(path)
            if parsed.kind == "data":
                return self.cache.store.data_size(parsed.tx_id)
            return len(self._document(parsed))
        except (StoreError, OSError) as exc:
            raise _fault(exc) from exc
        except wd.WeaveDriveError as exc:
            return str(exc)

    def read(self, path: str, offset: int, length: int) -> bytes | str:
        """Bytes of what a path names, or an error text."""
        try:
            parsed = self._admit(path)
            self.fuel += FUEL_PER_CALL
            if parsed.kind == "data":
                size = self.cache.store.data_size(parsed.tx_id)
                count = wd.check_range(offset, length, size)
                self.fuel += FUEL_PER_KIB * -(-count // 1024)
                return self.cache.read(parsed.tx_id, offset, count)
            document = self._document(parsed)
            count = wd.check_range(offset, length, len(document))
            return document[offset:offset + count]
        except (StoreError, OSError) as exc:
            raise _fault(exc) from exc
        except wd.WeaveDriveError as exc:
            return str(exc)

    # -- extensions ----------------------------------------------------------------------

    def admitted_data(self, path: str) -> str:
        """The tx id of a /data path this message may read (admission only: nothing is fetched)."""
        parsed = self._admit(path)
        if parsed.kind != "data":
            raise wd.WeaveDriveError(f"{path} is not a /data/<txid> path")
        return parsed.tx_id

    def local_file(self, path: str) -> tuple[str, Path]:
        """For host extensions: (tx id, verified local file) of an admitted /data path."""
        tx_id = self.admitted_data(path)
        try:
            return tx_id, self.cache.local_file(tx_id)
        except (StoreError, OSError) as exc:
            raise _fault(exc) from exc

    # -- admission -------------------------------------------------------------------------

    def _admit(self, path: str) -> wd.WeavePath:
        if not self.policy.enabled:
            raise wd.WeaveDriveError("WeaveDrive is not enabled for this process (tag Extension=WeaveDrive)")
        parsed = wd.parse_path(path)
        if parsed.kind == "block":
            if parsed.height > self.block_height:
                raise wd.WeaveDriveError(
                    f"block {parsed.height} is after this message's block height {self.block_height}"
                )
            return parsed
        first = self.admissions.admitted_from.get(parsed.tx_id)
        if first is None or first > self.nonce:
            if not self._admitted_by_log(parsed.tx_id):
                raise wd.WeaveDriveError(self._refusal(parsed.tx_id))
            self.admissions.admitted_from[parsed.tx_id] = self.nonce
        if not models.Entry.objects.filter(id=parsed.tx_id, kind=models.Entry.Kind.TX).exists():
            raise HostUnavailable(f"transaction {parsed.tx_id} is admitted but this node's store does not hold it")
        return parsed

    def _refusal(self, tx_id: str) -> str:
        mode = self.policy.mode
        if mode == "Assignments":
            return (f"refused: no Attestation of {tx_id} by the scheduler or an Attestor was assigned to this "
                    "process before this message (Availability-Type Assignments)")
        if mode == "Individual":
            return (f"refused: the process owner made {tx_id} Available in this process's log before this message "
                    "(Availability-Type Individual) — no such item was found")
        return (f"refused: no library ({', '.join(self.policy.libraries)}) lists {tx_id} at a block before "
                f"{self.block_height} (Availability-Type Library)")

    def _admitted_by_log(self, tx_id: str) -> bool:
        policy = self.policy
        if self.admissions.vouchers is not None:
            return self._admitted_by_vouchers(tx_id)
        vouchers = _items_for(tx_id)
        if policy.mode == "Assignments":
            allowed = {policy.scheduler, *policy.attestors}
            return models.Assignment.objects.filter(
                process_id=self.process_id, nonce__lt=self.nonce, block_height__lte=self.block_height,
                message__in=vouchers.filter(tag_rows__name="Type", tag_rows__value="Attestation",
                                            owner_address__in=allowed),
            ).exists()
        if policy.mode == "Individual":
            return models.Assignment.objects.filter(
                process_id=self.process_id, nonce__lt=self.nonce,
                message__in=vouchers.filter(tag_rows__name="Type", tag_rows__value="Available",
                                            owner_address=policy.owner),
            ).exists()
        owners = dict(models.Process.objects.filter(id__in=policy.libraries).values_list("id", "owner_address"))
        condition = Q()
        for library, owner in owners.items():
            condition |= Q(process_id=library, message__owner_address=owner)
        if not owners:
            return False
        return models.Assignment.objects.filter(
            condition, block_height__lt=self.block_height,
            message__in=vouchers.filter(tag_rows__name="Type", tag_rows__value="Available"),
        ).exists()

    def _admitted_by_vouchers(self, tx_id: str) -> bool:
        policy = self.policy
        earlier = [v for v in self.admissions.vouchers or () if v.tx_id == tx_id and v.nonce < self.nonce]
        if policy.mode == "Assignments":
            allowed = {policy.scheduler, *policy.attestors}
            return any(v.kind == "Attestation" and v.signer in allowed and v.block_height <= self.block_height
                       for v in earlier)
        if policy.mode == "Individual":
            return any(v.kind == "Available" and v.signer == policy.owner for v in earlier)
        raise HostUnavailable("a process reading through libraries (Availability-Type Library) is verified on a node "
                              "that holds the libraries' logs")

    def _document(self, parsed: wd.WeavePath) -> bytes:
        if parsed.kind == "tx":
            header = self.cache.store.get_transaction(parsed.tx_id)
            return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        try:
            block = embedded_store().get_block(parsed.height)
        except NotFound as exc:
            raise wd.WeaveDriveError(str(exc)) from exc
        body = {"height": block.height, "indep_hash": block.indep_hash, "previous": block.previous,
                "timestamp": block.timestamp}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _fault(exc: Exception) -> HostUnavailable:
    """A store or disk failure of this node: the message is retried later, never answered with it."""
    return HostUnavailable(f"WeaveDrive could not reach its data: {exc}")


def _items_for(tx_id: str):  # type: ignore[no-untyped-def]
    """Entries (data items) whose Message tag names tx_id."""
    return models.Entry.objects.filter(
        kind=models.Entry.Kind.ITEM, tag_rows__name="Message", tag_rows__value=tx_id
    ).values("pk")
