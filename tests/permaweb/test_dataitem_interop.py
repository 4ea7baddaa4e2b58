"""ANS-104 data items proven against arbundles 0.11.2, in both directions.

One node run per module (tests/interop/dataitem.mjs) signs the same items with
arbundles and verifies ours; the tests then compare field by field and byte by
byte. Ed25519 signatures are deterministic, so type-2 items must be identical
outright; RSA-PSS is salted, so type-1 items are compared with the signature zeroed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from ao.permaweb.b64 import b64url_decode, b64url_encode
from ao.permaweb.dataitem import DataItem, DataItemError, create_data_item, parse, signature_data, verify
from ao.permaweb.tags import MAX_TAGS, MAX_TAGS_BYTES, encode_tags
from ao.permaweb.wallet import PSS_SIGN_SALT, SCHEMES, Ed25519Key, Wallet
from tests.nodejs import run_node

pytestmark = pytest.mark.interop

SCRIPT = "dataitem.mjs"
ED25519_SEED = bytes(range(1, 33))
TARGET = b64url_encode(bytes(range(32)))
ANCHOR_TEXT = "ao-anchor-0123456789abcdefghijkl"  # 32 ASCII characters
LARGE_DATA_BYTES = 100 * 1024
SIGNATURE_OFFSET = 2  # the signature follows the u16 signature type
PSS_HASH_BYTES = 32  # SHA-256
# arbundles (through arweave-js's node driver) uses the longest salt: 512 - 32 - 2 bytes.
ARBUNDLES_PSS_SALT = 478
TARGET_FLAG_OFFSET = {t: 2 + s.signature_length + s.owner_length for t, s in SCHEMES.items()}


@dataclass(frozen=True)
class Case:
    """The fields of one item, signed identically by arbundles and by us."""

    name: str
    data: bytes = b""
    tags: tuple[tuple[str, str], ...] = ()
    target: str | None = None
    anchor: str | None = None  # given to both sides as this string (UTF-8)
    anchor_raw: bytes | None = None  # given to both sides as raw bytes

    @property
    def anchor_bytes(self) -> bytes:
        """The 32 anchor bytes both implementations should store (b"" when absent)."""
        if self.anchor_raw is not None:
            return self.anchor_raw
        return (self.anchor or "").encode()

    def create(self, signer: Wallet | Ed25519Key) -> DataItem:
        """Sign this case here."""
        anchor = self.anchor_raw if self.anchor_raw is not None else self.anchor
        return create_data_item(signer, self.data, tags=self.tags, target=self.target, anchor=anchor)

    def node_request(self, op: str, **key: Any) -> dict[str, Any]:
        """The dataitem.mjs request that signs this case with arbundles."""
        return {
            "op": op,
            **key,
            "data_b64": b64url_encode(self.data),
            "tags": [list(t) for t in self.tags],
            "target": self.target,
            "anchor": self.anchor,
            "anchor_b64": None if self.anchor_raw is None else b64url_encode(self.anchor_raw),
        }


CASES = [
    Case("empty"),
    Case("plain", b"hello", (("Content-Type", "text/plain"),)),
    Case("target", b"to a process", (("Action", "Eval"),), target=TARGET),
    Case("anchor_text", b"x", anchor=ANCHOR_TEXT),
    Case("anchor_utf8", b"x", anchor="é" * 16),
    Case("anchor_raw", b"x", anchor_raw=bytes(range(0xE0, 0x100))),  # not valid UTF-8
    Case("target_and_anchor", b"both", (("Data-Protocol", "ao"),), target=TARGET, anchor=ANCHOR_TEXT),
    Case(
        "unicode",
        "Grüße, 世界 🦙".encode(),
        (("Grüße", "Привет мир"), ("emoji 🦙🚀", "✨🎉"), ("漢字", "日本語のテキスト"), ("Data-Protocol", "ao")),
    ),
    Case("many_tags", b"m", tuple((f"Tag-{i}", f"value {i}") for i in range(MAX_TAGS))),
    # Strings over 64 bytes take a different path in arbundles' encoder; this one fills the tag budget.
    Case("long_tags", b"l", (("Ü" * 500, "日" * 1000),)),
    Case("empty_value", b"e", (("Empty", ""), ("Next", "v"))),
    Case("large", os.urandom(LARGE_DATA_BYTES), (("Content-Type", "application/octet-stream"),), TARGET, ANCHOR_TEXT),
]
SIGNERS = ["rsa", "ed25519"]
PARAMS = [pytest.param(case, signer, id=f"{case.name}-{signer}") for case in CASES for signer in SIGNERS]


@dataclass
class Interop:
    """Our items, arbundles' items, and what each side said about the other's."""

    signers: dict[str, Wallet | Ed25519Key]
    ours: dict[tuple[str, str], DataItem] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def result(self, key: str) -> dict[str, Any]:
        """The node result for a request, failing with node's error if it had one."""
        result = self.results[key]
        assert "error" not in result, f"arbundles failed on {key}: {result['error']}"
        return result


