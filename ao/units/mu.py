"""Messenger unit, pure part: the one place that turns a process's outbox message into the item the MU pushes.

AO's messenger is at-most-once; ours is exactly-once. A pushed message's identity is
derived from (process, nonce, index): its anchor names the nonce and index and binds them to the
process with a hash, and the messenger signs with Ed25519, whose signatures are deterministic, so
re-building the same push gives the same item id and the scheduler drops the repeat as a duplicate.
The anchor is also how a receiving compute unit finds the outbox entry a push claims to be
(``ao.compute.origins``): no key alone can make a process say something it did not.

An outbox is checked while its result is computed (``validate_outbox``): every message must
become an item the scheduler will take (a valid target, ANS-104 tag bounds with the messenger's
own tags added, and the scheduler's size limit). A message that cannot is the sending message's
``Error`` — deterministic, because the check depends only on the outbox, the process and module
ids and the protocol constants here, never on the node's key or settings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ao.permaweb import dataitem, tags as ans_tags
from ao.permaweb.wallet import Signer
from ao.units import su

# Tags only the messenger may set on a pushed message; a process's own values are dropped.
RESERVED_TAGS = frozenset({"Data-Protocol", "Variant", "Type", "From-Process", "From-Module", "Pushed-For"})
# A pushed item must pass the scheduler's intake: AO's scheduler takes items up to 100 KiB. A protocol constant,
# not a setting, so every compute unit judges an outbox the same way.
MAX_PUSH_BYTES = 100 * 1024
# The messenger signs with Ed25519 (ANS-104 signature type 2): 64-byte signature, 32-byte owner.
PUSH_SIGNATURE_BYTES = 64
PUSH_OWNER_BYTES = 32
_ID_PLACEHOLDER = "x" * su.ID_LENGTH  # every id the messenger adds is 43 characters
# A pushed message carries at most this many tags of the process's own: the messenger adds six, and this keeps
# a margin under ANS-104's 128 for what a receiving process may forward on.
MAX_OUTBOX_TAGS = 100


class OutboxError(ValueError):
    """An outbox message that cannot be pushed; the sending message fails with this error."""


@dataclass(frozen=True)
class OutboxMessage:
    """A message a process asked to send, as the compute unit reports it."""

    target: str
    tags: tuple[tuple[str, str], ...]
    data: bytes

    @classmethod
    def from_json(cls, msg: Mapping[str, object]) -> OutboxMessage:
        """Build from AO's JSON shape: {Target, Tags: [{name, value}], Data}."""
        target = msg.get("Target")
        if not isinstance(target, str) or not su.is_id(target):
            raise OutboxError(f"has no valid Target (a 43-character id): {str(target)[:60]!r}")
        raw_tags = msg.get("Tags") or []
        if not isinstance(raw_tags, list):
            raise OutboxError("Tags must be a list of {name, value}")
        if len(raw_tags) > MAX_OUTBOX_TAGS:
            raise OutboxError(f"it has {len(raw_tags)} tags; a pushed message carries at most {MAX_OUTBOX_TAGS}")
        tags = []
        for tag in raw_tags:
            if not isinstance(tag, Mapping) or not isinstance(tag.get("name"), str) or not isinstance(
                tag.get("value", ""), str
            ):
                raise OutboxError(f"has a tag that is not {{name, value}} strings: {str(tag)[:60]}")
            tags.append((tag["name"], tag.get("value", "")))
        data = msg.get("Data", "")
        if not isinstance(data, str):
            raise OutboxError("Data must be a string")
        return cls(target=target, tags=tuple(tags), data=data.encode("utf-8"))

    def to_json(self) -> dict[str, object]:
        """AO's JSON shape (what a Push row keeps until it is signed)."""
        return {"Target": self.target, "Tags": [{"name": n, "value": v} for n, v in self.tags],
                "Data": self.data.decode("utf-8")}


def push_tags(message: OutboxMessage, *, process_id: str, module_id: str, pushed_for: str) -> list[tuple[str, str]]:
    """The pushed item's tags: the protocol's, the process's own (reserved names dropped), the messenger's."""
    out: list[tuple[str, str]] = [("Data-Protocol", su.DATA_PROTOCOL), ("Variant", su.VARIANT), ("Type", "Message")]
    out += [(name, value) for name, value in message.tags if name not in RESERVED_TAGS]
    out += [("From-Process", process_id), ("From-Module", module_id), ("Pushed-For", pushed_for)]
    return out


def push_size(message: OutboxMessage, tag_bytes: int) -> int:
    """Bytes of the serialized pushed item (fixed by its content: every field the messenger adds has a fixed size)."""
    return (dataitem.SIGNATURE_TYPE_BYTES + PUSH_SIGNATURE_BYTES + PUSH_OWNER_BYTES
            + 1 + dataitem.TARGET_BYTES + 1 + dataitem.ANCHOR_BYTES
            + dataitem.TAG_COUNT_BYTES + dataitem.TAG_LENGTH_BYTES + tag_bytes + len(message.data))


