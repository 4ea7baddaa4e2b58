"""Arweave L1 data chunking and Merkle trees (data_root, data_path proofs), equal to arweave-js.

Layout, as arweave-js 1.15 builds it (proven for every size class by
tests/permaweb/test_merkle_interop.py):

* Data is cut into 256 KiB chunks. When the bytes left after a full chunk
  would form a last chunk of under 32 KiB, the last two chunks are rebalanced:
  the second-to-last takes ceil(rest / 2) bytes and the last the remainder.
* When the size is a multiple of 256 KiB (size 0 included), the tree gets one
  more leaf: an empty chunk (sha256 of no bytes) ending at ``size``. It changes
  the data_root but is never uploaded or served (arweave-python-client omits
  it and so computes a different data_root for these sizes).
* Leaf id = H(H(data_hash) || H(note(end))); branch id =
  H(H(left.id) || H(right.id) || H(note(left.end))) with H = sha256 and notes
  32-byte big-endian integers. Layers pair nodes left to right; an odd last
  node is carried up unchanged.
* A data_path is the root-to-leaf list of branch records
  (left id, right id, note) followed by the leaf record (data_hash, note).

``validate_path`` follows the Arweave node's rules (an out-of-range offset is
clamped into [0, right_bound)) and is stricter than arweave-js in one way: the
leaf's end note must equal the right bound proven by the branches, which holds
for every tree an honest builder makes.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

MAX_CHUNK_SIZE = 256 * 1024
MIN_CHUNK_SIZE = 32 * 1024
NOTE_SIZE = 32
HASH_SIZE = 32
LEAF_RECORD_SIZE = HASH_SIZE + NOTE_SIZE
BRANCH_RECORD_SIZE = 2 * HASH_SIZE + NOTE_SIZE
# The Arweave node refuses data paths above this size (data_path_too_big).
MAX_DATA_PATH_SIZE = 256 * 1024
# A note is a 256-bit unsigned integer.
MAX_NOTE = (1 << (8 * NOTE_SIZE)) - 1
EMPTY_HASH = hashlib.sha256(b"").digest()


class MerkleError(ValueError):
    """Base of every Merkle/chunking failure."""


class MalformedPathError(MerkleError):
    """A data_path whose shape is impossible (bad length, too long)."""


class ShortReadError(MerkleError):
    """A stream ended before the declared number of bytes."""


@dataclass(frozen=True)
class Chunk:
    """One leaf of the tree: a byte range of the data and the sha256 of its bytes."""

    index: int
    start: int
    end: int
    data_hash: bytes

    @property
    def size(self) -> int:
        """Number of bytes in the chunk."""
        return self.end - self.start


@dataclass(frozen=True)
class ValidatedChunk:
    """What a valid data_path proves: the leaf's data hash and its byte range [left, right)."""

    data_hash: bytes
    left_bound: int
    right_bound: int

    @property
    def chunk_size(self) -> int:
        """Size of the proven chunk."""
        return self.right_bound - self.left_bound

    @property
    def offset(self) -> int:
        """Offset of the chunk's last byte (what arweave-js reports as the proof offset)."""
        return self.right_bound - 1


def note(value: int) -> bytes:
    """32-byte big-endian encoding of a byte offset."""
    if value < 0 or value > MAX_NOTE:
        raise MerkleError(f"note out of range: {value}")
    return value.to_bytes(NOTE_SIZE, "big")


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _leaf_id(data_hash: bytes, end: int) -> bytes:
    return _sha(_sha(data_hash) + _sha(note(end)))


def _branch_id(left_id: bytes, right_id: bytes, left_end: int) -> bytes:
    return _sha(_sha(left_id) + _sha(right_id) + _sha(note(left_end)))


def chunk_boundaries(size: int) -> list[tuple[int, int]]:
    """The [start, end) ranges of the data chunks that are stored and served (no empty chunk)."""
    return [r for r in leaf_ranges(size) if r[1] > r[0]]


