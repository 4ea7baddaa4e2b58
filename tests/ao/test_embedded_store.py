"""The embedded store: L1 transactions chunked under data_root, read whole or by range, verified."""

from __future__ import annotations

import io
import os
import random

import pytest
from django.test import Client

from ao import models
from ao.effects.stores import embedded_store
from ao.permaweb import merkle
from ao.permaweb import transaction as l1
from ao.permaweb.b64 import b64url_decode, b64url_encode
from ao.permaweb.store import ChunkVerificationError, Duplicate, Invalid
from ao.permaweb.wallet import Wallet

pytestmark = pytest.mark.django_db

KIB = 1024
SIZES = {"1 MiB": 1024 * KIB, "512 KiB (multiple of 256 KiB)": 512 * KIB, "300 KiB": 300 * KIB}


def _data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _signed(wallet: Wallet, data: bytes, tags: tuple[tuple[str, str], ...] = (("Content-Type", "application/x-test"),)) -> dict:
    tx = l1.sign(l1.build(data=data, tags=tags), wallet)
    return tx.to_header(include_data=False)


def _ranges(size: int) -> list[tuple[int, int]]:
    chunk = merkle.MAX_CHUNK_SIZE
    return [(0, 1), (0, size), (chunk - 5, chunk + 5), (size - 7, size), (size // 3, size // 3 * 2), (1, chunk * 2 + 3)]


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_l1_transaction_round_trips_whole_and_by_range(rsa_wallet: Wallet, size: int, node_keys: None) -> None:
    data = _data(size, size)
    header = _signed(rsa_wallet, data)
    store = embedded_store()
    tx_id = store.put_transaction(header, io.BytesIO(data))
    assert store.data_size(tx_id) == size
    assert store.read(tx_id) == data
    for start, end in _ranges(size):
        assert store.read(tx_id, start, end) == data[start:end], (start, end)
    assert store.get_transaction(tx_id)["data_root"] == b64url_encode(merkle.data_root(data))
    assert models.Chunk.objects.filter(entry__id=tx_id).count() == len(merkle.chunk_boundaries(size))


def test_gateway_endpoints_serve_offsets_and_proven_chunks(client: Client, rsa_wallet: Wallet, node_keys: None) -> None:
    data = _data(300 * KIB, 7)
    tx_id = embedded_store().put_transaction(_signed(rsa_wallet, data), data)
    offset = client.get(f"/ao/gateway/tx/{tx_id}/offset").json()
    end, size = int(offset["offset"]), int(offset["size"])
    assert size == len(data)
    start = end - size + 1
    got = b""
    root = merkle.data_root(data)
    while len(got) < size:
        body = client.get(f"/ao/gateway/chunk/{start + len(got)}").json()
        chunk, path = b64url_decode(body["chunk"]), b64url_decode(body["data_path"])
        assert merkle.verify_chunk(root, size, chunk, path, len(got))
        got += chunk
    assert got == data
    assert client.get(f"/ao/gateway/{tx_id}", HTTP_RANGE="bytes=262140-262150").content == data[262140:262151]
    assert client.get(f"/ao/gateway/tx/{tx_id}").json()["id"] == tx_id


def test_a_flipped_byte_on_disk_is_refused_on_read(rsa_wallet: Wallet, node_keys: None) -> None:
    data = _data(600 * KIB, 3)
    store = embedded_store()
    tx_id = store.put_transaction(_signed(rsa_wallet, data), data)
    entry = models.Entry.objects.get(id=tx_id)
    path = store.blob_dir / entry.blob
    blob = bytearray(path.read_bytes())
    blob[300 * KIB] ^= 0x01  # inside chunk 1
    path.write_bytes(bytes(blob))
    assert store.read(tx_id, 0, 1000) == data[:1000]  # chunk 0 is intact
    with pytest.raises(ChunkVerificationError, match="chunk 1 .* does not match its proof"):
        store.read(tx_id, 300 * KIB, 300 * KIB + 10)


def test_chunks_verified_in_parallel_into_a_file_and_a_bad_one_never_written(
        rsa_wallet: Wallet, node_keys: None, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ao.effects import embedded_store as module

    chunk = merkle.MAX_CHUNK_SIZE
    data = _data(9 * chunk + 123, 5)  # more chunks than verification threads
    store = embedded_store()
    tx_id = store.put_transaction(_signed(rsa_wallet, data), data)
    target = tmp_path / "copy"
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, len(data))
        store.read_into(tx_id, 0, len(data), fd)
        assert target.read_bytes() == data and module.VERIFY_THREADS >= 1
        entry = models.Entry.objects.get(id=tx_id)
        path = store.blob_dir / entry.blob
        rotten = bytearray(data)
        rotten[4 * chunk + 17] ^= 0x10  # chunk 4 rots on disk
        path.write_bytes(bytes(rotten))
        os.ftruncate(fd, 0)
        os.ftruncate(fd, len(data))
        with pytest.raises(ChunkVerificationError, match="chunk 4 does not match its proof"):
            store.read_into(tx_id, 0, len(data), fd)
        copy = target.read_bytes()
        assert copy[4 * chunk:5 * chunk] == bytes(chunk)  # nothing of the bad chunk was written
        assert copy[:4 * chunk] == data[:4 * chunk] and copy[5 * chunk:] == data[5 * chunk:]
        path.write_bytes(data[:-200])  # the blob loses its tail: the last chunk reads short
        os.ftruncate(fd, 0)
        os.ftruncate(fd, len(data))
        with pytest.raises(ChunkVerificationError, match="chunk 9 does not match its proof"):
            store.read_into(tx_id, 0, len(data), fd)
        last = merkle.chunk_boundaries(len(data))[-1][0]
        copy = target.read_bytes()
        assert copy[:last] == data[:last] and copy[last:] == bytes(len(data) - last)
    finally:
        os.close(fd)


def test_bad_signature_is_refused_and_nothing_is_kept(rsa_wallet: Wallet, node_keys: None) -> None:
    data = _data(100 * KIB, 1)
    header = _signed(rsa_wallet, data)
    header["tags"] = _signed(rsa_wallet, data, (("Content-Type", "text/evil"),))["tags"]
    store = embedded_store()
    files_before = set(store.blob_dir.glob("*")) if store.blob_dir.exists() else set()
    with pytest.raises(Invalid, match="signature does not verify"):
        store.put_transaction(header, data)
    assert not models.Entry.objects.exists()
    assert (set(store.blob_dir.glob("*")) if store.blob_dir.exists() else set()) == files_before


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:-1], "shorter than data_size"),
        (lambda d: d + b"x", "longer than data_size"),
        (lambda d: b"y" + d[1:], "does not match the transaction's data_root"),
    ],
    ids=["short", "long", "different"],
)
def test_data_that_does_not_match_the_header_is_refused(rsa_wallet: Wallet, node_keys: None, mutate, message) -> None:  # type: ignore[no-untyped-def]
    data = _data(280 * KIB, 2)
    store = embedded_store()
    store.blob_dir.mkdir(parents=True, exist_ok=True)
    files_before = set(store.blob_dir.iterdir())
    with pytest.raises(Invalid, match=message):
        store.put_transaction(_signed(rsa_wallet, data), mutate(data))
    assert not models.Entry.objects.exists()
    assert set(store.blob_dir.iterdir()) == files_before


def test_same_transaction_twice_is_a_duplicate(rsa_wallet: Wallet, node_keys: None) -> None:
    data = _data(10 * KIB, 4)
    header = _signed(rsa_wallet, data)
    store = embedded_store()
    store.put_transaction(header, data)
    with pytest.raises(Duplicate):
        store.put_transaction(header, data)
    assert models.Entry.objects.count() == 1


def test_each_transaction_is_mined_into_a_new_block(rsa_wallet: Wallet, node_keys: None) -> None:
    store = embedded_store()
    heights = [
        models.Entry.objects.get(id=store.put_transaction(_signed(rsa_wallet, _data(1000, i)), _data(1000, i))).block_id
        for i in range(3)
    ]
    assert heights == [0, 1, 2]
    assert store.block_height() == 2
    assert store.get_block(1).previous == store.get_block(0).indep_hash
