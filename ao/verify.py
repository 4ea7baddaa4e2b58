"""Replay-verify: rebuild a process from its signed log alone and compare everything the node recorded.

The log is read as the scheduler signed it. For every slot, in nonce order:

- the assignment item parses, is signed by the process's scheduler (the spawn's ``Scheduler``), names this
  process, this nonce, the expected hash-chain link, and a timestamp no earlier than the previous slot's;
- every column the compute unit reads (nonce, epoch, timestamp, block height, hash chain, message id) equals
  the signed assignment's value, and the message item parses, is validly signed, is the one the assignment
  names, and its stored tag rows are its signed tags;
- the message is evaluated on a fresh runtime against state rebuilt in memory from nonce 0, with each push
  judged by the same rule as the live compute unit (``ao.compute.origins``: an outbox entry of its source's
  recorded result, accepted once) — the sources consulted are listed so the caller verifies them too;
- the replay's result, state hash, fuel, Pushed-For and push origin equal the record.

The message count comes from the log: every slot below the compute unit's cursor must have a result, and no
result may exist without a slot. At the end the state table must equal the replayed state. A damaged row is a
divergence with its kind, never a crash; a fault of this node (a store or model it cannot read) is reported as
such and is not a verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from ao import models
from ao.compute.context import ProcessContext, context_from_spawn
from ao.compute.message import Evaluated, evaluate_core_message, evaluate_message, load_module
from ao.compute.origins import LocalSources, Origins, Sources
from ao.effects.compute import fresh_component_runtime
from ao.effects.core64 import CoreModuleRuntime, CoreProcess
from ao.effects.process_state import MemoryState
from ao.errors import HostFault, UnknownProcess
from ao.extensions import llm, weavedrive
from ao.modules import CORE64_FORMAT
from ao.permaweb import dataitem
from ao.units import cu, su

PAGE = 500


@dataclass(frozen=True)
class Divergence:
    """Where a replay first disagreed with the record."""

    nonce: int
    what: str
    recorded: str
    replayed: str


@dataclass
class VerifyReport:
    """The outcome of replaying one process."""

    process_id: str
    checked: int
    divergence: Divergence | None
    seconds: float
    pending: int = 0  # scheduled messages the compute unit has not evaluated yet (not replayed)
    fault: str = ""  # this node could not finish the replay (not a verdict on the record)
    sources: set[str] = field(default_factory=set)  # processes whose recorded outboxes genuine pushes came from
    engines: set[str] = field(default_factory=set)  # LLM engine fingerprints recorded in the replayed calls
    state_compared: bool = False  # the record's state table was compared with the replayed state

    @property
    def ok(self) -> bool:
        return self.divergence is None and not self.fault


@dataclass(frozen=True)
class Slot:
    """One slot of a log as read from a record: the signed assignment, the message, and the row's own columns."""

    nonce: int
    assignment_raw: bytes
    message_raw: bytes | None
    columns: dict[str, Any]  # what the record's row says (id, epoch, timestamp, block_height, hash_chain, message)
    stored_tags: list[tuple[str, str]] | None = None  # the message's tag rows, when the record keeps them


@dataclass(frozen=True)
class Recorded:
    """What the record says one message did."""

    body: Any
    state_hash: str
    gas_used: int | None = None
    pushed_for: str | None = None
    origin: str | None = None


@dataclass(frozen=True)
class _Message:
    raw: bytes


@dataclass(frozen=True)
class _Signed:
    """A slot as the scheduler signed it: what evaluation reads (duck-typed like ``models.Assignment``)."""

    id: str
    nonce: int
    epoch: int
    timestamp: int
    block_height: int
    hash_chain: str
    message_id: str
    message: _Message


class _Diverged(Exception):
    def __init__(self, divergence: Divergence) -> None:
        self.divergence = divergence