def leaf_ranges(size: int) -> list[tuple[int, int]]:
    """The [start, end) ranges of the tree's leaves, with the empty trailing leaf when it exists."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise MerkleError(f"data size must be a non-negative int, got {size!r}")
    ranges: list[tuple[int, int]] = []
    start = 0
    rest = size
    while rest >= MAX_CHUNK_SIZE:
        take = MAX_CHUNK_SIZE
        after = rest - MAX_CHUNK_SIZE
        if 0 < after < MIN_CHUNK_SIZE:
            take = (rest + 1) // 2
        ranges.append((start, start + take))
        start += take
        rest -= take
    ranges.append((start, start + rest))
    return ranges


def chunk_for_offset(size: int, offset: int) -> tuple[int, int, int]:
    """(index, start, end) of the data chunk holding byte ``offset`` of ``size`` bytes, in O(1)."""
    if not isinstance(offset, int) or not 0 <= offset < size:
        raise MerkleError(f"offset {offset} outside data of {size} bytes")
    full, rem = divmod(size, MAX_CHUNK_SIZE)
    if full == 0 or rem == 0 or rem >= MIN_CHUNK_SIZE:
        index = offset // MAX_CHUNK_SIZE
        start = index * MAX_CHUNK_SIZE
        return index, start, min(start + MAX_CHUNK_SIZE, size)
    # The last two chunks share MAX_CHUNK_SIZE + rem bytes, the first taking the larger half.
    grid_end = (full - 1) * MAX_CHUNK_SIZE
    if offset < grid_end:
        index = offset // MAX_CHUNK_SIZE
        start = index * MAX_CHUNK_SIZE
        return index, start, start + MAX_CHUNK_SIZE
    split = grid_end + (MAX_CHUNK_SIZE + rem + 1) // 2
    if offset < split:
        return full - 1, grid_end, split
    return full, split, size


class ChunkTree:
    """A built Merkle tree over the leaves of one piece of data."""

    def __init__(self, leaves: Sequence[Chunk]) -> None:
        if not leaves:
            raise MerkleError("a tree needs at least one leaf")
        expected = 0
        for position, leaf in enumerate(leaves):
            if leaf.index != position or leaf.start != expected or leaf.end < leaf.start:
                raise MerkleError(f"leaf {position} does not continue the previous one: {leaf}")
            if len(leaf.data_hash) != HASH_SIZE:
                raise MerkleError(f"leaf {position} data hash is not {HASH_SIZE} bytes")
            expected = leaf.end
        self.leaves: tuple[Chunk, ...] = tuple(leaves)
        self.data_size = expected
        self.chunks: tuple[Chunk, ...] = tuple(c for c in self.leaves if c.size > 0)
        self._starts = [c.start for c in self.chunks]
        # layers[0] = leaves as (id, end); each next layer pairs the previous one.
        layer = [(_leaf_id(c.data_hash, c.end), c.end) for c in self.leaves]
        self._layers: list[list[tuple[bytes, int]]] = [layer]
        while len(layer) > 1:
            nxt: list[tuple[bytes, int]] = []
            for i in range(0, len(layer), 2):
                if i + 1 < len(layer):
                    (lid, lend), (rid, rend) = layer[i], layer[i + 1]
                    nxt.append((_branch_id(lid, rid, lend), rend))
                else:
                    nxt.append(layer[i])
            self._layers.append(nxt)
            layer = nxt
        self.root: bytes = layer[0][0]

    def proof_for(self, index: int) -> bytes:
        """The data_path of data chunk ``index`` (the empty trailing leaf has no proof)."""
        if not 0 <= index < len(self.chunks):
            raise MerkleError(f"chunk index {index} out of range 0..{len(self.chunks) - 1}")
        leaf = self.chunks[index]
        records: list[bytes] = []
        position = leaf.index
        for layer in self._layers[:-1]:
            sibling = position ^ 1
            if sibling < len(layer):
                left, right = sorted((position, sibling))
                records.append(layer[left][0] + layer[right][0] + note(layer[left][1]))
            position //= 2
        records.reverse()
        return b"".join(records) + leaf.data_hash + note(leaf.end)

    def chunk_at(self, offset: int) -> Chunk:
        """The data chunk holding byte ``offset`` (whatever the leaves' layout)."""
        if not 0 <= offset < self.data_size:
            raise MerkleError(f"offset {offset} outside data of {self.data_size} bytes")
        return self.chunks[bisect.bisect_right(self._starts, offset) - 1]


def build_tree(leaves: Sequence[Chunk]) -> ChunkTree:
    """Build the tree over leaves (as made by ``leaves_for`` or ``compute_from_stream``)."""
    return ChunkTree(leaves)


def leaves_for(data: bytes) -> list[Chunk]:
    """The leaves of in-memory data."""
    view = memoryview(data)
    return [Chunk(i, s, e, _sha(view[s:e])) for i, (s, e) in enumerate(leaf_ranges(len(data)))]


def tree_for(data: bytes) -> ChunkTree:
    """The tree of in-memory data."""
    return ChunkTree(leaves_for(data))


def data_root(data: bytes) -> bytes:
    """The 32-byte Merkle root of data (arweave-js computeRootHash; transactions use b"" for no data)."""
    return tree_for(data).root


def compute_from_stream(fileobj: BinaryIO, size: int) -> tuple[bytes, ChunkTree]:
    """Read exactly ``size`` bytes chunk by chunk from fileobj; return (data_root, tree)."""
    leaves: list[Chunk] = []
    for index, (start, end) in enumerate(leaf_ranges(size)):
        digest = hashlib.sha256()
        remaining = end - start
        while remaining:
            block = fileobj.read(remaining)
            if not block:
                raise ShortReadError(f"stream ended at byte {end - remaining} of {size}")
            digest.update(block)
            remaining -= len(block)
        leaves.append(Chunk(index, start, end, digest.digest()))
    tree = ChunkTree(leaves)
    return tree.root, tree


def validate_path(
    root: bytes, offset: int, left_bound: int, right_bound: int, path: bytes, proven: set[bytes] | None = None
) -> ValidatedChunk | None:
    """Check that ``path`` proves a chunk holding ``offset`` under ``root``; return what it proves.

    ``proven``: branch records already checked against their expected hash (each key: the expected hash, then the
    record), shared by the proofs of chunks under one root; a record found there is not hashed again, and one
    checked here is added. Neighbouring chunks' proofs share every branch above them, so a window of chunks hashes
    each branch once instead of once per chunk.
    """
    if len(root) != HASH_SIZE:
        raise MalformedPathError(f"data_root must be {HASH_SIZE} bytes, got {len(root)}")
    if len(path) > MAX_DATA_PATH_SIZE:
        raise MalformedPathError(f"data_path of {len(path)} bytes exceeds {MAX_DATA_PATH_SIZE}")
    if len(path) < LEAF_RECORD_SIZE or (len(path) - LEAF_RECORD_SIZE) % BRANCH_RECORD_SIZE:
        raise MalformedPathError(f"data_path length {len(path)} is not 64 + 96k bytes")
    if right_bound <= 0 or left_bound < 0 or left_bound >= right_bound:
        return None
    dest = min(max(offset, left_bound), right_bound - 1)
    expected = root
    cursor = 0
    while len(path) - cursor > LEAF_RECORD_SIZE:
        left_id = path[cursor : cursor + HASH_SIZE]
        right_id = path[cursor + HASH_SIZE : cursor + 2 * HASH_SIZE]
        note_bytes = path[cursor + 2 * HASH_SIZE : cursor + BRANCH_RECORD_SIZE]
        key = expected + path[cursor : cursor + BRANCH_RECORD_SIZE]
        if proven is None or key not in proven:
            if _sha(_sha(left_id) + _sha(right_id) + _sha(note_bytes)) != expected:
                return None
            if proven is not None:
                proven.add(key)
        split = int.from_bytes(note_bytes, "big")
        if dest < split:
            expected, right_bound = left_id, min(right_bound, split)
        else:
            expected, left_bound = right_id, max(left_bound, split)
        cursor += BRANCH_RECORD_SIZE
    data_hash = path[cursor : cursor + HASH_SIZE]
    end_note = path[cursor + HASH_SIZE :]
    if _sha(_sha(data_hash) + _sha(end_note)) != expected:
        return None
    if left_bound >= right_bound or int.from_bytes(end_note, "big") != right_bound:
        return None
    return ValidatedChunk(data_hash, left_bound, right_bound)


def prove_chunk(root: bytes, data_size: int, chunk: bytes, path: bytes, offset: int,
                proven_branches: set[bytes] | None = None) -> ValidatedChunk | None:
    """What the proof establishes when ``chunk`` is the chunk holding ``offset`` under ``root``, else None.
    ``proven_branches``: as validate_path's ``proven``."""
    if not 0 <= offset < data_size:
        return None
    try:
        proven = validate_path(root, offset, 0, data_size, path, proven_branches)
    except MerkleError:
        return None
    if proven is None or not proven.left_bound <= offset < proven.right_bound:
        return None
    if len(chunk) != proven.chunk_size or _sha(chunk) != proven.data_hash:
        return None
    return proven


def verify_chunk(root: bytes, data_size: int, chunk: bytes, path: bytes, offset: int,
                 proven_branches: set[bytes] | None = None) -> bool:
    """True when ``chunk`` is the chunk holding ``offset`` of the data of ``data_size`` bytes under ``root``
    (``proven_branches``: as validate_path's ``proven``)."""
    return prove_chunk(root, data_size, chunk, path, offset, proven_branches) is not None
