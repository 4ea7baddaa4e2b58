"""GatewayStore against a real ArLocal on loopback, plus a tampering transport that must be caught."""

from __future__ import annotations

import dataclasses
import json
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from ao.permaweb import dataitem, merkle
from ao.permaweb.b64 import b64url_decode, b64url_encode
from ao.permaweb.gateway import GatewayStore, decode_bundle, encode_bundle
from ao.permaweb.store import ChunkVerificationError, Duplicate, Invalid, NotFound, StoreError, StoreUnavailable
from ao.permaweb.transaction import Transaction, build, sign
from ao.permaweb.wallet import Wallet
from tests.permaweb.conftest import LOOPBACK, free_loopback_port

pytestmark = pytest.mark.interop

KIB = 1024
MIB = 1024 * KIB
MAX = merkle.MAX_CHUNK_SIZE
FUNDS = 10**16
RNG_SEED = 7_777
# 1 MiB, a 256 KiB multiple, 300 KiB, a rebalanced size, and one small enough for GET /{id}.
SIZES = {"1mib": MIB, "512kib": 512 * KIB, "300kib": 300 * KIB, "rebalanced": MAX + 1, "small": 1000}
TCP_LISTEN = "0A"


def blob(size: int, salt: int) -> bytes:
    return random.Random(RNG_SEED + salt).randbytes(size)


