"""ANS-104 tags: the Avro encoding of an array of {name, value} records.

Wire format (Avro binary, schema ``{"type": "array", "items": {"type": "record",
"fields": [{"name": "name", "type": "bytes"}, {"name": "value", "type": "bytes"}]}}``):
blocks of ``count`` items, each ``zig-zag varint length + bytes`` for the name then
the value, closed by a zero count. A negative block count means ``|count|`` items
followed by the block's size in bytes. We write one block (as arbundles does); we
read any block layout Avro allows. An empty tag list is zero bytes, not ``0x00``.

Bounds: ANS-104 allows at most 128 tags, names of 1..1024 bytes and values of at
most 3072 bytes. arbundles 0.11.2 enforces none of these per tag; it only refuses
more than 4096 tag bytes in total (``MAX_TAG_BYTES``, when creating and in
``DataItem.verify``), and accepts empty names. We enforce all of them, so every
item we accept is also accepted by arbundles. Empty values are allowed (arbundles
and gateways accept them). Names and values must be valid UTF-8.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# ANS-104 §2.1 limits.
MAX_TAGS = 128
MAX_TAG_NAME_BYTES = 1024
MAX_TAG_VALUE_BYTES = 3072
# arbundles DataItem.verify rejects items whose encoded tags exceed this.
MAX_TAGS_BYTES = 4096
# A 64-bit zig-zag varint takes at most ceil(64 / 7) bytes.
MAX_VARINT_BYTES = 10
_VARINT_PAYLOAD_MASK = 0x7F
_VARINT_CONTINUE = 0x80
_VARINT_SHIFT = 7
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

Tags = tuple[tuple[str, str], ...]


class TagError(ValueError):
    """Tags that cannot be encoded, or bytes that are not a valid ANS-104 tag list."""


def _zigzag_varint(value: int) -> bytes:
    """Avro long: zig-zag then little-endian base-128 varint."""
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > _VARINT_PAYLOAD_MASK:
        out.append((zigzag & _VARINT_PAYLOAD_MASK) | _VARINT_CONTINUE)
        zigzag >>= _VARINT_SHIFT
    out.append(zigzag)
    return bytes(out)


def _utf8(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise TagError(f"{what} must be a str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TagError(f"{what} is not encodable as UTF-8 (lone surrogate?): {text[:40]!r}") from exc


def _check_tag(index: int, name: bytes, value: bytes) -> None:
    if not name:
        raise TagError(f"tag #{index}: the name is empty; ANS-104 tag names must be non-empty")
    if len(name) > MAX_TAG_NAME_BYTES:
        raise TagError(f"tag #{index}: the name is {len(name)} bytes, over the {MAX_TAG_NAME_BYTES}-byte limit")
    if len(value) > MAX_TAG_VALUE_BYTES:
        raise TagError(
            f"tag #{index} ({name[:40].decode('utf-8', 'replace')!r}): the value is {len(value)} bytes, "
            f"over the {MAX_TAG_VALUE_BYTES}-byte limit"
        )


def encode_tags(tags: Iterable[Sequence[str]]) -> bytes:
    """Avro-encode (name, value) pairs as one block; no tags encodes to b""."""
    pairs = list(tags)
    if not pairs:
        return b""
    fast = _encode_short(pairs)
    if fast is not None:
        return fast
    if len(pairs) > MAX_TAGS:
        raise TagError(f"{len(pairs)} tags, over the ANS-104 limit of {MAX_TAGS}")
    out = bytearray(_zigzag_varint(len(pairs)))
    for index, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or len(pair) != 2:
            raise TagError(f"tag #{index} must be a (name, value) pair, got {pair!r:.60}")
        name = _utf8(pair[0], f"tag #{index} name")
        value = _utf8(pair[1], f"tag #{index} value")
        _check_tag(index, name, value)
        for blob in (name, value):
            out += _zigzag_varint(len(blob))
            out += blob
    out += _zigzag_varint(0)
    if len(out) > MAX_TAGS_BYTES:
        raise TagError(f"the tags encode to {len(out)} bytes, over the {MAX_TAGS_BYTES}-byte limit; shorten them")
    return bytes(out)


_SHORT = 64  # lengths below this are one varint byte (zig-zag doubles them)


def _encode_short(pairs: list[Sequence[str]]) -> bytes | None:
    """encode_tags for the common case (every name and value under 64 bytes, at most 63 tags), or None."""
    if len(pairs) >= _SHORT:
        return None
    out = [bytes((len(pairs) << 1,))]
    try:
        for pair in pairs:
            if isinstance(pair, (str, bytes)):
                return None
            name, value = pair
            name_bytes, value_bytes = name.encode("utf-8"), value.encode("utf-8")
            if not 0 < len(name_bytes) < _SHORT or len(value_bytes) >= _SHORT:
                return None
            out += (bytes((len(name_bytes) << 1,)), name_bytes, bytes((len(value_bytes) << 1,)), value_bytes)
    except (ValueError, TypeError, AttributeError, UnicodeEncodeError):
        return None  # the general path says what is wrong
    out.append(b"\x00")
    encoded = b"".join(out)
    return encoded if len(encoded) <= MAX_TAGS_BYTES else None


def _varint_length(value: int) -> int:
    zigzag, size = (value << 1) ^ (value >> 63), 1
    while zigzag > _VARINT_PAYLOAD_MASK:
        zigzag >>= _VARINT_SHIFT
        size += 1
    return size


def encoded_length(tags: Iterable[Sequence[str]]) -> int:
    """len(encode_tags(tags)), with the same checks and errors, without building the bytes."""
    pairs = list(tags)
    if not pairs:
        return 0
    fast = _encode_short(pairs)
    if fast is not None:
        return len(fast)
    total = _varint_length(len(pairs)) + 1  # the count, and the closing zero-count block
    try:
        if len(pairs) > MAX_TAGS:
            raise ValueError
        for pair in pairs:  # the common case, checked cheaply; any doubt takes the path with the errors
            if isinstance(pair, (str, bytes)):
                raise ValueError
            name, value = pair
            name_bytes, value_bytes = name.encode("utf-8"), value.encode("utf-8")
            if not 0 < len(name_bytes) <= MAX_TAG_NAME_BYTES or len(value_bytes) > MAX_TAG_VALUE_BYTES:
                raise ValueError
            total += _varint_length(len(name_bytes)) + len(name_bytes) + _varint_length(len(value_bytes))
            total += len(value_bytes)
    except (ValueError, TypeError, AttributeError, UnicodeEncodeError):
        return len(encode_tags(pairs))  # raises the TagError that says what is wrong
    if total > MAX_TAGS_BYTES:
        raise TagError(f"the tags encode to {total} bytes, over the {MAX_TAGS_BYTES}-byte limit; shorten them")
    return total


class _Reader:
    """A cursor over Avro bytes that raises TagError instead of running off the end."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.pos = 0

    def long(self, what: str) -> int:
        zigzag = 0
        for index in range(MAX_VARINT_BYTES):
            if self.pos >= len(self.raw):
                raise TagError(f"tag bytes end inside the {what} (offset {self.pos})")
            byte = self.raw[self.pos]
            self.pos += 1
            zigzag |= (byte & _VARINT_PAYLOAD_MASK) << (_VARINT_SHIFT * index)
            if not byte & _VARINT_CONTINUE:
                value = (zigzag >> 1) ^ -(zigzag & 1)
                if not _INT64_MIN <= value <= _INT64_MAX:
                    break
                return value
        raise TagError(f"the {what} at offset {self.pos} is not a 64-bit Avro long")

    def blob(self, what: str, limit: int) -> bytes:
        start = self.pos
        length = self.long(f"{what} length")
        if length < 0:
            raise TagError(f"the {what} at offset {start} has a negative length ({length})")
        if length > limit:
            raise TagError(f"the {what} at offset {start} is {length} bytes, over the {limit}-byte limit")
        end = self.pos + length
        if end > len(self.raw):
            remaining = len(self.raw) - self.pos
            raise TagError(f"the {what} at offset {start} claims {length} bytes; only {remaining} remain")
        blob = self.raw[self.pos : end]
        self.pos = end
        return blob