def check_push(message: OutboxMessage) -> None:
    """Refuse an outbox message whose pushed item the scheduler would not take."""
    tag_bytes = _short_push_tag_bytes(message)
    if tag_bytes is None:  # something unusual: measure exactly, with the error that says what is wrong
        probe = push_tags(message, process_id=_ID_PLACEHOLDER, module_id=_ID_PLACEHOLDER,
                          pushed_for=_ID_PLACEHOLDER)
        try:
            tag_bytes = ans_tags.encoded_length(probe)
        except ans_tags.TagError as exc:
            raise OutboxError(
                f"its tags cannot be pushed with the messenger's {len(RESERVED_TAGS)} added: {exc}") from exc
    size = push_size(message, tag_bytes)
    if size > MAX_PUSH_BYTES:
        raise OutboxError(f"it would be a {size}-byte item; the scheduler takes at most {MAX_PUSH_BYTES}")


_SHORT = 64  # names and values under 64 bytes take one length byte each
_ADDED = push_tags(OutboxMessage(_ID_PLACEHOLDER, (), b""), process_id=_ID_PLACEHOLDER, module_id=_ID_PLACEHOLDER,
                   pushed_for=_ID_PLACEHOLDER)
_ADDED_BYTES = sum(2 + len(n.encode()) + len(v.encode()) for n, v in _ADDED)


def _short_push_tag_bytes(message: OutboxMessage) -> int | None:
    """The pushed item's tag bytes when every tag is short (the common case), else None; the arithmetic of
    ``tags.encoded_length`` over ``push_tags`` for that case."""
    total, count = _ADDED_BYTES, len(_ADDED)
    for name, value in message.tags:
        if name in RESERVED_TAGS:
            continue
        name_bytes, value_bytes = len(name.encode("utf-8")), len(value.encode("utf-8"))
        if not 0 < name_bytes < _SHORT or value_bytes >= _SHORT:
            return None
        total += 2 + name_bytes + value_bytes
        count += 1
    if count >= _SHORT:
        return None
    total += 2  # the count, and the closing zero-count block
    return total if total <= ans_tags.MAX_TAGS_BYTES else None


def validate_outbox(messages: Sequence[object]) -> tuple[OutboxMessage, ...]:
    """Every outbox message as it will be pushed, or OutboxError naming the first that cannot be."""
    out = []
    for index, raw in enumerate(messages):
        try:
            if not isinstance(raw, Mapping):
                raise OutboxError("is not an object")
            message = OutboxMessage.from_json(raw)
            check_push(message)
        except OutboxError as exc:
            raise OutboxError(f"outbox message {index} cannot be sent: {exc}") from None
        out.append(message)
    return tuple(out)


_ANCHOR_NONCE, _ANCHOR_INDEX = 8, 4
_ANCHOR_BINDING = dataitem.ANCHOR_BYTES - _ANCHOR_NONCE - _ANCHOR_INDEX


def push_anchor(process_id: str, nonce: int, index: int) -> bytes:
    """The 32-byte anchor that fixes a pushed message's identity: nonce, index, and a hash binding both to the process."""
    return (nonce.to_bytes(_ANCHOR_NONCE, "big") + index.to_bytes(_ANCHOR_INDEX, "big")
            + _anchor_binding(process_id, nonce, index))


def _anchor_binding(process_id: str, nonce: int, index: int) -> bytes:
    return hashlib.sha256(f"ao-push/{process_id}/{nonce}/{index}".encode()).digest()[:_ANCHOR_BINDING]


def anchor_origin(process_id: str, anchor: bytes) -> tuple[int, int] | None:
    """(nonce, index) of the outbox entry of `process_id` a push's anchor names, or None if it names none."""
    if len(anchor) != dataitem.ANCHOR_BYTES:
        return None
    nonce = int.from_bytes(anchor[:_ANCHOR_NONCE], "big")
    index = int.from_bytes(anchor[_ANCHOR_NONCE:_ANCHOR_NONCE + _ANCHOR_INDEX], "big")
    if anchor[_ANCHOR_NONCE + _ANCHOR_INDEX:] != _anchor_binding(process_id, nonce, index):
        return None
    return nonce, index


def is_push_of(item: dataitem.DataItem, message: OutboxMessage, *, process_id: str, module_id: str,
               pushed_for: str) -> bool:
    """Whether `item` carries exactly outbox `message` of `process_id` as the messenger builds it (the signer aside)."""
    return (item.target_b64 == message.target and item.data == message.data
            and list(item.tags) == push_tags(message, process_id=process_id, module_id=module_id,
                                             pushed_for=pushed_for))


def build_push(
    signer: Signer,
    *,
    process_id: str,
    module_id: str,
    nonce: int,
    index: int,
    pushed_for: str,
    message: OutboxMessage,
) -> dataitem.DataItem:
    """The signed item the messenger delivers for outbox message `index` of `nonce`."""
    return dataitem.create_data_item(
        signer,
        message.data,
        tags=push_tags(message, process_id=process_id, module_id=module_id, pushed_for=pushed_for),
        target=message.target,
        anchor=push_anchor(process_id, nonce, index),
    )


def pushed_for(item_tags: Sequence[tuple[str, str]], item_id: str, genuine_push: bool) -> str:
    """The root message a push chain started from: inherited from a genuine push, else this id."""
    if genuine_push:
        for name, value in item_tags:
            if name == "Pushed-For" and su.is_id(value):
                return value
    return item_id
