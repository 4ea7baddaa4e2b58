"""ANS-104 data items: layout, signing, strict parsing, verification."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ao.permaweb.b64 import b64url_encode
from ao.permaweb.dataitem import (
    DataItem,
    DataItemError,
    create_data_item,
    parse,
    signature_data,
    verify,
)
from ao.permaweb.deephash import deep_hash
from ao.permaweb.tags import encode_tags
from ao.permaweb.wallet import SCHEMES, Ed25519Key, Wallet

PROPERTY = settings(max_examples=60, deadline=None)
ED25519_SEED = bytes(range(32))
TARGET_RAW = bytes(range(100, 132))
TARGET = b64url_encode(TARGET_RAW)
ANCHOR_TEXT = "anchor-0123456789abcdefghijklmno"  # 32 ASCII characters, as AO writes anchors

tag_text = st.text(max_size=16)
tag_lists = st.lists(st.tuples(tag_text.filter(bool), tag_text), max_size=8)
optional_32 = st.one_of(st.just(b""), st.binary(min_size=32, max_size=32))


@pytest.fixture(scope="module")
def wallet() -> Wallet:
    """One RSA-4096 wallet for the module (generation takes most of a second)."""
    return Wallet.generate()


@pytest.fixture(scope="module")
def ed_key() -> Ed25519Key:
    """A fixed Ed25519 key, so failures reproduce."""
    return Ed25519Key.from_seed(ED25519_SEED)


@st.composite
def data_items(draw: st.DrawFn) -> DataItem:
    """Structurally valid items with random (unverifiable) signatures."""
    signature_type = draw(st.sampled_from(sorted(SCHEMES)))
    scheme = SCHEMES[signature_type]
    tags = tuple(draw(tag_lists))
    return DataItem(
        signature_type=signature_type,
        signature=draw(st.binary(min_size=scheme.signature_length, max_size=scheme.signature_length)),
        owner=draw(st.binary(min_size=scheme.owner_length, max_size=scheme.owner_length)),
        target=draw(optional_32),
        anchor=draw(optional_32),
        tags=tags,
        raw_tags=encode_tags(tags),
        data=draw(st.binary(max_size=256)),
    )


def sign_raw_tags(signer: Ed25519Key, raw_tags: bytes, tags: tuple[tuple[str, str], ...], data: bytes) -> DataItem:
    """Sign an item whose tag bytes were encoded elsewhere (e.g. in several Avro blocks)."""
    unsigned = DataItem(2, bytes(64), signer.owner, b"", b"", tags, raw_tags, data)
    return replace(unsigned, signature=signer.sign(signature_data(unsigned)))


# --- layout -----------------------------------------------------------------


def test_serialization_follows_the_ans104_layout(ed_key: Ed25519Key) -> None:
    item = create_data_item(ed_key, b"payload", tags=[("a", "b")], target=TARGET, anchor=ANCHOR_TEXT)
    expected = (
        b"\x02\x00"  # signature type 2, little-endian u16
        + item.signature
        + ed_key.owner
        + b"\x01" + TARGET_RAW
        + b"\x01" + ANCHOR_TEXT.encode()
        + (1).to_bytes(8, "little")
        + (6).to_bytes(8, "little")
        + b"\x02\x02a\x02b\x00"
        + b"payload"
    )
    assert item.serialize() == expected


def test_absent_target_and_anchor_are_single_zero_flags(wallet: Wallet) -> None:
    item = create_data_item(wallet, b"xyz")
    raw = item.serialize()
    assert raw[:2] == b"\x01\x00"
    assert raw[2 + 512 + 512 :] == b"\x00\x00" + bytes(16) + b"xyz"
    assert len(raw) == 2 + 512 + 512 + 1 + 1 + 16 + 3


def test_signature_data_is_the_deep_hash_of_the_item_fields(ed_key: Ed25519Key) -> None:
    item = create_data_item(ed_key, b"d", tags=[("k", "v")], target=TARGET, anchor=ANCHOR_TEXT)
    expected = deep_hash(
        [b"dataitem", b"1", b"2", ed_key.owner, TARGET_RAW, ANCHOR_TEXT.encode(), b"\x02\x02k\x02v\x00", b"d"]
    )
    assert signature_data(item) == expected
    assert len(expected) == 48


def test_id_is_sha256_of_the_signature(ed_key: Ed25519Key) -> None:
    item = create_data_item(ed_key, b"d")
    assert item.id == b64url_encode(hashlib.sha256(item.signature).digest())
    assert len(item.id) == 43


def test_owner_fields(wallet: Wallet, ed_key: Ed25519Key) -> None:
    rsa_item = create_data_item(wallet, b"")
    ed_item = create_data_item(ed_key, b"")
    assert rsa_item.owner == wallet.owner and len(rsa_item.owner) == 512
    assert rsa_item.owner_address == wallet.address
    assert rsa_item.owner_b64 == b64url_encode(wallet.owner)
    assert ed_item.owner_address == ed_key.address
    assert ed_item.owner_b64 == b64url_encode(ed_key.owner)


def test_tag_returns_the_first_value_with_that_name(ed_key: Ed25519Key) -> None:
    item = create_data_item(ed_key, b"", tags=[("Action", "Eval"), ("Ref", "1"), ("Action", "Later")])
    assert item.tag("Action") == "Eval"
    assert item.tag("Ref") == "1"
    assert item.tag("action") is None
    assert item.tags == (("Action", "Eval"), ("Ref", "1"), ("Action", "Later"))


# --- target and anchor conventions --------------------------------------------


def test_target_is_base64url_of_32_bytes(ed_key: Ed25519Key) -> None:
    item = create_data_item(ed_key, b"", target=TARGET)
    assert item.target == TARGET_RAW
    assert item.target_b64 == TARGET


def test_string_anchor_is_utf8_encoded_and_reported_as_base64url(ed_key: Ed25519Key) -> None:
    item = create_data_item(ed_key, b"", anchor=ANCHOR_TEXT)
    assert item.anchor == ANCHOR_TEXT.encode()
    assert item.anchor_b64 == b64url_encode(ANCHOR_TEXT.encode())


def test_non_ascii_string_anchor_counts_utf8_bytes(ed_key: Ed25519Key) -> None:
    anchor = "é" * 16  # 16 characters, 32 bytes
    assert create_data_item(ed_key, b"", anchor=anchor).anchor == anchor.encode()


def test_bytes_anchor_is_taken_raw(ed_key: Ed25519Key) -> None:
    raw = bytes(range(200, 232))
    item = create_data_item(ed_key, b"", anchor=raw)
    assert item.anchor == raw
    assert item.anchor_b64 == b64url_encode(raw)


@pytest.mark.parametrize("empty", [None, "", b""])
def test_empty_target_and_anchor_mean_absent(ed_key: Ed25519Key, empty: str | bytes | None) -> None:
    target = None if isinstance(empty, bytes) else empty
    item = create_data_item(ed_key, b"", target=target, anchor=empty)
    assert item.target == b"" and item.anchor == b""
    assert item.target_b64 == "" and item.anchor_b64 == ""
    assert item.serialize()[2 + 64 + 32 : 2 + 64 + 32 + 2] == b"\x00\x00"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "not base64!"}, "target is not base64url"),
        ({"target": b64url_encode(bytes(31))}, "target decodes to 31 bytes; it must be 32"),
        ({"anchor": "a" * 31}, "anchor is 31 bytes; it must be 32"),
        ({"anchor": "é" * 17}, "anchor is 34 bytes"),
        ({"anchor": bytes(33)}, "anchor is 33 bytes"),
        ({"anchor": 12345}, "anchor must be bytes or str"),
        ({"tags": [("", "v")]}, "name is empty"),
        ({"tags": [("k", "v")] * 129}, "over the ANS-104 limit of 128"),
        ({"tags": [("k", "v" * 3073)]}, "over the 3072-byte limit"),
    ],
)
def test_create_rejects_bad_fields(ed_key: Ed25519Key, kwargs: dict, message: str) -> None:
    with pytest.raises(DataItemError) as info:
        create_data_item(ed_key, b"data", **kwargs)
    assert message in str(info.value)


def test_create_rejects_text_data(ed_key: Ed25519Key) -> None:
    with pytest.raises(DataItemError, match=r"data must be bytes, got str; encode text first"):
        create_data_item(ed_key, "text")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"signature_type": 3}, "unsupported signature type 3 (supported: 1, 2)"),
        ({"signature": bytes(63)}, "signature is 63 bytes; type 2 needs 64"),
        ({"owner": bytes(512)}, "owner is 512 bytes; type 2 needs 32"),
        ({"target": bytes(31)}, "target is 31 bytes"),
        ({"anchor": bytes(1)}, "anchor is 1 bytes"),
    ],
)
def test_data_item_rejects_wrong_field_lengths(ed_key: Ed25519Key, changes: dict, message: str) -> None:
    item = create_data_item(ed_key, b"")
    with pytest.raises(DataItemError) as info:
        replace(item, **changes)
    assert message in str(info.value)


def test_repr_summarises_instead_of_dumping_data(ed_key: Ed25519Key) -> None:
    item = create_data_item(ed_key, b"x" * 10_000, tags=[("k", "v")])
    text = repr(item)
    assert item.id in text and "<10000 bytes>" in text and len(text) < 400


# --- signing and verification -------------------------------------------------


def test_rsa_item_round_trips_and_verifies(wallet: Wallet) -> None:
    item = create_data_item(wallet, b"hello", tags=[("Content-Type", "text/plain")], target=TARGET, anchor=ANCHOR_TEXT)
    parsed = parse(item.serialize())
    assert parsed == item
    assert verify(parsed)


def test_ed25519_item_round_trips_and_verifies(ed_key: Ed25519Key) -> None:
    item = create_data_item(ed_key, b"hello", tags=[("Grüße", "🦙 日本語")])
    parsed = parse(item.serialize())
    assert parsed == item
    assert verify(parsed)


def test_wrong_signature_does_not_verify(wallet: Wallet, ed_key: Ed25519Key) -> None:
    for signer in (wallet, ed_key):
        item = create_data_item(signer, b"hello")
        flipped = bytes([item.signature[0] ^ 1]) + item.signature[1:]
        assert verify(item)
        assert not verify(replace(item, signature=flipped))


def test_tampered_data_does_not_verify(wallet: Wallet) -> None:
    item = create_data_item(wallet, b"pay 1")
    assert not verify(replace(item, data=b"pay 9"))


def test_signature_by_another_key_does_not_verify(ed_key: Ed25519Key) -> None:
    item = create_data_item(ed_key, b"x")
    other = Ed25519Key.from_seed(bytes(32))
    assert not verify(replace(item, owner=other.owner))


def test_tampered_tags_do_not_verify(ed_key: Ed25519Key) -> None:
    item = create_data_item(ed_key, b"", tags=[("Quantity", "1")])
    forged = (("Quantity", "9"),)
    assert not verify(replace(item, tags=forged, raw_tags=encode_tags(forged)))


def test_tags_disagreeing_with_their_signed_bytes_do_not_verify(ed_key: Ed25519Key) -> None:
    item = create_data_item(ed_key, b"", tags=[("Quantity", "1")])
    assert not verify(replace(item, tags=(("Quantity", "9"),)))
    assert not verify(replace(item, tags=()))


def test_empty_avro_array_for_zero_tags_verifies_and_is_kept_byte_for_byte(ed_key: Ed25519Key) -> None:
    # Avro writes an empty array as one 0x00 byte (arbundles accepts it); the signature covers that byte.
    item = sign_raw_tags(ed_key, b"\x00", (), b"")
    assert verify(item)
    parsed = parse(item.serialize())
    assert (parsed.tags, parsed.raw_tags, parsed.id) == ((), b"\x00", item.id)
    assert verify(parsed) and parsed.serialize() == item.serialize()
    assert not verify(sign_raw_tags(ed_key, b"\x00", (("a", "b"),), b""))  # the tags must still match their bytes


def test_multi_block_tags_are_kept_byte_for_byte(ed_key: Ed25519Key) -> None:
    # Block of count -1 with byte size 4 holding ("a","b"), then a block of 1 holding ("c","d").
    raw_tags = b"\x01\x08\x02a\x02b" + b"\x02\x02c\x02d" + b"\x00"
    item = sign_raw_tags(ed_key, raw_tags, (("a", "b"), ("c", "d")), b"data")
    parsed = parse(item.serialize())
    assert parsed.tags == (("a", "b"), ("c", "d"))
    assert parsed.raw_tags == raw_tags
    assert parsed.serialize() == item.serialize()
    assert verify(parsed)


# --- strict parsing -------------------------------------------------------------


def test_every_truncation_of_the_header_is_reported(ed_key: Ed25519Key) -> None:
    item = create_data_item(ed_key, b"DATA", tags=[("k", "v")], target=TARGET, anchor=ANCHOR_TEXT)
    raw = item.serialize()
    data_start = len(raw) - len(item.data)
    for cut in range(data_start):
        with pytest.raises(DataItemError, match="truncated data item"):
            parse(raw[:cut])


def test_truncation_message_names_the_field() -> None:
    with pytest.raises(DataItemError, match=r"the signature type needs 2 bytes at offset 0, but only 0 remain"):
        parse(b"")
    with pytest.raises(DataItemError, match=r"the owner needs 32 bytes at offset 66, but only 5 remain"):
        parse(b"\x02\x00" + bytes(64) + bytes(5))


def test_truncating_the_data_changes_the_data_not_the_header(ed_key: Ed25519Key) -> None:
    item = create_data_item(ed_key, b"DATA")
    parsed = parse(item.serialize()[:-1])
    assert parsed.data == b"DAT"
    assert not verify(parsed)


@pytest.mark.parametrize("flag", [2, 0x80, 0xFF])
def test_presence_flags_other_than_zero_or_one_are_rejected(ed_key: Ed25519Key, flag: int) -> None:
    raw = bytearray(create_data_item(ed_key, b"").serialize())
    target_flag_at = 2 + 64 + 32
    raw[target_flag_at] = flag
    with pytest.raises(DataItemError, match=rf"target presence flag at offset 98 is {flag}; it must be 0 or 1"):
        parse(bytes(raw))
    raw[target_flag_at] = 0
    raw[target_flag_at + 1] = flag
    with pytest.raises(DataItemError, match=rf"anchor presence flag at offset 99 is {flag}"):
        parse(bytes(raw))


@pytest.mark.parametrize("signature_type", [0, 3, 7, 0xFFFF])
def test_unknown_signature_types_are_rejected(ed_key: Ed25519Key, signature_type: int) -> None:
    raw = create_data_item(ed_key, b"").serialize()
    forged = signature_type.to_bytes(2, "little") + raw[2:]
    with pytest.raises(DataItemError, match=rf"unsupported signature type {signature_type} \(supported: 1, 2\)"):
        parse(forged)


def _with_tag_header(ed_key: Ed25519Key, count: int, raw_tags: bytes) -> bytes:
    """An Ed25519 item (no target or anchor) with the given tag count and tag bytes."""
    head = create_data_item(ed_key, b"").serialize()[: 2 + 64 + 32 + 2]
    return head + count.to_bytes(8, "little") + len(raw_tags).to_bytes(8, "little") + raw_tags + b"data"


@pytest.mark.parametrize(
    ("count", "raw_tags", "message"),
    [
        (2, b"\x02\x02a\x02b\x00", "declares 2 tags but its tag bytes hold 1"),
        (1, b"", "declares 1 tags but its tag bytes hold 0"),
        (0, b"\x02\x02a\x02b\x00", "declares 0 tags but its tag bytes hold 1"),
        (129, b"", "declares 129 tags, over the ANS-104 limit of 128"),
        (1, b"\x02\x02a\x02b", "bad tags: tag bytes end inside the block count"),
        (1, b"\x02\x02\xff\x02b\x00", "bad tags: tag #0 name is not valid UTF-8"),
        (1, b"\x02\x00\x02b\x00", "bad tags: tag #0: the name is empty"),
    ],
)
def test_inconsistent_tag_headers_are_rejected(ed_key: Ed25519Key, count: int, raw_tags: bytes, message: str) -> None:
    with pytest.raises(DataItemError) as info:
        parse(_with_tag_header(ed_key, count, raw_tags))
    assert message in str(info.value)


def test_tag_byte_length_over_the_limit_is_rejected_before_reading(ed_key: Ed25519Key) -> None:
    head = create_data_item(ed_key, b"").serialize()[: 2 + 64 + 32 + 2]
    raw = head + (1).to_bytes(8, "little") + (2**64 - 1).to_bytes(8, "little")
    with pytest.raises(DataItemError, match=r"declares 18446744073709551615 tag bytes, over the 4096-byte limit"):
        parse(raw)


def test_max_size_is_enforced(ed_key: Ed25519Key) -> None:
    raw = create_data_item(ed_key, b"x" * 100).serialize()
    assert parse(raw, max_size=len(raw)).data == b"x" * 100
    with pytest.raises(DataItemError, match=rf"data item is {len(raw)} bytes, over the {len(raw) - 1}-byte limit"):
        parse(raw, max_size=len(raw) - 1)


# --- properties -----------------------------------------------------------------


@PROPERTY
@given(data_items())
def test_parse_inverts_serialize(item: DataItem) -> None:
    assert parse(item.serialize()) == item


@PROPERTY
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_data_item_error(raw: bytes) -> None:
    try:
        item = parse(raw)
    except DataItemError as exc:
        assert str(exc)
    else:
        assert item.serialize() == raw


@PROPERTY
@given(tags=tag_lists, data=st.binary(max_size=128), target=optional_32, anchor=optional_32)
def test_signed_items_verify_after_a_round_trip(
    ed_key: Ed25519Key, tags: list[tuple[str, str]], data: bytes, target: bytes, anchor: bytes
) -> None:
    item = create_data_item(ed_key, data, tags=tags, target=b64url_encode(target) or None, anchor=anchor)
    parsed = parse(item.serialize())
    assert parsed == item
    assert verify(parsed)


@PROPERTY
@given(tags=tag_lists, data=st.binary(max_size=64), position=st.integers(min_value=0), xor=st.integers(1, 255))
def test_any_single_byte_change_breaks_the_item(
    ed_key: Ed25519Key, tags: list[tuple[str, str]], data: bytes, position: int, xor: int
) -> None:
    raw = bytearray(create_data_item(ed_key, data, tags=tags, target=TARGET, anchor=ANCHOR_TEXT).serialize())
    raw[position % len(raw)] ^= xor
    try:
        mutated = parse(bytes(raw))
    except DataItemError:
        return
    assert not verify(mutated)
