"""Compute unit, pure part: the msg and env a process sees, limits, results, the state hash.

AO facts matched here: ``From`` is the ``From-Process`` tag when a messenger the process trusts
(an ``Authority`` of its spawn) pushed the message, else the signer; ``Forwarded-By`` is then the
messenger; user-supplied ``From``/``Owner`` tags (and the messenger's own tags, when a user forges
them) are stripped. Beyond AO, a push counts as the source process's word only if it is exactly an
outbox entry of that process's recorded result, not yet delivered (``ao.compute.origins``): the
caller decides that and passes ``genuine_push``.
If a result has ``Error``, the state stays as it was before the message.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ao.permaweb import dataitem
from ao.permaweb.b64 import b64url_encode

# Tags a user may not set: they are facts only the units establish.
STRIPPED_FROM_USERS = frozenset({"From", "Owner", "From-Process", "From-Module", "Pushed-For", "Forwarded-By"})
DEFAULT_COMPUTE_LIMIT = 9_000_000_000_000  # AO's default Compute-Limit
MAX_COMPUTE_LIMIT = 9_000_000_000_000
DEFAULT_MEMORY_LIMIT = 16 * 1024**3  # 16 GiB, as AO's compute units
MAX_MEMORY_LIMIT = 16 * 1024**3
MAX_RESULT_BYTES = 8 * 1024 * 1024
MAX_OUTBOX = 1000
MAX_WRITES = 10_000
MAX_KEY_CHARS = 1024
_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
_LIMIT_RE = re.compile(r"^\s*(\d+)\s*-?\s*(b|kb|mb|gb)?\s*$", re.IGNORECASE)


class LimitError(ValueError):
    """A Memory-Limit or Compute-Limit tag that cannot be used."""


def parse_memory_limit(value: str | None) -> int:
    """Bytes from AO's forms ("16-gb", "512-mb", "1073741824"); default and cap 16 GiB."""
    if value is None or value == "":
        return DEFAULT_MEMORY_LIMIT
    match = _LIMIT_RE.match(value)
    if not match:
        raise LimitError(f"Memory-Limit {value!r} is not like '16-gb', '512-mb' or a number of bytes")
    size = int(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]
    if size <= 0 or size > MAX_MEMORY_LIMIT:
        raise LimitError(f"Memory-Limit {value!r} must be between 1 byte and 16-gb")
    return size


def parse_compute_limit(value: str | None) -> int:
    """Fuel per message from Compute-Limit; default and cap as AO."""
    if value is None or value == "":
        return DEFAULT_COMPUTE_LIMIT
    if not value.isdigit() or not 0 < int(value) <= MAX_COMPUTE_LIMIT:
        raise LimitError(f"Compute-Limit {value!r} must be an integer between 1 and {MAX_COMPUTE_LIMIT}")
    return int(value)


def process_limits(
    *, spawn_tags: Iterable[tuple[str, str]], module_tags: Iterable[tuple[str, str]]
) -> tuple[int, int]:
    """(memory bytes, fuel per message): the module's limits (or the defaults), lowered by the spawn's, never raised.

    Anyone may spawn a process on a module; only the module's author chose how much a message may cost.
    """
    spawn_tags, module_tags = list(spawn_tags), list(module_tags)
    memory = parse_memory_limit(first_tag(module_tags, "Memory-Limit"))
    fuel = parse_compute_limit(first_tag(module_tags, "Compute-Limit"))
    asked_memory, asked_fuel = first_tag(spawn_tags, "Memory-Limit"), first_tag(spawn_tags, "Compute-Limit")
    if asked_memory:
        memory = min(memory, parse_memory_limit(asked_memory))
    if asked_fuel:
        fuel = min(fuel, parse_compute_limit(asked_fuel))
    return memory, fuel


