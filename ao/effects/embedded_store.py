"""The embedded permaweb store: metadata in the database, L1 data as content-addressed files on disk.

Data items (messages, at most a few hundred KiB) keep their serialized bytes in the
database; L1 transaction data (modules, model weights) is streamed to a file named
by its data_root and read back chunk by chunk, each chunk checked against its Merkle
proof before a byte of it is returned.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.db.models import Max, Q, QuerySet

from ao import models
from ao.effects import bulk
from ao.permaweb import dataitem, merkle
from ao.permaweb import transaction as l1
from ao.permaweb.b64 import b64url_decode, b64url_encode
from ao.permaweb.store import (
    ChunkVerificationError,
    Duplicate,
    Invalid,
    NotFound,
    Record,
    Store,
    Tag,
)
from ao.permaweb.wallet import address_of

COPY_BUFFER = 1024 * 1024
# Chunks are verified on this many threads at once: reading, hashing and writing a 256 KiB chunk all release the
# GIL, so two cores verify about twice as fast as one (bench/weavedrive.py).
VERIFY_THREADS = max(1, min(4, os.cpu_count() or 1))
_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


_buffers = threading.local()


def _chunk_buffer(length: int) -> memoryview:
    """A view of ``length`` bytes of the calling thread's chunk buffer (valid until its next call)."""
    buffer = getattr(_buffers, "buffer", None)
    if buffer is None or len(buffer) < length:
        buffer = _buffers.buffer = bytearray(max(length, merkle.MAX_CHUNK_SIZE))
    return memoryview(buffer)[:length]