def sign_with_raw_tags(signer: Ed25519Key, raw_tags: bytes, tags: tuple[tuple[str, str], ...]) -> DataItem:
    """Sign an item with tag bytes encoded outside encode_tags (bypassing its checks)."""
    unsigned = DataItem(2, bytes(64), signer.owner, b"", b"", tags, raw_tags, b"raw tags")
    return replace(unsigned, signature=signer.sign(signature_data(unsigned)))


def zero_signature(item: DataItem) -> bytes:
    """The serialization with the signature bytes zeroed."""
    return replace(item, signature=bytes(len(item.signature))).serialize()


def with_target_flag(raw: bytes, signature_type: int, flag: int) -> bytes:
    """raw with its target presence flag overwritten."""
    at = TARGET_FLAG_OFFSET[signature_type]
    return raw[:at] + bytes([flag]) + raw[at + 1 :]


# Tag bytes that are valid per tag but over arbundles' 4096-byte total (two ~2.1 KB values).
OVERSIZED_TAGS = (("a", "x" * 2100), ("b", "y" * 2100))
OVERSIZED_RAW_TAGS = (
    b"\x04" + b"".join(b"\x02" + n.encode() + b"\xe8\x20" + v.encode() for n, v in OVERSIZED_TAGS) + b"\x00"
)
# Two Avro blocks, the first with a negative count and a byte size, as Avro writers may emit.
MULTI_BLOCK_RAW_TAGS = b"\x01\x08\x02a\x02b" + b"\x04\x02c\x02d\x02e\x08\xc3\xa9\xc3\xa9" + b"\x00"
MULTI_BLOCK_TAGS = (("a", "b"), ("c", "d"), ("e", "éé"))
ENCODE_VECTORS = [[], [("a", "b")], [("Grüße", "🦙")], [("n" * 64, "v" * 200)], list(next(c for c in CASES if c.name == "unicode").tags)]


@pytest.fixture(scope="module")
def interop() -> Interop:
    """Sign every case on both sides and cross-verify, in one node run."""
    wallet = Wallet.generate()
    ed_key = Ed25519Key.from_seed(ED25519_SEED)
    ed_seed = b64url_encode(ED25519_SEED)
    run = Interop(signers={"rsa": wallet, "ed25519": ed_key})
    requests: dict[str, dict[str, Any]] = {}
    for case in CASES:
        requests[f"sign/{case.name}/rsa"] = case.node_request("sign", jwk=wallet.to_jwk())
        requests[f"sign/{case.name}/ed25519"] = case.node_request("sign_ed25519", seed_b64=ed_seed)
        for signer_name, signer in run.signers.items():
            item = case.create(signer)
            run.ours[(case.name, signer_name)] = item
            requests[f"verify/{case.name}/{signer_name}"] = {"op": "verify", "raw_b64": b64url_encode(item.serialize())}

    plain_rsa = run.ours[("plain", "rsa")]
    plain_ed = run.ours[("plain", "ed25519")]
    tampered_data = plain_rsa.serialize()[:-1] + b"?"
    flipped_sig = replace(plain_ed, signature=bytes([plain_ed.signature[0] ^ 1]) + plain_ed.signature[1:])
    extra = {
        "verify/tampered_data": tampered_data,
        "verify/flipped_signature": flipped_sig.serialize(),
        "verify/multi_block": sign_with_raw_tags(ed_key, MULTI_BLOCK_RAW_TAGS, MULTI_BLOCK_TAGS).serialize(),
        "verify/oversized_tags": sign_with_raw_tags(ed_key, OVERSIZED_RAW_TAGS, OVERSIZED_TAGS).serialize(),
        "verify/zero_tags_as_avro_array": sign_with_raw_tags(ed_key, b"\x00", ()).serialize(),
        "verify/target_flag_2": with_target_flag(plain_ed.serialize(), 2, 2),
    }
    for key, raw in extra.items():
        requests[key] = {"op": "verify", "raw_b64": b64url_encode(raw)}
    requests["sign/129_tags"] = Case("t", b"", tuple((f"k{i}", "v") for i in range(MAX_TAGS + 1))).node_request(
        "sign_ed25519", seed_b64=ed_seed
    )
    requests["sign/empty_tag_name"] = Case("t", b"", (("", "v"),)).node_request("sign_ed25519", seed_b64=ed_seed)
    requests["deserialize/multi_block"] = {"op": "deserialize_tags", "raw_b64": b64url_encode(MULTI_BLOCK_RAW_TAGS)}
    for index, tags in enumerate(ENCODE_VECTORS):
        requests[f"serialize/{index}"] = {"op": "serialize_tags", "tags": [list(t) for t in tags]}

    keys = list(requests)
    response = run_node(SCRIPT, {"cases": [requests[k] for k in keys]})
    assert len(response["results"]) == len(keys)
    run.results = dict(zip(keys, response["results"]))
    return run


