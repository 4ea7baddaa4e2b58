"""ANS-104 data items: create, sign, serialize, parse and verify.

Layout (integers little-endian)::

    u16 signature type | signature | owner
    | target flag (0/1) [+ 32 bytes] | anchor flag (0/1) [+ 32 bytes]
    | u64 tag count | u64 tag byte length | tags (Avro, see ``tags.py``) | data

Signature and owner lengths come from the signature type (``wallet.SCHEMES``:
1 = Arweave RSA-4096, 512/512; 2 = Ed25519, 64/32). The signed message is the
deep hash of ``["dataitem", "1", str(type), owner, target, anchor, raw tag bytes,
data]``, where an absent target or anchor is the empty blob; the id is
base64url(sha256(signature)), so it cannot disagree with the signature.

Target and anchor conventions, matching arbundles 0.11.2 ``createData``:

- ``target`` is given as base64url of 32 raw bytes (an address or process id);
  ``DataItem.target_b64`` returns the same string, like arbundles' ``.target``.
- ``anchor`` is 32 raw bytes. arbundles stores ``Buffer.from(opts.anchor)``: a
  JS string becomes its UTF-8 bytes (so AO's 32-character anchors are stored as
  those 32 characters), a Buffer is taken as is. ``create_data_item`` does the
  same: ``str`` is UTF-8 encoded, ``bytes`` used raw; either must be 32 bytes.
  arbundles' ``.anchor`` getter returns base64url of the raw bytes, not the
  string given: that is ``DataItem.anchor_b64`` here.
- An empty target or anchor (``""``/``b""``) means absent, as in arbundles.

``parse`` is stricter than arbundles: presence flags must be 0 or 1 (arbundles
treats anything but 1 as absent), a zero tag count needs zero tag bytes, the tag
bounds of ``tags.py`` hold, and tag text must be UTF-8.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

from .b64 import B64Error, b64url_decode, b64url_encode
from .deephash import Prefix
from .tags import MAX_TAGS, MAX_TAGS_BYTES, TagError, Tags, decode_tags, encode_tags
from .wallet import SCHEMES, Signer, address_of
from .wallet import verify as verify_signature

SIGNATURE_TYPE_BYTES = 2
TARGET_BYTES = 32
ANCHOR_BYTES = 32
TAG_COUNT_BYTES = 8
TAG_LENGTH_BYTES = 8
FLAG_ABSENT = 0
FLAG_PRESENT = 1
BYTE_ORDER = "little"
# The first two deep-hash elements: the format name and its version.
SIGNATURE_FORMAT = b"dataitem"
SIGNATURE_FORMAT_VERSION = b"1"


class DataItemError(ValueError):
    """A data item that cannot be built or parsed; the message says which field and why."""


def _supported_types() -> str:
    return ", ".join(str(t) for t in sorted(SCHEMES))


@dataclass(frozen=True, repr=False)
class DataItem:
    """One ANS-104 data item; ``raw_tags`` are the exact signed tag bytes, ``tags`` their decoding."""

    signature_type: int
    signature: bytes
    owner: bytes
    target: bytes
    anchor: bytes
    tags: Tags
    raw_tags: bytes
    data: bytes

    def __post_init__(self) -> None:
        """Check the fixed field lengths; tag consistency is checked by parse() and verify()."""
        scheme = SCHEMES.get(self.signature_type)
        if scheme is None:
            raise DataItemError(
                f"unsupported signature type {self.signature_type} (supported: {_supported_types()})"
            )
        if len(self.signature) != scheme.signature_length:
            raise DataItemError(
                f"signature is {len(self.signature)} bytes; type {self.signature_type} needs {scheme.signature_length}"
            )
        if len(self.owner) != scheme.owner_length:
            raise DataItemError(
                f"owner is {len(self.owner)} bytes; type {self.signature_type} needs {scheme.owner_length}"
            )
        if len(self.target) not in (0, TARGET_BYTES):
            raise DataItemError(f"target is {len(self.target)} bytes; it must be absent (empty) or {TARGET_BYTES}")
        if len(self.anchor) not in (0, ANCHOR_BYTES):
            raise DataItemError(f"anchor is {len(self.anchor)} bytes; it must be absent (empty) or {ANCHOR_BYTES}")

    def __repr__(self) -> str:
        return (
            f"DataItem(id={self.id!r}, signature_type={self.signature_type}, owner={self.owner_address!r}, "
            f"target={self.target_b64!r}, anchor={self.anchor_b64!r}, tags={self.tags!r}, "
            f"data=<{len(self.data)} bytes>)"
        )

    @cached_property
    def id(self) -> str:
        """base64url(sha256(signature))."""
        return b64url_encode(hashlib.sha256(self.signature).digest())

    @property
    def owner_b64(self) -> str:
        """The owner public key, base64url (arbundles' ``.owner``)."""
        return b64url_encode(self.owner)

    @cached_property
    def owner_address(self) -> str:
        """The owner's address: base64url(sha256(owner))."""
        return address_of(self.owner)

    @property
    def target_b64(self) -> str:
        """The target, base64url; "" when absent (arbundles' ``.target``)."""
        return b64url_encode(self.target)

    @property
    def anchor_b64(self) -> str:
        """The raw anchor bytes, base64url; "" when absent (arbundles' ``.anchor``)."""
        return b64url_encode(self.anchor)

    def tag(self, name: str) -> str | None:
        """The value of the first tag with this name, or None."""
        for tag_name, value in self.tags:
            if tag_name == name:
                return value
        return None

    def serialize(self) -> bytes:
        """The ANS-104 binary form."""
        return b"".join(
            (
                self.signature_type.to_bytes(SIGNATURE_TYPE_BYTES, BYTE_ORDER),
                self.signature,
                self.owner,
                _optional_field(self.target),
                _optional_field(self.anchor),
                len(self.tags).to_bytes(TAG_COUNT_BYTES, BYTE_ORDER),
                len(self.raw_tags).to_bytes(TAG_LENGTH_BYTES, BYTE_ORDER),
                self.raw_tags,
                self.data,
            )
        )


def _optional_field(value: bytes) -> bytes:
    if not value:
        return bytes([FLAG_ABSENT])
    return bytes([FLAG_PRESENT]) + value


def signature_data(item: DataItem) -> bytes:
    """The 48-byte deep hash that the item's signature signs:
    ``["dataitem", "1", type, owner, target, anchor, raw tags, data]``."""
    return _signer_prefix(item.signature_type, item.owner).extend(
        (item.target, item.anchor, item.raw_tags, item.data)).digest


@lru_cache(maxsize=1024)
def _signer_prefix(signature_type: int, owner: bytes) -> Prefix:
    """The deep hash's running value after the four elements every item of one signer shares."""
    return Prefix(8).extend((SIGNATURE_FORMAT, SIGNATURE_FORMAT_VERSION, str(signature_type).encode("ascii"), owner))


def _target_bytes(target: str | None) -> bytes:
    if not target:
        return b""
    if not isinstance(target, str):
        raise DataItemError(f"target must be a base64url string, got {type(target).__name__}")
    try:
        raw = b64url_decode(target)
    except B64Error as exc:
        raise DataItemError(f"target is not base64url: {exc}") from exc
    if len(raw) != TARGET_BYTES:
        raise DataItemError(f"target decodes to {len(raw)} bytes; it must be {TARGET_BYTES} (an address or id)")
    return raw


def _anchor_bytes(anchor: bytes | str | None) -> bytes:
    if not anchor:
        return b""
    if isinstance(anchor, str):
        raw = anchor.encode("utf-8")
    elif isinstance(anchor, (bytes, bytearray, memoryview)):
        raw = bytes(anchor)
    else:
        raise DataItemError(f"anchor must be bytes or str, got {type(anchor).__name__}")
    if len(raw) != ANCHOR_BYTES:
        raise DataItemError(
            f"anchor is {len(raw)} bytes; it must be {ANCHOR_BYTES} (a str is UTF-8 encoded, as arbundles does)"
        )
    return raw


def create_data_item(
    signer: Signer,
    data: bytes,
    *,
    tags: Iterable[Sequence[str]] = (),
    target: str | None = None,
    anchor: bytes | str | None = None,
) -> DataItem:
    """Build and sign a data item; target is base64url of 32 bytes, anchor 32 bytes (str: UTF-8)."""
    scheme = SCHEMES.get(signer.signature_type)
    if scheme is None:
        raise DataItemError(f"signer has unsupported signature type {signer.signature_type}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DataItemError(f"data must be bytes, got {type(data).__name__}; encode text first (text.encode())")
    tag_pairs = tuple(tags)
    try:
        raw_tags = encode_tags(tag_pairs)
    except TagError as exc:
        raise DataItemError(str(exc)) from exc
    owner, target_raw, anchor_raw, data = bytes(signer.owner), _target_bytes(target), _anchor_bytes(anchor), bytes(data)
    signed = _signer_prefix(signer.signature_type, owner).extend((target_raw, anchor_raw, raw_tags, data)).digest
    return DataItem(
        signature_type=signer.signature_type,
        signature=bytes(signer.sign(signed)),
        owner=owner,
        target=target_raw,
        anchor=anchor_raw,
        tags=tuple((name, value) for name, value in tag_pairs),
        raw_tags=raw_tags,
        data=data,
    )


class _Cursor:
    """Reads consecutive fields of a serialized item, naming the field that runs short."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.pos = 0

    def take(self, length: int, what: str) -> bytes:
        end = self.pos + length
        if end > len(self.raw):
            raise DataItemError(
                f"truncated data item: the {what} needs {length} bytes at offset {self.pos}, "
                f"but only {len(self.raw) - self.pos} remain"
            )
        chunk = self.raw[self.pos : end]
        self.pos = end
        return chunk

    def uint(self, length: int, what: str) -> int:
        return int.from_bytes(self.take(length, what), BYTE_ORDER)

    def optional(self, length: int, what: str) -> bytes:
        offset = self.pos
        flag = self.uint(1, f"{what} presence flag")
        if flag == FLAG_ABSENT:
            return b""
        if flag != FLAG_PRESENT:
            raise DataItemError(f"the {what} presence flag at offset {offset} is {flag}; it must be 0 or 1")
        return self.take(length, what)

    def rest(self) -> bytes:
        chunk = self.raw[self.pos :]
        self.pos = len(self.raw)
        return chunk


def parse(raw: bytes, *, max_size: int | None = None) -> DataItem:
    """Parse a serialized data item strictly; raise DataItemError naming what is wrong."""
    if max_size is not None and len(raw) > max_size:
        raise DataItemError(f"data item is {len(raw)} bytes, over the {max_size}-byte limit")
    cursor = _Cursor(bytes(raw))
    signature_type = cursor.uint(SIGNATURE_TYPE_BYTES, "signature type")
    scheme = SCHEMES.get(signature_type)
    if scheme is None:
        raise DataItemError(f"unsupported signature type {signature_type} (supported: {_supported_types()})")
    signature = cursor.take(scheme.signature_length, "signature")
    owner = cursor.take(scheme.owner_length, "owner")
    target = cursor.optional(TARGET_BYTES, "target")
    anchor = cursor.optional(ANCHOR_BYTES, "anchor")
    tag_count = cursor.uint(TAG_COUNT_BYTES, "tag count")
    tag_length = cursor.uint(TAG_LENGTH_BYTES, "tag byte length")
    if tag_count > MAX_TAGS:
        raise DataItemError(f"the item declares {tag_count} tags, over the ANS-104 limit of {MAX_TAGS}")
    if tag_length > MAX_TAGS_BYTES:
        raise DataItemError(f"the item declares {tag_length} tag bytes, over the {MAX_TAGS_BYTES}-byte limit")
    raw_tags = cursor.take(tag_length, "tags")
    try:
        tags = decode_tags(raw_tags)
    except TagError as exc:
        raise DataItemError(f"bad tags: {exc}") from exc
    if len(tags) != tag_count:
        raise DataItemError(f"the item declares {tag_count} tags but its tag bytes hold {len(tags)}")
    item = DataItem(
        signature_type=signature_type,
        signature=signature,
        owner=owner,
        target=target,
        anchor=anchor,
        tags=tags,
        raw_tags=raw_tags,
        data=cursor.rest(),
    )
    object.__setattr__(item, "_tags_decoded", True)  # its tags were read from its raw tag bytes just now
    return item


def verify(item: DataItem) -> bool:
    """True when the tags match their signed bytes and the signature is the owner's over the item."""
    if not item.__dict__.get("_tags_decoded"):
        try:
            if decode_tags(item.raw_tags) != item.tags:
                return False
        except TagError:
            return False
    return verify_signature(item.signature_type, item.owner, signature_data(item), item.signature)
