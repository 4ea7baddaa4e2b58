"""Messenger unit, pure part: turning a process's outbox message into the item the MU pushes.

AO's messenger is at-most-once; ours is exactly-once. A pushed message's identity is
derived from (process, nonce, index): its anchor is a hash of those three, and the
messenger signs with Ed25519, whose signatures are deterministic, so re-building the
same push gives the same item id and the scheduler drops the repeat as a duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ao.errors import InvalidMessage
from ao.permaweb import dataitem
from ao.permaweb.wallet import Signer
from ao.units import su

# Tags only the messenger may set on a pushed message; a process's own values are dropped.
RESERVED_TAGS = frozenset({"Data-Protocol", "Variant", "Type", "From-Process", "From-Module", "Pushed-For"})
MAX_OUTBOX_TAGS = 100


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
            raise InvalidMessage(f"outbox message has no valid Target: {target!r}")
        raw_tags = msg.get("Tags") or []
        if not isinstance(raw_tags, list) or len(raw_tags) > MAX_OUTBOX_TAGS:
            raise InvalidMessage("outbox message Tags must be a list of at most 100 {name, value}")
        tags = []
        for tag in raw_tags:
            if not isinstance(tag, Mapping) or not isinstance(tag.get("name"), str):
                raise InvalidMessage(f"bad outbox tag {tag!r}")
            tags.append((tag["name"], str(tag.get("value", ""))))
        data = msg.get("Data", "")
        body = data.encode("utf-8") if isinstance(data, str) else bytes(data) if isinstance(data, bytes) else b""
        return cls(target=target, tags=tuple(tags), data=body)


def push_anchor(process_id: str, nonce: int, index: int) -> bytes:
    """The 32-byte anchor that fixes a pushed message's identity."""
    return hashlib.sha256(f"ao-push/{process_id}/{nonce}/{index}".encode()).digest()


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
    tags: list[tuple[str, str]] = [
        ("Data-Protocol", su.DATA_PROTOCOL),
        ("Variant", su.VARIANT),
        ("Type", "Message"),
    ]
    tags += [(name, value) for name, value in message.tags if name not in RESERVED_TAGS]
    tags += [("From-Process", process_id), ("From-Module", module_id), ("Pushed-For", pushed_for)]
    return dataitem.create_data_item(
        signer,
        message.data,
        tags=tags,
        target=message.target,
        anchor=push_anchor(process_id, nonce, index),
    )


def pushed_for(item_tags: Sequence[tuple[str, str]], item_id: str, trusted_pusher: bool) -> str:
    """The root message a push chain started from: inherited from a trusted push, else this id."""
    if trusted_pusher:
        for name, value in item_tags:
            if name == "Pushed-For" and su.is_id(value):
                return value
    return item_id