def _decode_short(raw: bytes) -> Tags | None:
    """decode_tags for what our encoder and arbundles write in the common case: one block of fewer than 64 tags,
    every length one varint byte, a non-empty name; None for anything else (the general reader judges it)."""
    count = raw[0]
    if count & 0x81 or not count:  # negative (a sized block), multi-byte or zero
        return None
    count >>= 1
    end = len(raw) - 1
    if raw[end] != 0:
        return None
    pos, tags = 1, []
    try:
        for _ in range(count):
            size = raw[pos]
            if size & 0x81 or not size:  # the name: non-empty, under 64 bytes
                return None
            name_end = pos + 1 + (size >> 1)
            size = raw[name_end]
            if size & 0x81:
                return None
            value_end = name_end + 1 + (size >> 1)
            if value_end > end:
                return None
            tags.append((raw[pos + 1:name_end].decode("utf-8"), raw[name_end + 1:value_end].decode("utf-8")))
            pos = value_end
    except (IndexError, UnicodeDecodeError):
        return None
    return tuple(tags) if pos == end else None


def _text(blob: bytes, what: str) -> str:
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TagError(f"{what} is not valid UTF-8: {blob[:40]!r}") from exc


def decode_tags(raw: bytes) -> Tags:
    """Decode Avro tag bytes (any block layout) into (name, value) pairs, enforcing the bounds."""
    if len(raw) > MAX_TAGS_BYTES:
        raise TagError(f"{len(raw)} tag bytes, over the {MAX_TAGS_BYTES}-byte limit")
    if not raw:
        return ()
    fast = _decode_short(raw)
    return fast if fast is not None else _decode_general(raw)


def _decode_general(raw: bytes) -> Tags:
    """decode_tags for any layout Avro allows, naming what is wrong."""
    reader = _Reader(bytes(raw))
    tags: list[tuple[str, str]] = []
    while True:
        block_start = reader.pos
        count = reader.long("block count")
        if count == 0:
            break
        declared_size: int | None = None
        if count < 0:
            count = -count
            declared_size = reader.long("block size")
            if declared_size < 0:
                raise TagError(f"the tag block at offset {block_start} has a negative byte size")
        if len(tags) + count > MAX_TAGS:
            raise TagError(f"more than {MAX_TAGS} tags (ANS-104 limit)")
        items_start = reader.pos
        for _ in range(count):
            index = len(tags)
            name = reader.blob(f"tag #{index} name", MAX_TAG_NAME_BYTES)
            value = reader.blob(f"tag #{index} value", MAX_TAG_VALUE_BYTES)
            _check_tag(index, name, value)
            tags.append((_text(name, f"tag #{index} name"), _text(value, f"tag #{index} value")))
        if declared_size is not None and reader.pos - items_start != declared_size:
            raise TagError(
                f"the tag block at offset {block_start} declares {declared_size} bytes "
                f"but its items take {reader.pos - items_start}"
            )
    if reader.pos != len(raw):
        raise TagError(f"{len(raw) - reader.pos} stray bytes after the end of the tag array")
    return tuple(tags)