# --- our items in arbundles -------------------------------------------------------


@pytest.mark.parametrize(("case", "signer"), PARAMS)
def test_arbundles_verifies_our_item_and_reads_the_same_fields(interop: Interop, case: Case, signer: str) -> None:
    ours = interop.ours[(case.name, signer)]
    seen = interop.result(f"verify/{case.name}/{signer}")
    assert seen["valid"] is True
    assert seen["id"] == ours.id
    assert seen["signature_type"] == ours.signature_type
    assert seen["owner"] == ours.owner_b64
    assert seen["target"] == ours.target_b64 == (case.target or "")
    assert seen["anchor"] == ours.anchor_b64 == b64url_encode(case.anchor_bytes)
    assert [tuple(t) for t in seen["tags"]] == list(case.tags)
    assert seen["data_b64"] == b64url_encode(case.data)
    assert seen["raw_tags_b64"] == b64url_encode(ours.raw_tags)
    assert seen["signature_data_b64"] == b64url_encode(signature_data(ours))


# --- arbundles' items here --------------------------------------------------------


@pytest.mark.parametrize(("case", "signer"), PARAMS)
def test_we_verify_arbundles_item_and_read_the_same_fields(interop: Interop, case: Case, signer: str) -> None:
    signed = interop.result(f"sign/{case.name}/{signer}")
    item = parse(b64url_decode(signed["raw_b64"]))
    assert verify(item)
    assert item.id == signed["id"]
    assert item.signature_type == interop.signers[signer].signature_type
    assert item.owner == interop.signers[signer].owner
    assert item.target_b64 == (case.target or "")
    assert item.anchor == case.anchor_bytes
    assert item.tags == case.tags
    assert item.data == case.data
    assert signature_data(item) == b64url_decode(signed["signature_data_b64"])


@pytest.mark.parametrize(("case", "signer"), PARAMS)
def test_items_are_byte_identical_apart_from_the_salted_signature(interop: Interop, case: Case, signer: str) -> None:
    ours = interop.ours[(case.name, signer)]
    theirs = parse(b64url_decode(interop.result(f"sign/{case.name}/{signer}")["raw_b64"]))
    assert zero_signature(theirs) == zero_signature(ours)
    assert signature_data(theirs) == signature_data(ours)
    if signer == "ed25519":  # deterministic signatures: the whole item, and so the id, must match
        assert theirs.serialize() == ours.serialize()
        assert theirs.id == ours.id


