"""L1 v2 transactions: signed here verify in arweave-js, signed by arweave-js verify here; strict headers."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import random
from typing import Any

import pytest
from arweave import arweave_lib, transaction_uploader
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ao.permaweb import merkle
from ao.permaweb import transaction as txmod
from ao.permaweb.b64 import b64url_decode, b64url_encode
from ao.permaweb.transaction import TransactionError, build, parse_header, sign, verify_header
from ao.permaweb.wallet import Wallet
from tests.nodejs import run_node

pytestmark = pytest.mark.interop

KIB = 1024
RNG_SEED = 20240601
UNICODE_TAG = ("App-Name", "Llama Fed ✓ ünïcode")


def blob(size: int, salt: int) -> bytes:
    return random.Random(RNG_SEED + salt).randbytes(size)


def specs(target: str) -> list[dict[str, Any]]:
    """Transactions both sides build: small data with tags, a 256 KiB multiple, a rebalanced size, a transfer."""
    anchor = b64url_encode(blob(48, 99))
    return [
        {
            "data": blob(1000, 1),
            "tags": [("Content-Type", "text/plain"), UNICODE_TAG],
            "reward": 123,
            "last_tx": anchor,
        },
        {"data": blob(512 * KIB, 2), "tags": [("Type", "Blob")], "reward": 5, "last_tx": ""},
        {"data": blob(256 * KIB + 1, 3), "tags": [], "reward": 9, "last_tx": anchor},
        {"data": b"", "tags": [("Action", "Transfer")], "reward": 7, "last_tx": "", "target": target, "quantity": 1000},
    ]


def build_spec(spec: dict[str, Any]) -> txmod.Transaction:
    return build(
        data=spec["data"],
        tags=spec["tags"],
        reward=spec["reward"],
        last_tx=spec["last_tx"],
        target=spec.get("target", ""),
        quantity=spec.get("quantity", 0),
    )


def js_spec(spec: dict[str, Any]) -> dict[str, Any]:
    out = {
        "data": b64url_encode(spec["data"]),
        "tags": [list(t) for t in spec["tags"]],
        "reward": str(spec["reward"]),
        "last_tx": spec["last_tx"],
    }
    if spec.get("target"):
        out["target"] = spec["target"]
        out["quantity"] = str(spec["quantity"])
    return out


def tampered(header: dict[str, Any]) -> list[dict[str, Any]]:
    """Copies of a signed header with one signed field changed (id left as is)."""
    out = []
    for field, value in (("reward", str(int(header["reward"]) + 1)), ("last_tx", b64url_encode(bytes(32)))):
        changed = copy.deepcopy(header)
        changed[field] = value
        out.append(changed)
    if header["tags"]:
        changed = copy.deepcopy(header)
        changed["tags"][0]["value"] = b64url_encode(b"other")
        out.append(changed)
    return out


@pytest.fixture(scope="module")
def target() -> str:
    return b64url_encode(hashlib.sha256(b"llamafed-recipient").digest())


@pytest.fixture(scope="module")
def ours(rsa_wallet: Wallet, target: str) -> list[txmod.Transaction]:
    return [sign(build_spec(spec), rsa_wallet) for spec in specs(target)]


@pytest.fixture(scope="module")
def reference(rsa_wallet: Wallet, target: str, ours: list[txmod.Transaction]) -> dict[str, Any]:
    """One node call: arweave-js signs the same specs and verifies our headers and tampered copies."""
    to_verify = [tx.to_header(include_data=True) for tx in ours]
    bad = [h for tx in ours for h in tampered(tx.to_header())]
    result = run_node(
        "transaction.mjs",
        {"jwk": rsa_wallet.to_jwk(), "sign": [js_spec(s) for s in specs(target)], "verify": to_verify + bad},
    )
    result["n_ours"] = len(to_verify)
    return result


def test_our_transactions_verify_in_arweave_js(reference: dict[str, Any]) -> None:
    assert reference["verified"][: reference["n_ours"]] == [True] * reference["n_ours"]


def test_arweave_js_refuses_our_headers_once_tampered(reference: dict[str, Any]) -> None:
    refused = reference["verified"][reference["n_ours"] :]
    assert refused and not any(refused)


def test_arweave_js_transactions_verify_here(reference: dict[str, Any], target: str) -> None:
    for spec, signed in zip(specs(target), reference["signed"], strict=True):
        header = signed["header"]
        assert signed["verified"] is True
        assert verify_header(header)
        tx = parse_header(header)
        assert tx.id == header["id"] == b64url_encode(hashlib.sha256(tx.signature).digest())
        assert tx.data == spec["data"]
        expected_root = merkle.data_root(spec["data"]) if spec["data"] else b""
        assert tx.data_root == expected_root
        assert tx.tags == tuple((n.encode(), v.encode()) for n, v in spec["tags"])


def test_same_fields_give_the_same_signed_message(reference: dict[str, Any], target: str, rsa_wallet: Wallet) -> None:
    """Our build of a spec, given arweave-js's signature, verifies: both hash the same deep-hash."""
    for spec, signed in zip(specs(target), reference["signed"], strict=True):
        js_tx = parse_header(signed["header"])
        mine = build_spec(spec)
        assert mine.data_root == js_tx.data_root and mine.data_size == js_tx.data_size
        with_js_signature = dataclasses.replace(mine, owner=rsa_wallet.owner, signature=js_tx.signature)
        assert with_js_signature.signature_data() == js_tx.signature_data()
        assert txmod.verify_transaction(with_js_signature)
        assert with_js_signature.id == js_tx.id