def _verify_pool() -> ThreadPoolExecutor:
    """This process's chunk-verification threads (made after a fork, never inherited from the parent)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(max_workers=VERIFY_THREADS, thread_name_prefix="verify"))
        return _pool[1]
_CURRENT = object()  # save_item's default: the latest block
ENTRY_COLUMNS = ("id", "kind", "signature_type", "owner", "owner_address", "target", "anchor", "data_size",
                 "data_root", "raw", "blob", "block_id", "created_at")
MAX_QUERY_PAGE = 1000


class EmbeddedStore(Store):
    """Store backed by this node's database and a blob directory."""

    def __init__(self, blob_dir: str | os.PathLike[str]) -> None:
        self.blob_dir = Path(blob_dir)

    # -- data items -------------------------------------------------------------------------

    def put_item(self, raw: bytes) -> str:
        """Verify and keep a signed data item."""
        item = self.parse_item(raw)
        self.save_item(item)
        return item.id

    @staticmethod
    def parse_item(raw: bytes, max_size: int | None = None) -> dataitem.DataItem:
        """Parse and verify a data item, or raise Invalid."""
        try:
            item = dataitem.parse(raw, max_size=max_size)
        except dataitem.DataItemError as exc:
            raise Invalid(str(exc)) from exc
        if not dataitem.verify(item):
            raise Invalid(f"data item {item.id}: signature does not verify")
        return item

    def entry_for(self, item: dataitem.DataItem, *, block: int | None) -> models.Entry:
        """The (unsaved) row of an item."""
        return models.Entry(
            id=item.id,
            kind=models.Entry.Kind.ITEM,
            signature_type=item.signature_type,
            owner=item.owner_b64,
            owner_address=item.owner_address,
            target=item.target_b64,
            anchor=item.anchor_b64,
            data_size=len(item.data),
            raw=item.serialize(),
            block_id=block,
        )

    def save_items(self, items: list[dataitem.DataItem], *, block: int | None) -> list[models.Entry]:
        """Insert many verified, new items and their tags (call inside a transaction); their rows, in order."""
        entries = []
        for item, seq in zip(items, self.insert_items(items, block=block)):
            entry = models.Entry(
                seq=seq, id=item.id, kind=models.Entry.Kind.ITEM, signature_type=item.signature_type,
                owner=item.owner_b64, owner_address=item.owner_address, target=item.target_b64,
                anchor=item.anchor_b64, data_size=len(item.data), block_id=block,
            )
            entry._state.adding, entry._state.db = False, "default"
            entries.append(entry)
        return entries

    def insert_items(self, items: list[dataitem.DataItem], *, block: int | None) -> list[int]:
        """Insert many verified, new items and their tags (call inside a transaction); their row keys, in order.

        Plain multi-row statements (``ao.effects.bulk``): on the scheduler's and messenger's hot paths, Django
        building and saving a model object per item and per tag cost more than the rest of their work."""
        if not items:
            return []
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        rows = [(item.id, models.Entry.Kind.ITEM.value, item.signature_type, item.owner_b64, item.owner_address,
                 item.target_b64, item.anchor_b64, len(item.data), "", item.serialize(), "", block, now)
                for item in items]
        by_id = dict(bulk.insert_returning(models.Entry, ENTRY_COLUMNS, rows, ("id", "seq")))
        seqs = [int(by_id[item.id]) for item in items]  # type: ignore[call-overload]
        bulk.insert_rows(models.EntryTag, ("entry_id", "position", "name", "value"), (
            (seq, position, name, value)
            for seq, item in zip(seqs, items) for position, (name, value) in enumerate(item.tags)
        ))
        return seqs

    def save_item(self, item: dataitem.DataItem, *, block: int | None | object = _CURRENT) -> models.Entry:
        """Insert an already verified item (in the given block, by default the latest); raise Duplicate if known."""
        try:
            with transaction.atomic():
                entry = self.entry_for(item, block=self.latest_block() if block is _CURRENT else block)  # type: ignore[arg-type]
                entry.save(force_insert=True)
                models.EntryTag.objects.bulk_create(
                    models.EntryTag(entry=entry, position=i, name=name, value=value)
                    for i, (name, value) in enumerate(item.tags)
                )
        except IntegrityError as exc:
            if models.Entry.objects.filter(id=item.id).exists():
                raise Duplicate(f"data item {item.id} is already stored") from exc
            raise
        return entry

    def get_item_bytes(self, item_id: str) -> bytes:
        """The serialized item."""
        raw = (
            models.Entry.objects.filter(id=item_id, kind=models.Entry.Kind.ITEM)
            .values_list("raw", flat=True)
            .first()
        )
        if raw is None:
            raise NotFound(f"no data item {item_id}")
        return bytes(raw)

    def get_item(self, item_id: str) -> dataitem.DataItem:
        """The parsed item."""
        return dataitem.parse(self.get_item_bytes(item_id))

    # -- L1 transactions --------------------------------------------------------------------

    def put_transaction(self, header: dict, data: BinaryIO | bytes | None = None) -> str:
        """Verify a signed v2 header, stream its data to disk, check data_root, keep it."""
        try:
            tx = l1.parse_header(header)
        except l1.TransactionError as exc:
            raise Invalid(str(exc)) from exc
        if not l1.verify_header(header):
            raise Invalid(f"transaction {tx.id}: signature does not verify")
        if data is None or data == b"":
            data = tx.data  # inline data, when the header carried it
        stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
        blob_name, tree = self._write_blob(stream, tx.data_size, tx.data_root) if tx.data_size else ("", None)
        try:
            with transaction.atomic():
                block = self._mine_block(tx.id)
                weave_end = models.Entry.objects.aggregate(m=Max("weave_offset"))["m"]
                weave_offset = ((weave_end if weave_end is not None else -1) + tx.data_size) if tx.data_size else None
                entry = models.Entry.objects.create(
                    id=tx.id,
                    kind=models.Entry.Kind.TX,
                    signature_type=1,
                    owner=b64url_encode(tx.owner),
                    owner_address=address_of(tx.owner),
                    target=b64url_encode(tx.target),
                    anchor=b64url_encode(tx.last_tx),
                    data_size=tx.data_size,
                    data_root=b64url_encode(tx.data_root),
                    header=tx.to_header(include_data=False),
                    blob=blob_name,
                    block=block,
                    weave_offset=weave_offset,
                )
                models.EntryTag.objects.bulk_create(
                    models.EntryTag(
                        entry=entry,
                        position=i,
                        name=name.decode("utf-8", "replace"),
                        value=value.decode("utf-8", "replace"),
                    )
                    for i, (name, value) in enumerate(tx.tags)
                )
                if tree is not None:
                    models.Chunk.objects.bulk_create(
                        models.Chunk(entry=entry, index=i, start=c.start, end=c.end, data_path=tree.proof_for(i))
                        for i, c in enumerate(tree.chunks)
                    )
        except IntegrityError as exc:
            if models.Entry.objects.filter(id=tx.id).exists():
                raise Duplicate(f"transaction {tx.id} is already stored") from exc
            raise
        return tx.id

    def _write_blob(self, stream: BinaryIO, size: int, data_root: bytes) -> tuple[str, merkle.ChunkTree]:
        """Copy exactly size bytes to a temp file while hashing chunks; keep it only if data_root matches."""
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.blob_dir, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    root, tree = merkle.compute_from_stream(_Tee(stream, out), size)
                except merkle.ShortReadError as exc:
                    raise Invalid(f"data is shorter than data_size {size}: {exc}") from exc
                if stream.read(1):
                    raise Invalid(f"data is longer than data_size {size}")
            if root != data_root:
                raise Invalid("data does not match the transaction's data_root")
            # Content-addressed: the same data uploaded twice shares one file.
            name = hashlib.sha256(data_root + size.to_bytes(8, "big")).hexdigest()
            os.replace(tmp_name, self.blob_dir / name)
            return name, tree
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise

    def get_transaction(self, tx_id: str) -> dict:
        """The header, as /tx/{id} shows it."""
        header = (
            models.Entry.objects.filter(id=tx_id, kind=models.Entry.Kind.TX).values_list("header", flat=True).first()
        )
        if header is None:
            raise NotFound(f"no transaction {tx_id}")
        return dict(header)

    def data_size(self, tx_or_item_id: str) -> int:
        """Size of the data."""
        size = models.Entry.objects.filter(id=tx_or_item_id).values_list("data_size", flat=True).first()
        if size is None:
            raise NotFound(f"nothing stored under {tx_or_item_id}")
        return int(size)

    def read(self, tx_or_item_id: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of the data, L1 chunks verified against data_root."""
        entry = models.Entry.objects.filter(id=tx_or_item_id).only("kind", "data_size", "data_root", "blob").first()
        if entry is None:
            raise NotFound(f"nothing stored under {tx_or_item_id}")
        start, end = _clamp_range(start, end, entry.data_size)
        if entry.kind == models.Entry.Kind.ITEM:
            return self.get_item(tx_or_item_id).data[start:end]
        if start == end:
            return b""
        chunks = _chunks_over(entry, start, end).order_by("index")
        root = b64url_decode(entry.data_root)
        out = bytearray()
        with open(self.blob_dir / entry.blob, "rb") as fh:
            for chunk in chunks:
                fh.seek(chunk.start)
                body = fh.read(chunk.end - chunk.start)
                if not merkle.verify_chunk(root, entry.data_size, body, bytes(chunk.data_path), chunk.start):
                    raise ChunkVerificationError(
                        f"transaction {tx_or_item_id}: chunk {chunk.index} (bytes {chunk.start}-{chunk.end}) "
                        "does not match its proof; the stored copy is corrupt"
                    )
                lo, hi = max(start, chunk.start), min(end, chunk.end)
                out += body[lo - chunk.start : hi - chunk.start]
        return bytes(out)

    def read_into(self, tx_or_item_id: str, start: int, end: int, fd: int) -> None:
        """Verify every whole chunk overlapping [start, end) against data_root and write it to ``fd`` at its own
        offset, chunks in parallel (VERIFY_THREADS); nothing of a chunk that fails its proof is written, and the
        call then raises ChunkVerificationError naming the first such chunk."""
        entry = models.Entry.objects.filter(id=tx_or_item_id).only("kind", "data_size", "data_root", "blob").first()
        if entry is None:
            raise NotFound(f"nothing stored under {tx_or_item_id}")
        if entry.kind == models.Entry.Kind.ITEM:
            super().read_into(tx_or_item_id, start, end, fd)
            return
        start, end = _clamp_range(start, end, entry.data_size)
        rows = list(_chunks_over(entry, start, end).order_by("index").values_list("index", "start", "end", "data_path"))
        root, size = b64url_decode(entry.data_root), entry.data_size
        blob = os.open(self.blob_dir / entry.blob, os.O_RDONLY)
        branches: set[bytes] = set()  # the window's chunks share their upper branches: each is hashed once

        def check(row: tuple[int, int, int, bytes]) -> int | None:
            index, lo, hi, path = row
            body = _chunk_buffer(hi - lo)  # this thread's own buffer: no allocation (and page faults) per chunk
            if os.preadv(blob, [body], lo) != hi - lo:
                return index  # the blob is shorter than the chunk rows say: as good as a failed proof
            if not merkle.verify_chunk(root, size, body, bytes(path), lo, branches):
                return index
            os.pwrite(fd, body, lo)
            return None

        try:
            failed = [i for i in _verify_pool().map(check, rows) if i is not None]
        finally:
            os.close(blob)
        if failed:
            index = failed[0]
            raise ChunkVerificationError(f"transaction {tx_or_item_id}: chunk {index} does not match its proof; "
                                         "the stored copy is corrupt")

    def chunk_at(self, tx_id: str, offset: int) -> models.Chunk:
        """The chunk of an L1 transaction that holds relative byte offset."""
        entry = models.Entry.objects.filter(id=tx_id).only("id").first()
        chunk = _chunks_over(entry, offset, offset + 1).first() if entry is not None else None
        if chunk is None:
            raise NotFound(f"transaction {tx_id} has no chunk at offset {offset}")
        return chunk

    # -- queries and blocks ---------------------------------------------------------------------

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
        """Records matching every filter, ordered by store sequence."""
        qs = models.Entry.objects.all()
        if ids is not None:
            qs = qs.filter(id__in=list(ids))
        if owners is not None:
            qs = qs.filter(owner_address__in=list(owners))
        if recipients is not None:
            qs = qs.filter(target__in=list(recipients))
        for name, values in tags:
            qs = qs.filter(
                Q(pk__in=models.EntryTag.objects.filter(name=name, value__in=list(values)).values("entry_id"))
            )
        if after is not None:
            try:
                cursor = int(after)
            except ValueError as exc:
                raise Invalid(f"bad cursor {after!r}") from exc
            qs = qs.filter(seq__lt=cursor) if descending else qs.filter(seq__gt=cursor)
        qs = qs.order_by("-seq" if descending else "seq")[: max(0, min(first, MAX_QUERY_PAGE))]
        entries = list(qs.prefetch_related("tag_rows"))
        return [
            Record(
                id=e.id,
                owner=e.owner,
                owner_address=e.owner_address,
                tags=tuple(Tag(t.name, t.value) for t in sorted(e.tag_rows.all(), key=lambda t: t.position)),
                data_size=e.data_size,
                kind=e.kind,
                block_height=e.block_id,
                target=e.target,
                extra={"cursor": str(e.seq), "anchor": e.anchor},
            )
            for e in entries
        ]

    def block_height(self) -> int:
        """Height of the newest block (0 before the first)."""
        return self.latest_block() or 0

    @staticmethod
    def latest_block() -> int | None:
        """Height of the newest block, or None when no transaction was ever mined."""
        return models.Block.objects.order_by("-height").values_list("height", flat=True).first()

    def get_block(self, height: int) -> models.Block:
        """A block by height."""
        block = models.Block.objects.filter(height=height).first()
        if block is None:
            raise NotFound(f"no block at height {height}")
        return block

    @staticmethod
    def _mine_block(tx_id: str) -> models.Block:
        """Append a block holding one transaction (called inside the storing transaction)."""
        # NO KEY: entries being stored elsewhere may still refer to the last block (an FK check, FOR KEY SHARE).
        last = models.Block.objects.select_for_update(no_key=True).order_by("-height").first()
        height = 0 if last is None else last.height + 1
        previous = "" if last is None else last.indep_hash
        indep = b64url_encode(hashlib.sha384(f"{height}:{previous}:{tx_id}".encode()).digest())
        return models.Block.objects.create(
            height=height, indep_hash=indep, previous=previous, timestamp=int(time.time())
        )


class _Tee:
    """A reader that copies what it reads to a file: one pass hashes and stores the data."""

    def __init__(self, source: BinaryIO, sink: BinaryIO) -> None:
        self.source, self.sink = source, sink

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(min(n, COPY_BUFFER) if n > 0 else COPY_BUFFER)
        self.sink.write(data)
        return data


def _chunks_over(entry: models.Entry, start: int, end: int) -> QuerySet[models.Chunk]:
    """The chunks overlapping [start, end), found through the (entry, index) index: every chunk but the last two is
    MAX_CHUNK_SIZE, so the chunk holding offset o has index o // MAX_CHUNK_SIZE or the next one (a range on
    start/end alone would scan every chunk of the entry, once per read)."""
    size = merkle.MAX_CHUNK_SIZE
    return models.Chunk.objects.filter(entry=entry, index__gte=start // size, index__lte=max(end - 1, 0) // size + 1,
                                       end__gt=start, start__lt=end)


def _clamp_range(start: int, end: int | None, size: int) -> tuple[int, int]:
    """Validate a byte range against a size; end=None means to the end."""
    if end is None:
        end = size
    if start < 0 or end < start:
        raise Invalid(f"bad byte range {start}-{end}")
    return min(start, size), min(end, size)


def chunk_by_weave_offset(offset: int) -> tuple[models.Entry, models.Chunk]:
    """The transaction and chunk holding an absolute weave offset (what /chunk/{offset} serves)."""
    entry = models.Entry.objects.filter(weave_offset__gte=offset).order_by("weave_offset").first()
    if entry is None or entry.weave_offset - entry.data_size + 1 > offset:
        raise NotFound(f"no chunk at weave offset {offset}")
    relative = offset - (entry.weave_offset - entry.data_size + 1)
    chunk = _chunks_over(entry, relative, relative + 1).first()
    if chunk is None:  # pragma: no cover - chunks cover the whole data by construction
        raise NotFound(f"no chunk at weave offset {offset}")
    return entry, chunk