class Recorder(HTTPAdapter):
    """A transport that records request paths and lets a test rewrite responses."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []
        self.rewrite: Callable[[str, requests.Response], None] | None = None

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = super().send(request, **kwargs)
        path = requests.utils.urlparse(request.url).path
        self.paths.append(path)
        if self.rewrite is not None:
            _ = response.content
            self.rewrite(path, response)
        return response


def session_with(adapter: HTTPAdapter) -> requests.Session:
    session = requests.Session()
    session.mount("http://", adapter)
    return session


@dataclasses.dataclass
class Uploaded:
    tx: Transaction
    data: bytes


@pytest.fixture(scope="module")
def store(arlocal: str, rsa_wallet: Wallet) -> GatewayStore:
    gateway = GatewayStore(arlocal, wallet=rsa_wallet)
    assert gateway.mint(rsa_wallet.address, FUNDS) >= FUNDS
    return gateway


@pytest.fixture(scope="module")
def app_tag() -> str:
    return f"llamafed-test-{random.Random().getrandbits(40):x}"


def _signed_for_arlocal(unsigned: Transaction, wallet: Wallet) -> Transaction:
    """Sign, re-signing while the id starts with "tx": ArLocal finds the id in GET /tx/{id} by
    splitting the URL on "/tx", so such ids (1 in 4096) are never found. PSS salts are random,
    so a new signature gives a new id."""
    while True:
        tx = sign(unsigned, wallet)
        if not tx.id.startswith("tx"):
            return tx


@pytest.fixture(scope="module")
def uploaded(store: GatewayStore, rsa_wallet: Wallet, app_tag: str) -> dict[str, Uploaded]:
    """Every size posted through GatewayStore (chunked above 256 KiB), then mined."""
    out = {}
    for salt, (name, size) in enumerate(SIZES.items()):
        data = blob(size, salt)
        tags = [("App-Name", app_tag), ("Size-Class", name)]
        tx = _signed_for_arlocal(build(data=data, tags=tags, reward=store.price(size), last_tx=store.tx_anchor()),
                                 rsa_wallet)
        assert store.put_transaction(tx.to_header(), data) == tx.id
        out[name] = Uploaded(tx, data)
    store.mine()
    return out


def fresh(arlocal: str, **kwargs: Any) -> GatewayStore:
    """A store with no cached headers, so everything is fetched and verified again."""
    return GatewayStore(arlocal, **kwargs)


def test_arlocal_listens_on_loopback_only(arlocal: str) -> None:
    port = int(arlocal.rsplit(":", 1)[1])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == TCP_LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                listening.append(local.rsplit(":", 1)[0])
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian hex; nothing on 0.0.0.0 or ::


@pytest.mark.parametrize("name", list(SIZES))
def test_round_trip_whole(arlocal: str, uploaded: dict[str, Uploaded], name: str) -> None:
    item = uploaded[name]
    reader = fresh(arlocal)
    assert reader.get_transaction(item.tx.id) == item.tx.to_header()
    assert reader.data_size(item.tx.id) == len(item.data)
    assert reader.read(item.tx.id) == item.data


@pytest.mark.parametrize("name", ["1mib", "512kib", "300kib", "rebalanced"])
def test_ranges_across_chunk_boundaries(arlocal: str, uploaded: dict[str, Uploaded], name: str) -> None:
    item = uploaded[name]
    size = len(item.data)
    adapter = Recorder()
    reader = fresh(arlocal, session=session_with(adapter))
    ranges = [(0, 1), (size - 1, size), (size // 2, size // 2)]
    for start, end in merkle.chunk_boundaries(size)[1:]:
        ranges.append((start - 5, start + 5))
        ranges.append((max(0, start - MAX // 2), min(size, end + 3)))
    for start, end in ranges:
        assert reader.read(item.tx.id, start, end) == item.data[start:end], (start, end)
    # One chunk request per chunk touched: a 10-byte read across a boundary fetches exactly two.
    adapter.paths.clear()
    boundary = merkle.chunk_boundaries(size)[1][0]
    assert reader.read(item.tx.id, boundary - 5, boundary + 5) == item.data[boundary - 5 : boundary + 5]
    assert sum(p.startswith("/chunk/") for p in adapter.paths) == 2


def test_small_data_is_read_whole_and_checked(arlocal: str, uploaded: dict[str, Uploaded]) -> None:
    item = uploaded["small"]
    adapter = Recorder()
    reader = fresh(arlocal, session=session_with(adapter))
    assert reader.read(item.tx.id, 10, 20) == item.data[10:20]
    assert f"/{item.tx.id}" in adapter.paths
    assert not any(p.startswith("/chunk/") for p in adapter.paths)


def test_query_by_tags_ids_and_owner(store: GatewayStore, uploaded: dict[str, Uploaded], app_tag: str) -> None:
    records = store.query(tags=[("App-Name", [app_tag])])
    assert {r.id for r in records} == {u.tx.id for u in uploaded.values()}
    one = store.query(tags=[("App-Name", [app_tag]), ("Size-Class", ["300kib"])])
    assert [r.id for r in one] == [uploaded["300kib"].tx.id]
    record = one[0]
    assert record.kind == "tx" and record.data_size == 300 * KIB
    assert record.owner == b64url_encode(uploaded["300kib"].tx.owner)
    assert record.block_height is not None and record.block_height >= 1
    assert ("Size-Class", "300kib") in {(t.name, t.value) for t in record.tags}
    by_id = store.query(ids=[uploaded["1mib"].tx.id])
    assert [r.id for r in by_id] == [uploaded["1mib"].tx.id]
    mine = store.query(owners=[record.owner_address], tags=[("App-Name", [app_tag])], first=2)
    assert len(mine) == 2
    assert store.query(tags=[("App-Name", ["no-such-app"])]) == []


def test_block_height_and_mine(store: GatewayStore) -> None:
    before = store.block_height()
    assert store.mine() == before + 1
    assert store.block_height() == before + 1


def test_posting_twice_is_a_duplicate(store: GatewayStore, uploaded: dict[str, Uploaded]) -> None:
    item = uploaded["300kib"]
    with pytest.raises(Duplicate):
        fresh(store.base_url).put_transaction(item.tx.to_header(), item.data)


def test_bad_uploads_are_refused_before_posting(store: GatewayStore, rsa_wallet: Wallet) -> None:
    data = blob(40 * KIB, 50)
    tx = _signed_for_arlocal(build(data=data, reward=store.price(len(data))), rsa_wallet)
    forged = tx.to_header()
    forged["reward"] = str(tx.reward + 1)
    with pytest.raises(Invalid):
        store.put_transaction(forged, data)
    with pytest.raises(Invalid):
        store.put_transaction(tx.to_header(), blob(40 * KIB, 51))
    with pytest.raises(Invalid):
        store.put_transaction(tx.to_header(), data[:-1])
    with pytest.raises(Invalid):
        store.put_transaction(tx.to_header(), data + b"x")
    with pytest.raises(NotFound):
        store.get_transaction(tx.id)


def test_streamed_upload_from_a_file(store: GatewayStore, rsa_wallet: Wallet, tmp_path: Path) -> None:
    data = blob(2 * MAX + 40 * KIB, 60)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    with path.open("rb") as fh:
        _, tree = merkle.compute_from_stream(fh, len(data))
        fh.seek(0)
        tx = _signed_for_arlocal(build(tree=tree, reward=store.price(len(data))), rsa_wallet)
        assert store.put_transaction(tx.to_header(), fh) == tx.id
    assert fresh(store.base_url).read(tx.id, MAX - 1, 2 * MAX + 1) == data[MAX - 1 : 2 * MAX + 1]


def test_unknown_ids_are_not_found(store: GatewayStore) -> None:
    missing = b64url_encode(bytes(32))
    with pytest.raises(NotFound):
        store.get_transaction(missing)
    with pytest.raises(NotFound):
        store.read(missing)


# -- a gateway that lies ------------------------------------------------------


def _flip_chunk_byte(path: str, response: requests.Response) -> None:
    if path.startswith("/chunk/"):
        body = response.json()
        chunk = bytearray(b64url_decode(body["chunk"]))
        chunk[len(chunk) // 2] ^= 0x01
        body["chunk"] = b64url_encode(bytes(chunk))
        response._content = json.dumps(body).encode()


def test_tampered_chunk_is_refused(arlocal: str, uploaded: dict[str, Uploaded]) -> None:
    adapter = Recorder()
    adapter.rewrite = _flip_chunk_byte
    reader = fresh(arlocal, session=session_with(adapter))
    with pytest.raises(ChunkVerificationError):
        reader.read(uploaded["512kib"].tx.id, 0, 1)


def test_chunk_with_a_proof_for_another_offset_is_refused(arlocal: str, uploaded: dict[str, Uploaded]) -> None:
    item = uploaded["1mib"]
    first_chunk = requests.get(f"{arlocal}/tx/{item.tx.id}/offset", timeout=5).json()
    start = int(first_chunk["offset"]) - int(first_chunk["size"]) + 1
    genuine_first = requests.get(f"{arlocal}/chunk/{start}", timeout=5).content

    def serve_first_chunk_everywhere(path: str, response: requests.Response) -> None:
        if path.startswith("/chunk/"):
            response._content = genuine_first

    adapter = Recorder()
    adapter.rewrite = serve_first_chunk_everywhere
    reader = fresh(arlocal, session=session_with(adapter))
    assert reader.read(item.tx.id, 0, 10) == item.data[:10]  # the real first chunk is fine
    with pytest.raises(ChunkVerificationError):
        reader.read(item.tx.id, 3 * MAX, 3 * MAX + 10)


def test_tampered_small_data_is_refused(arlocal: str, uploaded: dict[str, Uploaded]) -> None:
    item = uploaded["small"]

    def swap_data(path: str, response: requests.Response) -> None:
        if path == f"/{item.tx.id}":
            response._content = bytes(len(item.data))

    adapter = Recorder()
    adapter.rewrite = swap_data
    with pytest.raises(ChunkVerificationError):
        fresh(arlocal, session=session_with(adapter)).read(item.tx.id)


def test_forged_header_from_the_gateway_is_refused(arlocal: str, uploaded: dict[str, Uploaded]) -> None:
    item = uploaded["300kib"]

    def bump_reward(path: str, response: requests.Response) -> None:
        if path == f"/tx/{item.tx.id}":
            body = response.json()
            body["data_size"] = str(int(body["data_size"]) + 1)
            response._content = json.dumps(body).encode()

    adapter = Recorder()
    adapter.rewrite = bump_reward
    with pytest.raises(Invalid):
        fresh(arlocal, session=session_with(adapter)).read(item.tx.id)


def test_server_errors_and_refused_connections_are_unavailable(arlocal: str) -> None:
    def fail(path: str, response: requests.Response) -> None:
        response.status_code = 503

    adapter = Recorder()
    adapter.rewrite = fail
    with pytest.raises(StoreUnavailable):
        fresh(arlocal, session=session_with(adapter)).block_height()
    closed = free_loopback_port()
    with socket.socket() as probe:
        assert probe.connect_ex((LOOPBACK, closed)) != 0
    with pytest.raises(StoreUnavailable):
        GatewayStore(f"http://{LOOPBACK}:{closed}", timeout=(1, 1)).block_height()


# -- ANS-104 items, wrapped in a bundle ---------------------------------------


def test_bundle_encoding_round_trips(rsa_wallet: Wallet) -> None:
    items = [dataitem.create_data_item(rsa_wallet, blob(n, n), tags=[("N", str(n))]).serialize() for n in (0, 10)]
    bundle = encode_bundle(items)
    assert [raw for _, raw in decode_bundle(bundle)] == items
    assert [i for i, _ in decode_bundle(bundle)] == [dataitem.parse(raw).id for raw in items]
    with pytest.raises(Invalid):
        decode_bundle(bundle[:-1])


def test_put_item_wraps_it_in_a_bundle(store: GatewayStore, rsa_wallet: Wallet, app_tag: str) -> None:
    item = dataitem.create_data_item(
        rsa_wallet, b"hello from a data item", tags=[("App-Name", app_tag), ("Type", "Message")], anchor=bytes(32)
    )
    raw = item.serialize()
    assert store.put_item(raw) == item.id
    store.mine()
    assert store.get_item_bytes(item.id) == raw
    assert store.read(item.id, 6, 10) == b"from"
    assert store.data_size(item.id) == len(item.data)
    [record] = store.query(ids=[item.id])
    assert record.kind == "item" and record.extra["bundled_in"]
    bundle = store.get_transaction(record.extra["bundled_in"])
    assert {(b64url_decode(t["name"]), b64url_decode(t["value"])) for t in bundle["tags"]} == {
        (b"Bundle-Format", b"binary"),
        (b"Bundle-Version", b"2.0.0"),
    }
    with pytest.raises(Duplicate):
        store.put_item(raw)
    # ArLocal indexes the item but leaves GraphQL bundledIn null: a store that did not post it
    # cannot find its bundle, and says so rather than serving unverified bytes.
    stranger = fresh(store.base_url)
    assert [r.id for r in stranger.query(ids=[item.id])] == [item.id]
    with pytest.raises(NotFound, match="bundle"):
        stranger.get_item_bytes(item.id)
    forged = bytearray(raw)
    forged[-1] ^= 1
    with pytest.raises(Invalid):
        store.put_item(bytes(forged))


def test_put_item_without_a_wallet_says_why(arlocal: str, rsa_wallet: Wallet) -> None:
    item = dataitem.create_data_item(rsa_wallet, b"no wallet to pay for the bundle")
    with pytest.raises(StoreError, match="wallet"):
        GatewayStore(arlocal).put_item(item.serialize())