def test_arweave_js_signs_with_a_long_salt_we_accept(reference: dict[str, Any]) -> None:
    tx = parse_header(reference["signed"][0]["header"])
    public = rsa.RSAPublicNumbers(65537, int.from_bytes(tx.owner, "big")).public_key()
    with pytest.raises(InvalidSignature):  # not a 32-byte salt: arweave-js on Node uses the maximum
        salt_32 = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
        public.verify(tx.signature, tx.signature_data(), salt_32, hashes.SHA256())
    assert txmod.verify_transaction(tx)


def test_header_shape_matches_arweave(reference: dict[str, Any], ours: list[txmod.Transaction]) -> None:
    header = ours[1].to_header()
    assert list(header) == list(txmod.HEADER_FIELDS)
    assert header["data"] == "" and header["data_tree"] == [] and header["format"] == 2
    assert set(header) == set(reference["signed"][1]["header"])
    js = reference["signed"][0]["header"]
    mine = ours[0].to_header()
    assert [t["name"] for t in js["tags"]] == [t["name"] for t in mine["tags"]]
    assert b64url_decode(mine["tags"][1]["value"]).decode() == UNICODE_TAG[1]
    assert mine["data_size"] == "1000" and mine["quantity"] == "0"
    assert json.loads(json.dumps(mine)) == mine


def test_build_from_stream_equals_build_from_bytes(rsa_wallet: Wallet) -> None:
    data = blob(3 * 256 * KIB + 77, 5)
    streamed, tree = txmod.build_from_stream(io.BytesIO(data), len(data), tags=[("A", "b")], reward=1)
    direct = build(data=data, tags=[("A", "b")], reward=1)
    assert streamed.data_root == direct.data_root == tree.root
    assert sign(streamed, rsa_wallet).signature_data() == sign(direct, rsa_wallet).signature_data()


# -- strict header parsing ----------------------------------------------------


@pytest.fixture(scope="module")
def good_header(ours: list[txmod.Transaction]) -> dict[str, Any]:
    return ours[0].to_header(include_data=True)


def test_good_header_round_trips(good_header: dict[str, Any], ours: list[txmod.Transaction]) -> None:
    tx = parse_header(good_header)
    assert tx == ours[0] and tx.data == ours[0].data
    assert verify_header(good_header)
    assert verify_header(ours[1].to_header())  # chunked: data ""


def _mutations(header: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    def changed(**fields: Any) -> dict[str, Any]:
        out = copy.deepcopy(header)
        out.update(fields)
        return out

    missing = copy.deepcopy(header)
    del missing["reward"]
    long_tags = [{"name": b64url_encode(b"n" * 1000), "value": b64url_encode(b"v" * 1049)}]
    return [
        ("missing field", missing),
        ("unknown field", changed(extra="x")),
        ("format 1", changed(format=1)),
        ("id not the signature hash", changed(id=b64url_encode(bytes(32)))),
        ("owner too short", changed(owner=b64url_encode(bytes(256)))),
        ("signature not base64url", changed(signature="!!")),
        ("leading zero", changed(quantity="01")),
        ("negative", changed(reward="-1")),
        ("22 digits", changed(reward="1" * 22)),
        ("number not string", changed(data_size=1000.0)),
        ("data_root with no data", changed(data_size="0", data="")),
        ("inline data not matching", changed(data=b64url_encode(b"x" * 1000))),
        ("bad last_tx length", changed(last_tx=b64url_encode(bytes(31)))),
        ("tags not a list", changed(tags={})),
        ("tag with extra key", changed(tags=[{"name": "QQ", "value": "Yg", "x": ""}])),
        ("tags over 2048 bytes", changed(tags=long_tags)),
        ("data_tree not empty", changed(data_tree=["x"])),
    ]


def test_malformed_headers_are_refused(good_header: dict[str, Any]) -> None:
    for reason, header in _mutations(good_header):
        with pytest.raises(TransactionError):
            parse_header(header)
        assert not verify_header(header), reason


def test_transfer_rules(rsa_wallet: Wallet) -> None:
    with pytest.raises(TransactionError):
        build(quantity=5)  # no target
    own_address = rsa_wallet.address
    with pytest.raises(TransactionError):
        sign(build(target=own_address, quantity=5), rsa_wallet)
    with pytest.raises(TransactionError):
        build(data=b"x", reward=1.5)  # type: ignore[arg-type]


def test_unsigned_transactions_have_no_id_and_do_not_verify() -> None:
    tx = build(data=b"abc")
    with pytest.raises(TransactionError):
        _ = tx.id
    assert not txmod.verify_transaction(tx)


# -- arweave-python-client faults we work around ------------------------------


def test_arweave_python_client_faults(rsa_wallet: Wallet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wallet.verify() does nothing; reading json_data twice re-encodes the tags; the URL is two constants."""
    assert arweave_lib.API_URL == transaction_uploader.API_URL == "https://arweave.net"
    wallet = arweave_lib.Wallet.from_data(rsa_wallet.to_jwk())
    assert wallet.verify() is None
    # Keep it offline: the constructor and sign() would fetch /tx_anchor and /price from API_URL.
    monkeypatch.setattr(arweave_lib.Wallet, "get_last_transaction_id", lambda self: "")
    monkeypatch.setattr(arweave_lib.Transaction, "get_reward", lambda self, *a, **k: "0")
    theirs = arweave_lib.Transaction(wallet, data=b"hello")
    theirs.add_tag("App", "x")
    theirs.sign()
    first = json.loads(theirs.json_data)["tags"]
    second = json.loads(theirs.json_data)["tags"]
    assert first == [{"name": b64url_encode(b"App"), "value": b64url_encode(b"x")}]
    assert second != first  # double-encoded
    assert b64url_decode(second[0]["name"]) == first[0]["name"].encode()
