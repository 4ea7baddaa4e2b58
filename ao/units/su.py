"""Scheduler unit, pure part: what a schedulable item is, the hash chain, the assignment item.

AO facts matched here: a process spawn takes nonce 0 and its first message nonce 1; an
assignment carries Process, Epoch, Nonce, Hash-Chain, Block-Height, Timestamp (ms) and
Message; Hash-Chain = b64url(sha256(previous assignment id ‖ previous hash-chain)), and
the first link is sha256(process id).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ao.errors import InvalidMessage, MessageTooLarge
from ao.permaweb import dataitem
from ao.permaweb.b64 import b64url_decode, b64url_encode
from ao.permaweb.wallet import Signer

DATA_PROTOCOL = "ao"
VARIANT = "ao.TN.1"
# Types a scheduler takes into a process's log. Modules are L1 uploads, not messages.
SCHEDULABLE_TYPES = frozenset({"Message", "Process", "Attestation", "Available"})
PROCESS_REQUIRED_TAGS = ("Module", "Scheduler")
ID_LENGTH = 43  # base64url of 32 bytes


@dataclass(frozen=True)
class Schedulable:
    """A verified item and what the scheduler must do with it."""

    item: dataitem.DataItem
    is_spawn: bool
    process_id: str


def check_size(raw: bytes, max_bytes: int) -> None:
    """Refuse an item over the scheduler's limit before parsing it."""
    if len(raw) > max_bytes:
        raise MessageTooLarge(f"item is {len(raw)} bytes; this scheduler accepts at most {max_bytes}")


def classify(item: dataitem.DataItem) -> Schedulable:
    """Check the AO tags of a verified item and say where it goes."""
    protocol = item.tag("Data-Protocol")
    if protocol is None:
        raise InvalidMessage("missing tag Data-Protocol (must be 'ao')")
    if protocol != DATA_PROTOCOL:
        raise InvalidMessage(f"Data-Protocol is {protocol!r}; this scheduler takes 'ao'")
    kind = item.tag("Type")
    if kind is None:
        raise InvalidMessage("missing tag Type (Process or Message)")
    if kind not in SCHEDULABLE_TYPES:
        raise InvalidMessage(f"Type {kind!r} cannot be scheduled; expected one of {sorted(SCHEDULABLE_TYPES)}")
    if kind == "Process":
        for name in PROCESS_REQUIRED_TAGS:
            value = item.tag(name)
            if not value:
                raise InvalidMessage(f"a process spawn needs tag {name}")
            if not is_id(value):
                raise InvalidMessage(f"tag {name} must be a 43-character id, got {value[:60]!r}")
        return Schedulable(item=item, is_spawn=True, process_id=item.id)
    if not item.target:
        raise InvalidMessage("a message needs a Target (the process id)")
    return Schedulable(item=item, is_spawn=False, process_id=item.target_b64)


def is_id(value: str) -> bool:
    """True for a base64url string of 32 bytes (43 characters of the base64url alphabet)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


_ID = re.compile(r"[A-Za-z0-9_-]{43}")


def first_hash_chain(process_id: str) -> str:
    """The hash chain of nonce 0: sha256 of the process id bytes."""
    return b64url_encode(hashlib.sha256(b64url_decode(process_id)).digest())


def next_hash_chain(previous_assignment_id: str, previous_hash_chain: str) -> str:
    """The hash chain link after a given assignment."""
    digest = hashlib.sha256(b64url_decode(previous_assignment_id) + b64url_decode(previous_hash_chain))
    return b64url_encode(digest.digest())


def build_assignment(
    signer: Signer,
    *,
    process_id: str,
    message_id: str,
    epoch: int,
    nonce: int,
    hash_chain: str,
    block_height: int,
    timestamp_ms: int,
) -> dataitem.DataItem:
    """The signed assignment item for one slot of a process's log."""
    tags = (
        ("Data-Protocol", DATA_PROTOCOL),
        ("Variant", VARIANT),
        ("Type", "Assignment"),
        ("Process", process_id),
        ("Epoch", str(epoch)),
        ("Nonce", str(nonce)),
        ("Hash-Chain", hash_chain),
        ("Block-Height", str(block_height)),
        ("Timestamp", str(timestamp_ms)),
        ("Message", message_id),
    )
    return dataitem.create_data_item(signer, b"", tags=tags)


def verify_chain(process_id: str, links: list[tuple[str, str]]) -> int | None:
    """Check (assignment id, hash chain) pairs from nonce 0 on; return the first bad nonce or None."""
    expected = first_hash_chain(process_id)
    for nonce, (assignment_id, hash_chain) in enumerate(links):
        if hash_chain != expected:
            return nonce
        expected = next_hash_chain(assignment_id, hash_chain)
    return None
