"""Chunking, Merkle trees and proofs: arithmetic, properties, streaming and every way a proof can be wrong."""

from __future__ import annotations

import hashlib
import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ao.permaweb import merkle
from ao.permaweb.merkle import (
    HASH_SIZE,
    MAX_CHUNK_SIZE,
    MAX_DATA_PATH_SIZE,
    MIN_CHUNK_SIZE,
    NOTE_SIZE,
    Chunk,
    MalformedPathError,
    MerkleError,
    ShortReadError,
)

KIB = 1024
MIB = 1024 * KIB
PROPERTY = settings(max_examples=200, deadline=None)
DATA_PROPERTY = settings(max_examples=25, deadline=None)
# Sizes clustered around the places where chunking changes behaviour.
EDGES = [0, 1, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE, MAX_CHUNK_SIZE + MIN_CHUNK_SIZE, 2 * MAX_CHUNK_SIZE, 3 * MAX_CHUNK_SIZE]
edge_sizes = st.builds(lambda base, delta: max(0, base + delta), st.sampled_from(EDGES), st.integers(-3, 3))
any_sizes = st.one_of(edge_sizes, st.integers(0, 64 * MIB))


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


class TrickleReader(io.RawIOBase):
    """A file that hands out at most ``step`` bytes per read and records the largest request."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = data
        self._pos = 0
        self._step = step
        self.largest_request = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.largest_request = max(self.largest_request, size)
        take = self._step if size < 0 else min(size, self._step)
        out = self._data[self._pos : self._pos + take]
        self._pos += len(out)
        return out


class ZeroStream(io.RawIOBase):
    """A virtual file of zeros that never materialises more than one request."""

    def __init__(self, size: int) -> None:
        self._left = size
        self.largest_request = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.largest_request = max(self.largest_request, size)
        take = min(size, self._left)
        self._left -= take
        return bytes(take)


# -- chunk arithmetic ---------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, []),
        (1, [(0, 1)]),
        (MAX_CHUNK_SIZE - 1, [(0, MAX_CHUNK_SIZE - 1)]),
        (MAX_CHUNK_SIZE, [(0, MAX_CHUNK_SIZE)]),
        (MAX_CHUNK_SIZE + 1, [(0, 131073), (131073, MAX_CHUNK_SIZE + 1)]),
        (MAX_CHUNK_SIZE + MIN_CHUNK_SIZE - 1, [(0, 147456), (147456, 294911)]),
        (MAX_CHUNK_SIZE + MIN_CHUNK_SIZE, [(0, MAX_CHUNK_SIZE), (MAX_CHUNK_SIZE, 294912)]),
        (300 * KIB, [(0, MAX_CHUNK_SIZE), (MAX_CHUNK_SIZE, 300 * KIB)]),
        (2 * MAX_CHUNK_SIZE, [(0, MAX_CHUNK_SIZE), (MAX_CHUNK_SIZE, 2 * MAX_CHUNK_SIZE)]),
        (MIB + 5, [(0, 262144), (262144, 524288), (524288, 786432), (786432, 917507), (917507, MIB + 5)]),
    ],
)
def test_chunk_boundaries_known_sizes(size: int, expected: list[tuple[int, int]]) -> None:
    assert merkle.chunk_boundaries(size) == expected


@pytest.mark.parametrize("size", [0, MAX_CHUNK_SIZE, 2 * MAX_CHUNK_SIZE, 4 * MAX_CHUNK_SIZE])
def test_multiples_of_max_chunk_get_an_empty_trailing_leaf(size: int) -> None:
    leaves = merkle.leaf_ranges(size)
    assert leaves[-1] == (size, size)
    assert leaves[:-1] == merkle.chunk_boundaries(size)


@pytest.mark.parametrize("size", [1, MAX_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1, 300 * KIB, MIB + 5])
def test_other_sizes_have_no_empty_leaf(size: int) -> None:
    assert merkle.leaf_ranges(size) == merkle.chunk_boundaries(size)


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True, None])
def test_chunk_boundaries_rejects_non_sizes(bad: object) -> None:
    with pytest.raises(MerkleError):
        merkle.chunk_boundaries(bad)  # type: ignore[arg-type]


@PROPERTY
@given(any_sizes)
def test_chunks_tile_the_data_within_size_limits(size: int) -> None:
    bounds = merkle.chunk_boundaries(size)
    assert all(prev[1] == cur[0] for prev, cur in zip(bounds, bounds[1:]))
    assert not bounds or bounds[0][0] == 0
    assert (bounds[-1][1] if bounds else 0) == size
    assert all(0 < e - s <= MAX_CHUNK_SIZE for s, e in bounds)
    if len(bounds) > 1:
        assert all(e - s >= MIN_CHUNK_SIZE for s, e in bounds)
        assert all(e - s == MAX_CHUNK_SIZE for s, e in bounds[:-2])


@PROPERTY
@given(any_sizes.filter(lambda n: n > 0), st.randoms(use_true_random=False))
def test_chunk_for_offset_matches_the_boundaries(size: int, rnd: random.Random) -> None:
    bounds = merkle.chunk_boundaries(size)
    offsets = {0, size - 1, rnd.randrange(size)} | {s for s, _ in bounds[-3:]} | {e - 1 for _, e in bounds[-3:]}
    for offset in offsets:
        index, start, end = merkle.chunk_for_offset(size, offset)
        assert bounds[index] == (start, end)
        assert start <= offset < end


@pytest.mark.parametrize(("size", "offset"), [(0, 0), (10, 10), (10, -1)])
def test_chunk_for_offset_rejects_offsets_outside_the_data(size: int, offset: int) -> None:
    with pytest.raises(MerkleError):
        merkle.chunk_for_offset(size, offset)


# -- trees and proofs ---------------------------------------------------------


def test_empty_data_root_is_the_single_empty_leaf() -> None:
    tree = merkle.tree_for(b"")
    expected = sha(sha(sha(b"")) + sha(bytes(NOTE_SIZE)))
    assert tree.root == merkle.data_root(b"") == expected
    assert tree.chunks == ()
    with pytest.raises(MerkleError):
        tree.proof_for(0)


def test_two_leaf_tree_matches_the_hashing_rules_by_hand() -> None:
    data = random_bytes(MAX_CHUNK_SIZE + 100 * KIB, seed=1)
    left, right = data[:MAX_CHUNK_SIZE], data[MAX_CHUNK_SIZE:]

    def leaf(chunk: bytes, end: int) -> bytes:
        return sha(sha(sha(chunk)) + sha(end.to_bytes(NOTE_SIZE, "big")))

    left_id, right_id = leaf(left, MAX_CHUNK_SIZE), leaf(right, len(data))
    root = sha(sha(left_id) + sha(right_id) + sha(MAX_CHUNK_SIZE.to_bytes(NOTE_SIZE, "big")))
    tree = merkle.tree_for(data)
    assert tree.root == root
    assert tree.proof_for(1) == left_id + right_id + merkle.note(MAX_CHUNK_SIZE) + sha(right) + merkle.note(len(data))


@DATA_PROPERTY
@given(edge_sizes.filter(lambda n: n > 0), st.integers(0, 2**32))
def test_every_proof_validates_and_pins_its_chunk(size: int, seed: int) -> None:
    data = random_bytes(size, seed)
    tree = merkle.tree_for(data)
    for index, chunk in enumerate(tree.chunks):
        path = tree.proof_for(index)
        body = data[chunk.start : chunk.end]
        for offset in (chunk.start, chunk.end - 1, (chunk.start + chunk.end) // 2):
            proven = merkle.validate_path(tree.root, offset, 0, size, path)
            assert proven is not None
            assert (proven.left_bound, proven.right_bound, proven.data_hash) == (chunk.start, chunk.end, sha(body))
            assert merkle.verify_chunk(tree.root, size, body, path, offset)
        # The proof pins the chunk to its own range: any offset outside it is refused.
        if chunk.start > 0:
            assert not merkle.verify_chunk(tree.root, size, body, path, chunk.start - 1)
        if chunk.end < size:
            assert not merkle.verify_chunk(tree.root, size, body, path, chunk.end)
    # Without an empty trailing leaf, the last chunk's bound is the declared size: a wrong size fails.
    if size % MAX_CHUNK_SIZE:
        last = tree.chunks[-1]
        path = tree.proof_for(len(tree.chunks) - 1)
        assert not merkle.verify_chunk(tree.root, size + 1, data[last.start :], path, last.start)


def test_tampered_chunk_bytes_are_refused() -> None:
    data = random_bytes(3 * MAX_CHUNK_SIZE + 5, seed=2)
    tree = merkle.tree_for(data)
    chunk = tree.chunks[1]
    body = bytearray(data[chunk.start : chunk.end])
    path = tree.proof_for(1)
    assert merkle.verify_chunk(tree.root, len(data), bytes(body), path, chunk.start)
    body[7] ^= 1
    assert not merkle.verify_chunk(tree.root, len(data), bytes(body), path, chunk.start)
    assert not merkle.verify_chunk(tree.root, len(data), bytes(body[:-1]), path, chunk.start)


def test_a_chunk_with_another_chunks_proof_is_refused() -> None:
    data = random_bytes(3 * MAX_CHUNK_SIZE, seed=3)
    tree = merkle.tree_for(data)
    first, second = tree.chunks[0], tree.chunks[1]
    assert not merkle.verify_chunk(tree.root, len(data), data[first.start : first.end], tree.proof_for(1), 0)
    assert not merkle.verify_chunk(
        tree.root, len(data), data[second.start : second.end], tree.proof_for(0), second.start
    )


def test_flipping_any_byte_of_a_proof_breaks_it() -> None:
    data = random_bytes(5 * MAX_CHUNK_SIZE + 3, seed=4)
    tree = merkle.tree_for(data)
    chunk = tree.chunks[2]
    path = tree.proof_for(2)
    for position in range(0, len(path), 7):
        broken = bytearray(path)
        broken[position] ^= 0x80
        assert merkle.validate_path(tree.root, chunk.start, 0, len(data), bytes(broken)) is None


def test_branches_proven_once_for_a_window_refuse_what_they_refused_alone() -> None:
    # A window's chunks share the set of branches already proven; it skips only a record it checked itself against
    # the same expected hash, so every forgery a lone proof refuses is still refused once the set is full.
    data = random_bytes(9 * MAX_CHUNK_SIZE + 11, seed=7)
    tree, size = merkle.tree_for(data), len(data)
    proven: set[bytes] = set()
    for index, chunk in enumerate(tree.chunks):
        assert merkle.verify_chunk(tree.root, size, data[chunk.start : chunk.end], tree.proof_for(index),
                                   chunk.start, proven)
    # Ten chunks, four levels: each distinct branch was recorded once, not once per chunk.
    assert 0 < len(proven) < sum(len(tree.proof_for(i)) // merkle.BRANCH_RECORD_SIZE for i in range(len(tree.chunks)))
    chunk, path = tree.chunks[4], tree.proof_for(4)
    body = data[chunk.start : chunk.end]
    tampered = bytearray(body)
    tampered[3] ^= 1
    assert not merkle.verify_chunk(tree.root, size, bytes(tampered), path, chunk.start, proven)
    assert not merkle.verify_chunk(tree.root, size, body, tree.proof_for(5), chunk.start, proven)
    for position in range(0, len(path), 7):
        broken = bytearray(path)
        broken[position] ^= 0x80
        assert merkle.validate_path(tree.root, chunk.start, 0, size, bytes(broken), proven) is None
    other = merkle.data_root(random_bytes(size, seed=8))
    assert not merkle.verify_chunk(other, size, body, path, chunk.start, proven)


def test_a_proof_against_another_root_fails() -> None:
    tree = merkle.tree_for(random_bytes(MAX_CHUNK_SIZE * 2 + 9, seed=5))
    other = merkle.data_root(random_bytes(MAX_CHUNK_SIZE * 2 + 9, seed=6))
    assert merkle.validate_path(other, 0, 0, tree.data_size, tree.proof_for(0)) is None


def test_leaf_note_must_equal_the_proven_right_bound() -> None:
    # A one-leaf tree whose leaf claims 5 bytes, presented as data of 10 bytes:
    # arweave-js would accept it as a 10-byte chunk; we refuse.
    body = b"hello"
    path = sha(body) + merkle.note(5)
    root = sha(sha(sha(body)) + sha(merkle.note(5)))
    assert merkle.validate_path(root, 0, 0, 5, path) is not None
    assert merkle.validate_path(root, 0, 0, 10, path) is None


def test_offsets_past_the_end_are_clamped_like_the_arweave_node() -> None:
    data = random_bytes(2 * MAX_CHUNK_SIZE + 50 * KIB, seed=7)
    tree = merkle.tree_for(data)
    last = tree.chunks[-1]
    proven = merkle.validate_path(tree.root, 10 * len(data), 0, len(data), tree.proof_for(len(tree.chunks) - 1))
    assert proven is not None and proven.right_bound == last.end
    assert not merkle.verify_chunk(tree.root, len(data), data[last.start :], tree.proof_for(2), len(data))


@pytest.mark.parametrize(
    "path",
    [b"", bytes(HASH_SIZE), bytes(HASH_SIZE + NOTE_SIZE + 1), bytes(2 * (HASH_SIZE + NOTE_SIZE))],
)
def test_malformed_path_lengths_raise(path: bytes) -> None:
    with pytest.raises(MalformedPathError):
        merkle.validate_path(bytes(HASH_SIZE), 0, 0, 10, path)


def test_oversized_path_raises_and_bad_root_raises() -> None:
    records = (MAX_DATA_PATH_SIZE // 96) + 1
    with pytest.raises(MalformedPathError):
        merkle.validate_path(bytes(HASH_SIZE), 0, 0, 10, bytes(64 + 96 * records))
    with pytest.raises(MalformedPathError):
        merkle.validate_path(bytes(HASH_SIZE - 1), 0, 0, 10, bytes(64))
    assert not merkle.verify_chunk(bytes(HASH_SIZE - 1), 10, b"x", bytes(64), 0)


def test_build_tree_checks_leaf_continuity() -> None:
    good = [Chunk(0, 0, 5, sha(b"a")), Chunk(1, 5, 9, sha(b"b"))]
    assert merkle.build_tree(good).data_size == 9
    with pytest.raises(MerkleError):
        merkle.build_tree([Chunk(0, 0, 5, sha(b"a")), Chunk(1, 6, 9, sha(b"b"))])
    with pytest.raises(MerkleError):
        merkle.build_tree([Chunk(0, 0, 5, b"short")])
    with pytest.raises(MerkleError):
        merkle.build_tree([])


# -- streaming ----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1000, MAX_CHUNK_SIZE, MAX_CHUNK_SIZE + 1, 3 * MAX_CHUNK_SIZE + 12345])
def test_stream_equals_in_memory_even_with_short_reads(size: int) -> None:
    data = random_bytes(size, seed=size)
    reader = TrickleReader(data, step=10_000)
    root, tree = merkle.compute_from_stream(reader, size)
    assert root == merkle.data_root(data)
    assert tree.chunks == merkle.tree_for(data).chunks
    assert reader.largest_request <= MAX_CHUNK_SIZE


def test_stream_reads_a_large_file_one_chunk_at_a_time() -> None:
    size = 32 * MIB + 7
    stream = ZeroStream(size)
    root, tree = merkle.compute_from_stream(stream, size)
    assert stream.largest_request <= MAX_CHUNK_SIZE
    assert len(tree.chunks) == len(merkle.chunk_boundaries(size))
    zero_hash = sha(bytes(MAX_CHUNK_SIZE))
    assert tree.chunks[0].data_hash == zero_hash
    last = tree.chunks[-1]
    assert merkle.verify_chunk(root, size, bytes(last.size), tree.proof_for(len(tree.chunks) - 1), last.start)


def test_stream_shorter_than_declared_raises() -> None:
    with pytest.raises(ShortReadError):
        merkle.compute_from_stream(io.BytesIO(b"x" * 100), 101)


def test_tree_chunk_at_uses_offsets() -> None:
    data = random_bytes(MAX_CHUNK_SIZE + 10, seed=8)
    tree = merkle.tree_for(data)
    assert tree.chunk_at(0).index == 0
    assert tree.chunk_at(len(data) - 1).index == 1
    assert tree.chunk_at(len(data) - 1).end == len(data)