def first_tag(tags: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of a tag."""
    return next((v for n, v in tags if n == name), None)


def authorities(spawn_tags: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The messengers a process trusts to push other processes' messages: its spawn's ``Authority`` tags (AO's rule)."""
    found = set()
    for name, value in spawn_tags:
        if name == "Authority":
            found.update(part.strip() for part in value.split(",") if part.strip())
    return frozenset(found)


@dataclass(frozen=True)
class Slot:
    """What the scheduler's assignment says about one message."""

    process_id: str
    nonce: int
    epoch: int
    timestamp: int
    block_height: int
    hash_chain: str


def _seen_tags(item: dataitem.DataItem, genuine_push: bool) -> tuple[list[tuple[str, str]], str | None]:
    """The tags a process sees (users' claims to the units' facts stripped) and the From-Process it may trust."""
    tags = [(n, v) for n, v in item.tags
            if n not in STRIPPED_FROM_USERS or (genuine_push and n not in ("From", "Owner"))]
    return tags, first_tag(tags, "From-Process") if genuine_push else None


def message_json(item: dataitem.DataItem, slot: Slot, *, genuine_push: bool) -> dict[str, Any]:
    """The msg a process's handle receives (AO's shape)."""
    owner = item.owner_address
    tags, from_process = _seen_tags(item, genuine_push)
    msg: dict[str, Any] = {
        "Id": item.id,
        "Signature": b64url_encode(item.signature),
        "Owner": owner,
        "From": from_process or owner,
        "Target": item.target_b64 or slot.process_id,
        "Anchor": item.anchor_b64,
        "Data": item.data.decode("utf-8", errors="replace"),
        "Tags": [{"name": n, "value": v} for n, v in tags],
        "Epoch": slot.epoch,
        "Nonce": slot.nonce,
        "Timestamp": slot.timestamp,
        "Block-Height": slot.block_height,
        "Hash-Chain": slot.hash_chain,
        "Cron": False,
    }
    if from_process:
        msg["Forwarded-By"] = owner
    return msg


_quote = json.encoder.encode_basestring  # type: ignore[attr-defined]  # what canonical() writes for a str


def message_text(item: dataitem.DataItem, slot: Slot, *, genuine_push: bool) -> str:
    """``canonical(message_json(...))`` as text, written directly: the same characters, without building the dict
    and sorting it for every message (the compute unit's hot path; tests/ao/test_cu.py checks the equality)."""
    owner = _quote(item.owner_address)
    tags, from_process = _seen_tags(item, genuine_push)
    return "".join((
        '{"Anchor":', _quote(item.anchor_b64),
        ',"Block-Height":', str(int(slot.block_height)),
        ',"Cron":false,"Data":', _quote(item.data.decode("utf-8", errors="replace")),
        ',"Epoch":', str(int(slot.epoch)),
        ',"Forwarded-By":' + owner if from_process else "",
        ',"From":', _quote(from_process) if from_process else owner,
        ',"Hash-Chain":', _quote(slot.hash_chain),
        ',"Id":', _quote(item.id),
        ',"Nonce":', str(int(slot.nonce)),
        ',"Owner":', owner,
        ',"Signature":', _quote(b64url_encode(item.signature)),
        ',"Tags":[', ",".join(f'{{"name":{_quote(n)},"value":{_quote(v)}}}' for n, v in tags),
        '],"Target":', _quote(item.target_b64 or slot.process_id),
        ',"Timestamp":', str(int(slot.timestamp)), "}",
    ))


def env_json(
    *, process_id: str, process_owner: str, process_tags: Iterable[tuple[str, str]], module_id: str,
    module_owner: str, module_tags: Iterable[tuple[str, str]],
) -> dict[str, Any]:
    """The env a process's handle receives."""
    return {
        "Process": {"Id": process_id, "Owner": process_owner,
                    "Tags": [{"name": n, "value": v} for n, v in process_tags]},
        "Module": {"Id": module_id, "Owner": module_owner, "Tags": [{"name": n, "value": v} for n, v in module_tags]},
    }


class ResultError(ValueError):
    """A process returned something that is not an AO result."""


def normalize_result(raw: str) -> tuple[dict[str, Any], dict[str, str | None]]:
    """Parse and bound a process's output into its AO result and the state writes it carries."""
    if len(raw) * 4 > MAX_RESULT_BYTES and len(raw.encode("utf-8")) > MAX_RESULT_BYTES:  # UTF-8: <= 4 bytes a char
        raise ResultError(f"result is over {MAX_RESULT_BYTES} bytes")
    try:
        value = json.loads(raw, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise ResultError(f"result is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ResultError("result must be a JSON object")
    result: dict[str, Any] = {}
    writes = value.get("Writes") or {}
    if not isinstance(writes, dict) or len(writes) > MAX_WRITES or not all(
        isinstance(k, str) and 0 < len(k) <= MAX_KEY_CHARS and (v is None or isinstance(v, str))
        for k, v in writes.items()
    ):
        raise ResultError(f"Writes must be an object of at most {MAX_WRITES} keys to text or null")
    for key in ("Messages", "Spawns", "Assignments"):
        items = value.get(key) or []
        if not isinstance(items, list) or len(items) > MAX_OUTBOX:
            raise ResultError(f"{key} must be a list of at most {MAX_OUTBOX}")
        result[key] = items
    for index, message in enumerate(result["Messages"]):
        _check_message(index, message)
    output = value.get("Output", "")
    result["Output"] = output if isinstance(output, (str, dict, list, int, float)) or output is None else str(output)
    if value.get("Error"):
        result["Error"] = str(value["Error"])
    return result, writes


def _no_constants(name: str) -> Any:
    """NaN and Infinity are not JSON (PostgreSQL's jsonb refuses them): such a result is the message's error."""
    raise ResultError(f"result contains {name}, which JSON does not allow")


def _check_message(index: int, message: Any) -> None:
    """An outbox message must be {Target: str, Tags: [{name: str, value: str}], Data: str}."""
    if not isinstance(message, dict) or not isinstance(message.get("Target"), str):
        raise ResultError(f"Messages[{index}] needs a string Target")
    tags = message.get("Tags", [])
    if not isinstance(tags, list) or not all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("value"), str) for t in tags
    ):
        raise ResultError(f"Messages[{index}].Tags must be a list of {{name, value}} strings")
    if not isinstance(message.get("Data", ""), str):
        raise ResultError(f"Messages[{index}].Data must be a string")


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(value: Any) -> bytes:
    """Canonical JSON bytes for hashing."""
    return _CANONICAL.encode(value).encode("utf-8")


def next_state_hash(previous: str, nonce: int, writes: Mapping[str, str | None], result: Mapping[str, Any], *,
                    result_json: bytes | None = None) -> str:
    """Running hash over every message's state writes and result: replays must reproduce it.

    ``result_json``: ``canonical(result)``, when the caller has it already."""
    digest = hashlib.sha256()
    digest.update(previous.encode("ascii"))
    digest.update(nonce.to_bytes(8, "big"))
    for key in sorted(writes):
        value = writes[key]
        name = key.encode("utf-8")
        digest.update(len(name).to_bytes(4, "big") + name)
        body = None if value is None else value.encode("utf-8")
        digest.update(b"\x00" if body is None else b"\x01" + len(body).to_bytes(8, "big") + body)
    digest.update(hashlib.sha256(canonical(result) if result_json is None else result_json).digest())
    return digest.hexdigest()


GENESIS_STATE_HASH = hashlib.sha256(b"llamafed/ao/state/v1").hexdigest()
