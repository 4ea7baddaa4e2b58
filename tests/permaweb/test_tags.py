"""ANS-104 tag encoding: Avro arrays of (name, value), bounds, and every malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ao.permaweb import tags as tag_codec
from ao.permaweb.tags import (
    MAX_TAG_NAME_BYTES,
    MAX_TAG_VALUE_BYTES,
    MAX_TAGS,
    MAX_TAGS_BYTES,
    TagError,
    decode_tags,
    encode_tags,
)

PROPERTY = settings(max_examples=150, deadline=None)

tag_text = st.text(max_size=24)
tag_pair = st.tuples(tag_text.filter(lambda s: len(s) > 0), tag_text)
tag_lists = st.lists(tag_pair, max_size=12)


def avro_long(value: int) -> bytes:
    """Reference zig-zag varint, written independently of the module under test."""
    zigzag = value * 2 if value >= 0 else -value * 2 - 1
    out = bytearray()
    while True:
        low = zigzag % 128
        zigzag //= 128
        if zigzag:
            out.append(low + 128)
        else:
            out.append(low)
            return bytes(out)


def avro_item(name: str, value: str) -> bytes:
    """One record: length-prefixed name then value."""
    n, v = name.encode(), value.encode()
    return avro_long(len(n)) + n + avro_long(len(v)) + v


def avro_blocks(tags: list[tuple[str, str]], split: list[int], negative: list[bool]) -> bytes:
    """Encode tags as several blocks (sizes from split), negative-count blocks carrying their byte size."""
    out = bytearray()
    rest = list(tags)
    for size, neg in zip(split, negative):
        block, rest = rest[:size], rest[size:]
        if not block:
            continue
        body = b"".join(avro_item(n, v) for n, v in block)
        out += avro_long(-len(block)) + avro_long(len(body)) if neg else avro_long(len(block))
        out += body
    if rest:
        out += avro_long(len(rest)) + b"".join(avro_item(n, v) for n, v in rest)
    return bytes(out + avro_long(0))


def test_no_tags_encode_to_zero_bytes() -> None:
    assert encode_tags([]) == b""
    assert decode_tags(b"") == ()


def test_empty_avro_array_decodes_to_no_tags() -> None:
    assert decode_tags(b"\x00") == ()


def test_single_tag_matches_known_encoding() -> None:
    # count 1 -> 0x02, len 1 -> 0x02, "a", len 1, "b", terminator 0x00 (what arbundles writes).
    assert encode_tags([("a", "b")]) == b"\x02\x02a\x02b\x00"


def test_non_ascii_tag_matches_arbundles_vector() -> None:
    # Recorded from arbundles 0.11.2 serializeTags([{name: "Grüße", value: "🦙"}]).
    raw = bytes.fromhex("020e4772c3bcc39f6508f09fa69900")
    assert encode_tags([("Grüße", "🦙")]) == raw
    assert decode_tags(raw) == (("Grüße", "🦙"),)


def test_lengths_of_64_bytes_and_more_take_two_varint_bytes() -> None:
    name = "n" * 64  # zig-zag 128 -> 0x80 0x01
    raw = encode_tags([(name, "")])
    assert raw == b"\x02\x80\x01" + name.encode() + b"\x00\x00"
    assert decode_tags(raw) == ((name, ""),)


def test_empty_values_are_allowed() -> None:
    assert decode_tags(encode_tags([("Name", "")])) == (("Name", ""),)


def test_largest_single_tag_within_the_total_limit_round_trips() -> None:
    tags = [("n" * 1000, "v" * MAX_TAG_VALUE_BYTES)]
    raw = encode_tags(tags)
    assert len(raw) <= MAX_TAGS_BYTES
    assert decode_tags(raw) == tuple(tags)


def test_exactly_max_tags_round_trip() -> None:
    tags = [(f"k{i}", str(i)) for i in range(MAX_TAGS)]
    assert decode_tags(encode_tags(tags)) == tuple(tags)


@PROPERTY
@given(tag_lists)
def test_decode_inverts_encode(tags: list[tuple[str, str]]) -> None:
    assert decode_tags(encode_tags(tags)) == tuple(tags)


@PROPERTY
@given(tag_lists)
def test_encoding_matches_reference_single_block(tags: list[tuple[str, str]]) -> None:
    expected = b"" if not tags else avro_long(len(tags)) + b"".join(avro_item(n, v) for n, v in tags) + b"\x00"
    assert encode_tags(tags) == expected


@PROPERTY
@given(
    tag_lists,
    st.lists(st.integers(min_value=0, max_value=4), max_size=6),
    st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_any_avro_block_layout_decodes_to_the_same_tags(
    tags: list[tuple[str, str]], split: list[int], negative: list[bool]
) -> None:
    assert decode_tags(avro_blocks(tags, split, negative)) == tuple(tags)


@PROPERTY
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_tag_error(raw: bytes) -> None:
    try:
        tags = decode_tags(raw)
    except TagError as exc:
        assert str(exc)
    else:
        assert all(isinstance(n, str) and n and isinstance(v, str) for n, v in tags)


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ([(f"k{i}", "v") for i in range(MAX_TAGS + 1)], "129 tags, over the ANS-104 limit of 128"),
        ([("", "v")], "name is empty"),
        ([("n" * (MAX_TAG_NAME_BYTES + 1), "v")], "name is 1025 bytes, over the 1024-byte limit"),
        ([("n", "v" * (MAX_TAG_VALUE_BYTES + 1))], "value is 3073 bytes, over the 3072-byte limit"),
        ([("ü" * 513, "v")], "name is 1026 bytes"),  # the limit is in bytes, not characters
        ([("n" * MAX_TAG_NAME_BYTES, "v" * MAX_TAG_VALUE_BYTES)], "over the 4096-byte limit"),
        ([("n", 1)], "tag #0 value must be a str, got int"),
        ([(b"n", "v")], "tag #0 name must be a str, got bytes"),
        ([("n", "\ud800")], "not encodable as UTF-8"),
        (["nv"], "must be a (name, value) pair"),
        ([("n", "v", "x")], "must be a (name, value) pair"),
    ],
)
def test_encode_rejects_bad_tags(tags: list, message: str) -> None:
    with pytest.raises(TagError) as info:
        encode_tags(tags)
    assert message in str(info.value)


def test_encode_error_names_the_offending_tag() -> None:
    with pytest.raises(TagError, match=r"tag #2 \('Big'\): the value is 3073 bytes"):
        encode_tags([("a", "1"), ("b", "2"), ("Big", "x" * 3073)])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x02\x02a\x02b", "end inside the block count"),  # no terminator
        (b"\x02\x02a", "end inside the tag #0 value length"),
        (b"\x02\x0aab", "claims 5 bytes; only 2 remain"),
        (b"\x02\x01", "negative length (-1)"),
        (b"\x02\x00\x00\x00", "name is empty"),
        (b"\x02\x02a\x02b\x00\x00", "1 stray bytes after the end"),
        (b"\x02\x02\xff\x02b\x00", "not valid UTF-8"),
        (b"\x02\x02a\x02\xc3\x00", "tag #0 value is not valid UTF-8"),
        (b"\x01\x02\x02a\x02b\x00", "declares 1 bytes but its items take 4"),  # count -1, size 1
        (b"\x01\x01\x02a\x02b\x00", "negative byte size"),
        (b"\xff" * 11, "not a 64-bit Avro long"),
        (avro_long(MAX_TAGS + 1), "more than 128 tags"),
        (avro_long(-(2**63)) + b"\x00", "more than 128 tags"),
        (b"\x02" + avro_long(MAX_TAG_NAME_BYTES + 1), "is 1025 bytes, over the 1024-byte limit"),
        (b"\x00" * (MAX_TAGS_BYTES + 1), "4097 tag bytes, over the 4096-byte limit"),
    ],
)
def test_decode_rejects_malformed_bytes(raw: bytes, message: str) -> None:
    with pytest.raises(TagError) as info:
        decode_tags(raw)
    assert message in str(info.value)


def test_decode_counts_tags_across_blocks_against_the_limit() -> None:
    half = [(f"k{i}", "") for i in range(65)]
    raw = avro_blocks(half + half, [65, 65], [False, True])
    with pytest.raises(TagError, match="more than 128 tags"):
        decode_tags(raw)


@given(st.lists(st.tuples(st.text(min_size=1, max_size=200), st.text(max_size=300)), max_size=140))
@settings(max_examples=200)
def test_encoded_length_agrees_with_encoding_and_its_refusals(pairs: list[tuple[str, str]]) -> None:
    try:
        expected: int | str = len(tag_codec.encode_tags(pairs))
    except tag_codec.TagError as exc:
        expected = str(exc)
    try:
        got: int | str = tag_codec.encoded_length(pairs)
    except tag_codec.TagError as exc:
        got = str(exc)
    assert got == expected


@PROPERTY
@given(st.one_of(st.binary(max_size=96), tag_lists.map(encode_tags)))
def test_the_common_case_reader_agrees_with_the_general_one(raw: bytes) -> None:
    fast = tag_codec._decode_short(raw) if raw else None
    if fast is not None:  # it declines whatever it does not cover; what it reads, it reads as the general reader
        assert tag_codec._decode_general(raw) == fast


def test_the_common_case_paths_cover_typical_tags_and_decline_the_rest() -> None:
    typical = [("Action", "Transfer"), ("Recipient", "r" * 43), ("Quantity", "1")]
    assert tag_codec._encode_short(typical) == avro_long(3) + b"".join(avro_item(n, v) for n, v in typical) + b"\x00"
    assert tag_codec._decode_short(encode_tags(typical)) == tuple(typical)
    assert tag_codec._encode_short([("n", "v" * 64)]) is None  # a two-byte length
    assert tag_codec._encode_short(["nv"]) is None  # not a pair: the general path says so
    assert tag_codec._decode_short(avro_blocks(typical, [1, 2], [True, False])) is None  # a sized block