def pss_salt_length(owner: bytes, signature: bytes) -> int:
    """Recover the salt length of an RSA-PSS/SHA-256 signature (RFC 8017 §9.1.2, e = 65537)."""
    modulus = int.from_bytes(owner, "big")
    encoded = pow(int.from_bytes(signature, "big"), 65537, modulus).to_bytes(len(owner), "big")
    assert encoded[-1] == 0xBC
    digest = encoded[-1 - PSS_HASH_BYTES : -1]
    masked = encoded[: -1 - PSS_HASH_BYTES]
    mask = b"".join(
        hashlib.sha256(digest + counter.to_bytes(4, "big")).digest()
        for counter in range(-(-len(masked) // PSS_HASH_BYTES))
    )
    db = bytes(a ^ b for a, b in zip(masked, mask))
    db = bytes([db[0] & 0x7F]) + db[1:]  # emBits = 4095: the top bit is not part of the encoding
    separator = len(db) - len(db.lstrip(b"\x00"))
    assert db[separator] == 0x01
    return len(db) - separator - 1


def test_arbundles_signs_rsa_with_the_longest_salt_and_both_sides_accept_either(interop: Interop) -> None:
    theirs = parse(b64url_decode(interop.result("sign/plain/rsa")["raw_b64"]))
    ours = interop.ours[("plain", "rsa")]
    assert pss_salt_length(theirs.owner, theirs.signature) == ARBUNDLES_PSS_SALT
    assert pss_salt_length(ours.owner, ours.signature) == PSS_SIGN_SALT
    assert verify(theirs)
    assert interop.result("verify/plain/rsa")["valid"] is True


# --- agreement on bad items ---------------------------------------------------------


def test_arbundles_rejects_our_item_with_tampered_data(interop: Interop) -> None:
    assert interop.result("verify/tampered_data")["valid"] is False


def test_arbundles_rejects_our_item_with_a_wrong_signature(interop: Interop) -> None:
    assert interop.result("verify/flipped_signature")["valid"] is False


def test_both_reject_tags_over_4096_bytes(interop: Interop) -> None:
    assert len(OVERSIZED_RAW_TAGS) > MAX_TAGS_BYTES
    assert interop.result("verify/oversized_tags")["valid"] is False
    item = sign_with_raw_tags(Ed25519Key.from_seed(ED25519_SEED), OVERSIZED_RAW_TAGS, OVERSIZED_TAGS)
    with pytest.raises(DataItemError, match="over the 4096-byte limit"):
        parse(item.serialize())


def test_multi_block_avro_tags_read_the_same_on_both_sides(interop: Interop) -> None:
    seen = interop.result("verify/multi_block")
    assert seen["valid"] is True
    assert [tuple(t) for t in seen["tags"]] == list(MULTI_BLOCK_TAGS)
    assert [tuple(t) for t in interop.result("deserialize/multi_block")["tags"]] == list(MULTI_BLOCK_TAGS)
    assert seen["raw_tags_b64"] == b64url_encode(MULTI_BLOCK_RAW_TAGS)
    signed = sign_with_raw_tags(Ed25519Key.from_seed(ED25519_SEED), MULTI_BLOCK_RAW_TAGS, MULTI_BLOCK_TAGS)
    ours = parse(signed.serialize())
    assert ours.tags == MULTI_BLOCK_TAGS and ours.raw_tags == MULTI_BLOCK_RAW_TAGS
    assert verify(ours) and ours.id == seen["id"]


@pytest.mark.parametrize("index", range(len(ENCODE_VECTORS)))
def test_tag_encoding_matches_arbundles_serialize_tags(interop: Interop, index: int) -> None:
    assert interop.result(f"serialize/{index}")["raw_b64"] == b64url_encode(encode_tags(ENCODE_VECTORS[index]))


# --- where we are deliberately stricter than arbundles ---------------------------------


def test_arbundles_signs_129_tags_which_ans104_forbids_and_we_reject(interop: Interop) -> None:
    raw = b64url_decode(interop.result("sign/129_tags")["raw_b64"])
    with pytest.raises(DataItemError, match="declares 129 tags, over the ANS-104 limit of 128"):
        parse(raw)


def test_arbundles_signs_an_empty_tag_name_which_we_reject(interop: Interop) -> None:
    raw = b64url_decode(interop.result("sign/empty_tag_name")["raw_b64"])
    with pytest.raises(DataItemError, match="the name is empty"):
        parse(raw)


def test_zero_tags_written_as_an_avro_array_are_accepted_as_arbundles_accepts_them(interop: Interop) -> None:
    # Avro libraries write an empty array as one 0x00 byte; the signature covers that byte, so the item is kept whole.
    seen = interop.result("verify/zero_tags_as_avro_array")
    item = sign_with_raw_tags(Ed25519Key.from_seed(ED25519_SEED), b"\x00", ())
    parsed = parse(item.serialize())
    assert seen["valid"] is True and seen["id"] == parsed.id and parsed.tags == () and parsed.raw_tags == b"\x00"
    assert parsed.id == item.id and parsed.serialize() == item.serialize()
    assert verify(parsed)


def test_arbundles_accepts_presence_flag_2_so_items_are_malleable_and_we_reject(interop: Interop) -> None:
    # The flag byte is not signed: arbundles reads 2 as "absent", so the altered bytes keep the same id.
    original = interop.ours[("plain", "ed25519")]
    seen = interop.result("verify/target_flag_2")
    assert seen["valid"] is True and seen["id"] == original.id and seen["target"] == ""
    with pytest.raises(DataItemError, match="target presence flag at offset 98 is 2"):
        parse(with_target_flag(original.serialize(), 2, 2))
