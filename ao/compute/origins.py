"""Whether a pushed message is its source process's word: the rule that no key alone can forge a process.

A message signed by a messenger the target trusts (an ``Authority`` of the target's spawn) and tagged
``From-Process: S`` is treated as coming from process S only if all of these hold; otherwise it is an
ordinary message from its signer (``From`` is the messenger's address) and the process judges it as such:

1. its anchor names an outbox entry (nonce n, index i) of S (``mu.anchor_origin``);
2. S's message n was scheduled no later than this message (assignment timestamps, both facts of the logs);
3. S's recorded result for n has an outbox entry i that this item carries exactly: target, data and every tag
   as the messenger builds them, ``From-Module`` and ``Pushed-For`` included;
4. no earlier message of this process was already accepted as that same entry (a second signature over the
   same push is a replay, not a second message).

If S's message n is scheduled but not yet evaluated, the message waits (``SourcePending``, a fault that stalls
and retries): the answer must not depend on how fast S's compute unit is. Every input is a fact of the signed
logs of this process and of S, so a replay anywhere judges every push the same way; the verifier repeats the
check against S's own replayed results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ao import models
from ao.errors import SourcePending
from ao.permaweb import dataitem
from ao.units import cu, mu, su


@dataclass(frozen=True)
class Origin:
    """The outbox entry a genuine push carries."""

    process_id: str
    nonce: int
    index: int

    @property
    def key(self) -> str:
        return f"{self.process_id}/{self.nonce}/{self.index}"


class Sources(Protocol):
    """Where the facts about source processes come from (this node's record, or a remote node's)."""

    def assignment_timestamp(self, process_id: str, nonce: int) -> int | None: ...
    def result(self, process_id: str, nonce: int) -> tuple[dict[str, Any], str] | None: ...
    def module(self, process_id: str) -> str | None: ...
    def accepted_before(self, target: str, origin: str, nonce: int) -> bool: ...


class LocalSources:
    """This node's record: assignments and results of the processes on its scheduler."""

    def __init__(self, *, remember_accepted: bool = True) -> None:
        # The live compute unit asks the record which origins a target already accepted; a replay from nonce 0
        # sees every acceptance itself and must not trust the record for it.
        self.remember_accepted = remember_accepted

    def assignment_timestamp(self, process_id: str, nonce: int) -> int | None:
        return models.Assignment.objects.filter(process_id=process_id, nonce=nonce).values_list(
            "timestamp", flat=True).first()

    def result(self, process_id: str, nonce: int) -> tuple[dict[str, Any], str] | None:
        row = models.Result.objects.filter(process_id=process_id, nonce=nonce).values_list(
            "body", "pushed_for").first()
        return None if row is None else (row[0], row[1])

    def module(self, process_id: str) -> str | None:
        return models.Process.objects.filter(id=process_id).values_list("module", flat=True).first()

    def accepted_before(self, target: str, origin: str, nonce: int) -> bool:
        return self.remember_accepted and models.Result.objects.filter(
            process_id=target, origin=origin, nonce__lt=nonce).exists()


@dataclass
class Origins:
    """Judges the pushes one target process receives, in nonce order."""

    target: str
    trusted: frozenset[str]
    sources: Sources = field(default_factory=LocalSources)
    accepted: dict[str, int] = field(default_factory=dict)  # origin key -> the nonce that accepted it

    def judge(self, item: dataitem.DataItem, *, nonce: int, timestamp: int) -> Origin | None:
        """The origin of a genuine push, or None for any other message."""
        if item.owner_address not in self.trusted:
            return None
        source = cu.first_tag(item.tags, "From-Process")
        if source is None or not su.is_id(source):
            return None
        named = mu.anchor_origin(source, item.anchor)
        if named is None:
            return None
        origin = Origin(source, *named)
        scheduled = self.sources.assignment_timestamp(source, origin.nonce)
        if scheduled is None or scheduled > timestamp:
            return None
        recorded = self.sources.result(source, origin.nonce)
        if recorded is None:
            raise SourcePending(f"a push claims to come from message {origin.nonce} of {source}, "
                                "which is scheduled but not evaluated yet")
        body, pushed_for = recorded
        messages = body.get("Messages") or []
        if origin.index >= len(messages):
            return None
        try:
            message = mu.OutboxMessage.from_json(messages[origin.index])
        except mu.OutboxError:
            return None
        module = self.sources.module(source) or ""
        if not mu.is_push_of(item, message, process_id=source, module_id=module, pushed_for=pushed_for):
            return None
        earlier = self.accepted.get(origin.key)
        if (earlier is not None and earlier < nonce) or self.sources.accepted_before(self.target, origin.key, nonce):
            return None
        self.accepted[origin.key] = nonce
        return origin