def verify_process(*, process_id: str, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Replay a process of this node from its log; stop at the first divergence."""
    if not models.Process.objects.filter(id=process_id).exists():
        raise UnknownProcess(f"no process {process_id} on this node")
    return replay(LocalRecord(process_id), progress=progress)


class LocalRecord:
    """This node's record of one process: its log, results, cursor and state table."""

    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        self.sources: Sources = LocalSources(remember_accepted=False)

    def log_length(self) -> int:
        return models.Assignment.objects.filter(process_id=self.process_id).count()

    def evaluated_up_to(self) -> int:
        return models.Evaluation.objects.filter(process_id=self.process_id).values_list(
            "next_nonce", flat=True).first() or 0

    def slots(self, start: int, end: int) -> Iterator[Slot]:
        rows = list(models.Assignment.objects.filter(process_id=self.process_id, nonce__gte=start, nonce__lt=end)
                    .select_related("message").order_by("nonce"))
        tags: dict[int, list[tuple[str, str]]] = {}  # by the entry's row key
        for entry_id, name, value in models.EntryTag.objects.filter(
                entry_id__in=[r.message_id for r in rows]).order_by("entry_id", "position").values_list(
                "entry_id", "name", "value"):
            tags.setdefault(entry_id, []).append((name, value))
        for row in rows:
            yield Slot(
                nonce=row.nonce, assignment_raw=bytes(row.raw),
                message_raw=None if row.message.raw is None else bytes(row.message.raw),
                columns={"id": row.id, "epoch": row.epoch, "timestamp": row.timestamp,
                         "block_height": row.block_height, "hash_chain": row.hash_chain, "message": row.message.id},
                stored_tags=tags.get(row.message_id, []),
            )

    def results(self, start: int, end: int) -> dict[int, Recorded]:
        return {
            nonce: Recorded(body, state_hash, gas, pushed_for, origin)
            for nonce, body, state_hash, gas, pushed_for, origin in models.Result.objects.filter(
                process_id=self.process_id, nonce__gte=start, nonce__lt=end).values_list(
                "nonce", "body", "state_hash", "gas_used", "pushed_for", "origin")
        }

    def results_beyond(self, length: int) -> int | None:
        return models.Result.objects.filter(process_id=self.process_id, nonce__gte=length).order_by(
            "nonce").values_list("nonce", flat=True).first()

    def state(self) -> dict[str, str] | None:
        return dict(models.StateEntry.objects.filter(process_id=self.process_id).values_list("key", "value"))

    def checkpoints(self) -> dict[int, str]:
        return dict(models.Checkpoint.objects.filter(process_id=self.process_id).values_list("nonce", "sha256"))


def replay(record: Any, *, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Replay `record` (a ``LocalRecord`` or a remote node's) and compare; see the module docstring."""
    started = time.perf_counter()
    process_id = record.process_id
    report = VerifyReport(process_id, 0, None, 0.0)
    try:
        _replay(record, report, progress)
    except _Diverged as diverged:
        report.divergence = diverged.divergence
    except HostFault as fault:
        report.fault = f"this node could not finish the replay at nonce {report.checked}: {fault}"
    report.seconds = time.perf_counter() - started
    return report


def _replay(record: Any, report: VerifyReport, progress: Callable[[int, int], None] | None) -> None:
    process_id = record.process_id
    length = record.log_length()
    evaluated = min(record.evaluated_up_to(), length)
    report.pending = length - evaluated
    if length == 0:
        raise _Diverged(Divergence(0, "log", "a spawn at nonce 0", "no slots"))
    beyond = record.results_beyond(length)
    if beyond is not None:
        raise _Diverged(Divergence(beyond, "result without a message", f"a result at nonce {beyond}",
                                   f"the log has {length} slots"))
    runtime = fresh_component_runtime()
    state = MemoryState()
    admissions = weavedrive.Admissions(process_id, vouchers=[])  # WeaveDrive admits by the replayed log itself
    pctx: ProcessContext | None = None
    origins: Origins | None = None
    core: CoreProcess | None = None
    checkpoints: dict[int, str] = {}
    scheduler = ""
    state_hash = cu.GENESIS_STATE_HASH
    expected_chain = su.first_hash_chain(process_id)
    previous_time = 0
    window_start = 0
    instance_key = f"verify/{process_id}"
    nonce = 0
    with _Prechecker() as checker:
        while nonce < evaluated:
            end = min(nonce + PAGE, evaluated)
            results = record.results(nonce, end)
            for slot, pre in checker.checked(list(record.slots(nonce, end))):
                if slot.nonce != nonce:
                    raise _Diverged(Divergence(nonce, "log", f"slot {nonce}", f"slot {slot.nonce} (a gap)"))
                signed, item, signer = _check_slot(slot, process_id, expected_chain, previous_time, pre)
                if nonce == 0:
                    scheduler = item.tag("Scheduler") or ""  # every assignment must be signed by the spawn's scheduler
                if signer != scheduler:
                    raise _Diverged(Divergence(nonce, "assignment signer", scheduler, signer))
                if nonce == 0:
                    pctx = context_from_spawn(process_id, item)
                    origins = _VerifyOrigins(process_id, pctx.trusted_pushers, record.sources, report)
                    if pctx.module_format == CORE64_FORMAT and not pctx.invalid:
                        core = CoreProcess.create(
                            CoreModuleRuntime(cache_dir=Path(settings.AO["BUILD_CACHE"]) / "core64"),
                            load_module(pctx.module_id), memory_limit_bytes=pctx.memory_limit)
                        checkpoints = record.checkpoints()
                assert pctx is not None and origins is not None
                expected_chain = su.next_hash_chain(signed.id, signed.hash_chain)
                previous_time = signed.timestamp
                if core is None:
                    replayed = evaluate_message(runtime, pctx, state, signed, state_hash, origins=origins,
                                                instance_key=instance_key, fresh=nonce == window_start,
                                                admissions=admissions, item=item)
                    if replayed.error or (nonce + 1) % pctx.window == 0:
                        window_start = nonce + 1
                else:
                    replayed = evaluate_core_message(core, pctx, signed, state_hash, origins=origins, item=item)
                _compare(nonce, results.get(nonce), replayed, item, pctx, report)
                admissions.saw(nonce=nonce, block_height=signed.block_height, item_tags=list(item.tags),
                               signer=item.owner_address)
                if core is not None and nonce in checkpoints:
                    memory = core.take_snapshot().sha256()
                    if memory != checkpoints[nonce]:
                        raise _Diverged(Divergence(nonce, "memory checkpoint", checkpoints[nonce], memory))
                state_hash = replayed.state_hash
                nonce += 1
                report.checked = nonce
                if progress is not None and (nonce % 100 == 0 or nonce == evaluated):
                    progress(nonce, evaluated)
            if nonce < end:
                raise _Diverged(Divergence(nonce, "log", f"slot {nonce}", "missing"))
    if core is None:
        report.state_compared = _compare_state(record, state, evaluated)


@dataclass(frozen=True)
class _Pre:
    """A slot's two items parsed and their signatures checked (``_Prechecker``): an item, or why it did not parse."""

    assignment: dataitem.DataItem | None
    assignment_error: str
    assignment_signed: bool
    message: dataitem.DataItem | None
    message_error: str
    message_signed: bool


def _precheck(slot: Slot) -> _Pre:
    parsed: list[tuple[dataitem.DataItem | None, str, bool]] = []
    for raw in (slot.assignment_raw, slot.message_raw):
        if raw is None:
            parsed.append((None, "", False))
            continue
        try:
            item = dataitem.parse(raw)
        except dataitem.DataItemError as exc:
            parsed.append((None, str(exc)[:200], False))
            continue
        parsed.append((item, "", dataitem.verify(item)))
    return _Pre(*parsed[0], *parsed[1])


class _Prechecker:
    """Parses slots and checks their signatures on a helper thread while this one replays the slots before them.

    The two halves of a slot's work wait on different things: signature checks on libsodium, replay on wasmtime,
    and both release the GIL meanwhile, so on two cores they overlap. Only pure work runs on the helper; every
    verdict is still drawn in nonce order by ``_check_slot``.
    """

    CHUNK = 50

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-signatures")

    def __enter__(self) -> _Prechecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def checked(self, slots: list[Slot]) -> Iterator[tuple[Slot, _Pre]]:
        chunks = [slots[i:i + self.CHUNK] for i in range(0, len(slots), self.CHUNK)]
        futures = [self._pool.submit(lambda chunk: [_precheck(slot) for slot in chunk], c) for c in chunks]
        for chunk, future in zip(chunks, futures):
            yield from zip(chunk, future.result())


def _check_slot(slot: Slot, process_id: str, expected_chain: str,
                previous_time: int, pre: _Pre) -> tuple[_Signed, dataitem.DataItem, str]:
    """The slot as signed, after every check of its assignment and message; the message item; the assignment's signer."""
    nonce = slot.nonce
    assignment = pre.assignment
    if assignment is None:
        raise _Diverged(Divergence(nonce, "assignment damaged", "a signed assignment item", pre.assignment_error))
    if not pre.assignment_signed:
        raise _Diverged(Divergence(nonce, "assignment signature", "a valid signature", "the signature does not verify"))
    tags = dict(assignment.tags)
    try:
        signed_nonce, epoch = int(tags.get("Nonce", "")), int(tags.get("Epoch", ""))
        timestamp, height = int(tags.get("Timestamp", "")), int(tags.get("Block-Height", ""))
    except ValueError:
        raise _Diverged(Divergence(nonce, "assignment tags", "integer Nonce, Epoch, Timestamp, Block-Height",
                                   str(tags)[:200])) from None
    signed = _Signed(
        id=assignment.id, nonce=signed_nonce, epoch=epoch, timestamp=timestamp, block_height=height,
        hash_chain=tags.get("Hash-Chain", ""), message_id=tags.get("Message", ""), message=_Message(b""),
    )
    if tags.get("Type") != "Assignment" or tags.get("Process") != process_id or signed_nonce != nonce:
        raise _Diverged(Divergence(nonce, "assignment", f"process {process_id} nonce {nonce}",
                                   f"process {tags.get('Process')} nonce {tags.get('Nonce')}"))
    if signed.hash_chain != expected_chain:
        raise _Diverged(Divergence(nonce, "hash chain", expected_chain, signed.hash_chain))
    if timestamp < previous_time:
        raise _Diverged(Divergence(nonce, "assignment timestamp", f">= {previous_time} (the previous slot)",
                                   str(timestamp)))
    for column, value in (("id", signed.id), ("epoch", epoch), ("timestamp", timestamp), ("block_height", height),
                          ("hash_chain", signed.hash_chain), ("message", signed.message_id)):
        if slot.columns.get(column) != value:
            raise _Diverged(Divergence(nonce, f"assignment {column.replace('_', ' ')}",
                                       f"{value} (signed by the scheduler)", f"{slot.columns.get(column)} (the record)"))
    if slot.message_raw is None:
        raise _Diverged(Divergence(nonce, "message missing", signed.message_id, "no stored item"))
    item = pre.message
    if item is None:
        raise _Diverged(Divergence(nonce, "message damaged", signed.message_id, pre.message_error))
    if not pre.message_signed:
        raise _Diverged(Divergence(nonce, "message signature", f"{signed.message_id} signed by its owner",
                                   "the signature does not verify (its tags, data or signature were changed)"))
    if item.id != signed.message_id:
        raise _Diverged(Divergence(nonce, "message reference", signed.message_id, item.id))
    if slot.stored_tags is not None and slot.stored_tags != list(item.tags):
        raise _Diverged(Divergence(nonce, "message tags", _tags_text(item.tags), _tags_text(slot.stored_tags)))
    return _Signed(**{**signed.__dict__, "message": _Message(slot.message_raw)}), item, assignment.owner_address


def _tags_text(tags: Any) -> str:
    return ", ".join(f"{n}={v}" for n, v in tags)[:500]


class _VerifyOrigins(Origins):
    """The live rule, remembering which source processes it relied on."""

    def __init__(self, target: str, trusted: frozenset[str], sources: Sources, report: VerifyReport) -> None:
        super().__init__(target, trusted, sources)
        self.report = report

    def judge(self, item: dataitem.DataItem, *, nonce: int, timestamp: int):  # type: ignore[no-untyped-def]
        origin = super().judge(item, nonce=nonce, timestamp=timestamp)
        if origin is not None and origin.process_id != self.target:
            self.report.sources.add(origin.process_id)
        return origin


def _compare(nonce: int, recorded: Recorded | None, replayed: Evaluated, item: dataitem.DataItem,
             pctx: ProcessContext, report: VerifyReport) -> None:
    if recorded is None:
        raise _Diverged(Divergence(nonce, "result missing", "a result (the compute unit's cursor is past it)",
                                   "no result row"))
    report.engines |= _engines(recorded.body)
    if recorded.origin is not None and recorded.origin != replayed.origin:
        source = cu.first_tag(item.tags, "From-Process") or "?"
        raise _Diverged(Divergence(
            nonce, "forged push" if recorded.origin else "push origin",
            f"accepted as {source}'s word ({recorded.origin or 'not a push'})",
            f"{replayed.origin or 'not an outbox entry of ' + source + ' that was not delivered before'}"))
    if recorded.body != replayed.body:
        kind = "result"
        if item.owner_address in pctx.trusted_pushers and not replayed.origin and cu.first_tag(item.tags, "From-Process"):
            kind = "forged push"  # the record treated a messenger-signed message as its claimed source's word
        engine = _engine_note(recorded.body, replayed.body)
        raise _Diverged(Divergence(nonce, kind + engine, cu.canonical(recorded.body).decode()[:2000],
                                   cu.canonical(replayed.body).decode()[:2000]))
    if replayed.state_hash != recorded.state_hash:
        raise _Diverged(Divergence(nonce, "state hash", recorded.state_hash, replayed.state_hash))
    if recorded.gas_used is not None and replayed.gas_used != recorded.gas_used:
        raise _Diverged(Divergence(nonce, "gas used", str(recorded.gas_used), str(replayed.gas_used)))
    if recorded.pushed_for is not None and replayed.pushed_for != recorded.pushed_for:
        raise _Diverged(Divergence(nonce, "pushed-for", recorded.pushed_for, replayed.pushed_for))


def _engine_note(recorded: Any, replayed: Any) -> str:
    """When the recorded completions ran on another LLM engine than this node's, say so."""
    theirs, ours = _engines(recorded), _engines(replayed) or {llm.engine_fingerprint()}
    if theirs and theirs != ours:
        return f" (the record's LLM engine {', '.join(sorted(theirs))} differs from this node's {', '.join(sorted(ours))})"
    return ""


def _engines(body: Any) -> set[str]:
    """The LLM engine fingerprints in a result's call records."""
    calls = body.get("Calls") if isinstance(body, dict) else None
    found = set()
    for call in calls if isinstance(calls, list) else []:
        params = call.get("params") if isinstance(call, dict) else None
        if isinstance(params, dict) and params.get("engine"):
            found.add(str(params["engine"]))
    return found


def _compare_state(record: Any, state: MemoryState, evaluated: int) -> bool:
    stored = record.state()
    if stored is None:
        return False
    replayed = state.data
    for key in sorted(set(stored) | set(replayed)):
        if stored.get(key) != replayed.get(key):
            raise _Diverged(Divergence(evaluated - 1, f"state row {key[:200]}",
                                       str(stored.get(key))[:500] if key in stored else "(absent)",
                                       str(replayed.get(key))[:500] if key in replayed else "(absent)"))
    return True
