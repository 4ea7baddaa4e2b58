"""Every write of the SU and the MU's intake: scheduling items into process logs, node keys, attestations.

The compute unit's writes (evaluation, pushes and their delivery) live in ``ao.compute``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from django.conf import settings
from django.db import IntegrityError, transaction

from ao import limits, models
from ao.effects import bulk, keys
from ao.effects.stores import embedded_store
from ao.errors import (
    AoError,
    BadSignature,
    DuplicateMessage,
    InvalidMessage,
    SpawnRefused,
    UnknownMessage,
    UnknownProcess,
    WrongScheduler,
)
from ao.permaweb import dataitem
from ao.permaweb.store import Duplicate
from ao.permaweb.wallet import Ed25519Key
from ao import dispatch
from ao.units import cu, mu, su

log = logging.getLogger(__name__)

def _parse_verified(raw: bytes) -> dataitem.DataItem:
    """Parse and verify a submitted item, mapping store errors to the units' errors."""
    su.check_size(raw, settings.AO["MAX_MESSAGE_BYTES"])
    try:
        item = dataitem.parse(raw, max_size=settings.AO["MAX_MESSAGE_BYTES"])
    except dataitem.DataItemError as exc:
        raise InvalidMessage(f"not a valid ANS-104 data item: {exc}") from exc
    if not dataitem.verify(item):
        raise BadSignature(f"data item {item.id}: signature does not verify")
    return item


Admission = Callable[[dataitem.DataItem, su.Schedulable], None]


def su_schedule(*, raw: bytes, admit: Admission | None = None) -> models.Assignment:
    """Verify an item and assign it the next nonce of its process's log (a spawn takes nonce 0).

    ``admit`` (the public endpoints' limits, ``public_admission``) sees the verified item before anything is stored
    and may refuse it by raising.
    """
    item = _parse_verified(raw)
    schedulable = su.classify(item)
    if admit is not None:
        admit(item, schedulable)
    return su_assign(item=item, schedulable=schedulable)


def public_admission(item: dataitem.DataItem, schedulable: su.Schedulable) -> None:
    """What an item posted by anyone must pass: its signer's rate, and for a spawn this node's spawn policy."""
    limits.hit("intake-signer", item.owner_address, limits.configured("intake_signer"),
               what="items signed by this wallet")
    if schedulable.is_spawn:
        _admit_spawn(item)


def _admit_spawn(item: dataitem.DataItem) -> None:
    """Signers outside the allow-list get bounded fuel and memory, and a spawn rate (settings.AO["SPAWN_*"])."""
    if item.owner_address in keys.trusted_signers():
        return
    module_id = item.tag("Module") or ""
    records = embedded_store().query(ids=[module_id], first=1) if su.is_id(module_id) else []
    module_tags = [(t.name, t.value) for t in records[0].tags] if records else []
    try:
        memory, fuel = cu.process_limits(spawn_tags=item.tags, module_tags=module_tags)
    except cu.LimitError as exc:
        raise InvalidMessage(str(exc)) from exc
    max_fuel, max_memory = settings.AO["SPAWN_MAX_FUEL"], settings.AO["SPAWN_MAX_MEMORY"]
    asks = []
    if fuel > max_fuel:
        asks.append(f"Compute-Limit of at most {max_fuel} (this spawn would get {fuel} fuel per message)")
    if memory > max_memory:
        asks.append(f"Memory-Limit of at most {max_memory} bytes (this spawn would get {memory})")
    if asks:
        raise SpawnRefused("this node runs processes spawned by wallets outside its allow-list with bounded "
                           "fuel and memory: spawn again with a " + " and a ".join(asks))
    limits.hit("spawn-signer", item.owner_address, limits.configured("spawn_signer"), what="spawns by this wallet")


def _lock_processes(ids: Iterable[str]) -> dict[str, models.Process]:
    """Lock the processes' heads for appending, in id order so that concurrent schedulers cannot deadlock.

    FOR NO KEY UPDATE, not FOR UPDATE: a worker committing results holds the process's cursor row and inserts rows
    that reference the process, which takes FOR KEY SHARE on it; FOR UPDATE would block that insert while this
    transaction waits for the cursor row, a deadlock on PostgreSQL. Appending changes no key, so nothing is lost.
    """
    rows = models.Process.objects.select_for_update(no_key=True).filter(id__in=sorted(set(ids))).order_by("id")
    return {p.id: p for p in rows}


def su_assign_existing(*, process_id: str, message_id: str) -> models.Assignment:
    """AO's assign: put a message this node already holds (sent to another process) into a process's log as is.

    The message keeps its own Target, so the process sees it was assigned; processes written with aosdk refuse
    assigned messages unless they take them (``aosdk.Process(accepts_assignments=True)``), as aos does.
    """
    for name, value in (("process-id", process_id), ("assign", message_id)):
        if not su.is_id(value):
            raise InvalidMessage(f"{name} must be a 43-character id, got {value[:60]!r}")
    entry = models.Entry.objects.filter(id=message_id).first()
    if entry is None:
        raise UnknownMessage(f"no message {message_id} on this node to assign")
    if entry.kind != models.Entry.Kind.ITEM:
        raise InvalidMessage(f"{message_id} is an L1 transaction: this scheduler assigns messages (data items) it "
                             "holds; a process reads L1 data through WeaveDrive once the scheduler attests it")
    item = embedded_store().get_item(message_id)
    if su.classify(item).is_spawn:
        raise InvalidMessage(f"{message_id} is a process spawn; a spawn cannot be assigned to another process")
    key = keys.scheduler_key()
    with transaction.atomic():
        latest = embedded_store().latest_block()
        process = _lock_processes([process_id]).get(process_id)
        if process is None:
            raise UnknownProcess(f"no process {process_id} on this scheduler")
        if models.Assignment.objects.filter(process=process, message=entry).exists():
            raise DuplicateMessage(f"message {message_id} is already in the log of {process_id}")
        assignment = _append(process, entry, key, latest or 0, _source_times([item]).get(item.id, 0))
        dispatch.request_evaluation(process_id)
    return assignment


def su_assign(*, item: dataitem.DataItem, schedulable: su.Schedulable) -> models.Assignment:
    """Store a verified item and its signed assignment in one transaction; nothing on error."""
    key = keys.scheduler_key()
    try:
        with transaction.atomic():
            latest = embedded_store().latest_block()
            process = None
            if not schedulable.is_spawn:
                process = _lock_processes([schedulable.process_id]).get(schedulable.process_id)
            assignment = _assign_locked(item, schedulable, process, key, latest)
            dispatch.request_evaluation(assignment.process_id)
            return assignment
    except Duplicate as exc:
        raise DuplicateMessage(str(exc)) from exc
    except IntegrityError as exc:
        if models.Entry.objects.filter(id=item.id).exists():
            raise DuplicateMessage(f"message {item.id} is already scheduled") from exc
        raise


def su_schedule_batch(*, raws: Sequence[bytes]) -> list[models.Assignment | AoError]:
    """Schedule many items in one transaction with bulk writes: one lock per process, one evaluation request each.

    Each item succeeds or fails on its own; the list answers item by item. If a concurrent writer
    stores one of the items first, the batch falls back to one savepoint per item.
    """
    out: list[models.Assignment | AoError | None] = []
    items: list[dataitem.DataItem] = []
    for raw in raws:
        try:
            items.append(_parse_verified(raw))
            out.append(None)
        except AoError as exc:
            out.append(exc)
    assigned = iter(su_assign_items(items=items))
    return [o if o is not None else next(assigned) for o in out]


def su_assign_items(*, items: Sequence[dataitem.DataItem]) -> list[models.Assignment | AoError]:
    """Schedule verified items (the messenger's own pushes, or items verified by the caller), answering item by item."""
    key = keys.scheduler_key()
    out: list[models.Assignment | AoError | None] = []
    todo: list[tuple[int, dataitem.DataItem, su.Schedulable]] = []
    seen: set[str] = set()
    for item in items:
        try:
            schedulable = su.classify(item)
            if item.id in seen:
                raise DuplicateMessage(f"message {item.id} appears twice in the batch")
            seen.add(item.id)
            todo.append((len(out), item, schedulable))
            out.append(None)
        except AoError as exc:
            out.append(exc)
    with transaction.atomic():
        try:
            with transaction.atomic():
                _bulk_assign(todo, out, key)
        except IntegrityError:
            out = [o if isinstance(o, AoError) else None for o in out]
            _assign_one_by_one(todo, out, key)
        for process_id in sorted({a.process_id for a in out if isinstance(a, models.Assignment)}):
            dispatch.request_evaluation(process_id)
    return [o for o in out if o is not None]


def _bulk_assign(
    todo: list[tuple[int, dataitem.DataItem, su.Schedulable]],
    out: list[models.Assignment | AoError | None],
    key: Ed25519Key,
) -> None:
    """Check, then insert every item, tag, assignment and process head of a batch with a few queries."""
    store = embedded_store()
    latest = store.latest_block()
    existing = set(models.Entry.objects.filter(id__in=[i.id for _, i, _ in todo]).values_list("id", flat=True))
    locked = _lock_processes(s.process_id for _, _, s in todo if not s.is_spawn)
    accepted: list[tuple[int, dataitem.DataItem, models.Process]] = []
    new_processes: list[models.Process] = []
    for index, item, schedulable in todo:
        if item.id in existing:
            out[index] = DuplicateMessage(f"message {item.id} is already scheduled")
        elif schedulable.is_spawn:
            if item.tag("Scheduler") != key.address:
                out[index] = WrongScheduler(
                    f"process names scheduler {item.tag('Scheduler')}; this scheduler is {key.address}"
                )
                continue
            process = models.Process(
                id=item.id, owner_address=item.owner_address, module=item.tag("Module") or "", scheduler=key.address
            )
            new_processes.append(process)
            locked[process.id] = process
            accepted.append((index, item, process))
        elif schedulable.process_id not in locked:
            out[index] = UnknownProcess(f"no process {schedulable.process_id} on this scheduler")
        else:
            accepted.append((index, item, locked[schedulable.process_id]))
    seqs = store.insert_items([item for _, item, _ in accepted], block=latest)
    models.Process.objects.bulk_create(new_processes)
    models.Evaluation.objects.bulk_create(_new_cursor(p.id) for p in new_processes)
    floors = _source_times([item for _, item, _ in accepted])
    assignments = [
        _next_slot(process, item.id, seq, key, latest or 0, floors.get(item.id, 0))
        for seq, (_, item, process) in zip(seqs, accepted)
    ]
    bulk.insert_rows(models.Assignment, ASSIGNMENT_COLUMNS, [_assignment_row(a) for a in assignments])
    touched = {p.id: p for _, _, p in accepted if p not in new_processes}
    models.Process.objects.bulk_update(
        [*touched.values(), *new_processes], ["next_nonce", "last_assignment", "last_hash_chain", "last_timestamp"]
    )
    for assignment, (index, _, _) in zip(assignments, accepted):
        out[index] = assignment


ASSIGNMENT_COLUMNS = ("id", "process_id", "nonce", "epoch", "message_id", "hash_chain", "block_height", "timestamp",
                      "raw")


def _assign_one_by_one(
    todo: list[tuple[int, dataitem.DataItem, su.Schedulable]],
    out: list[models.Assignment | AoError | None],
    key: Ed25519Key,
) -> None:
    """The slow path: a savepoint per item."""
    latest = embedded_store().latest_block()
    locked = _lock_processes(s.process_id for _, _, s in todo if not s.is_spawn)
    for index, item, schedulable in todo:
        try:
            with transaction.atomic():
                assignment = _assign_locked(item, schedulable, locked.get(schedulable.process_id), key, latest)
        except (Duplicate, IntegrityError):
            out[index] = DuplicateMessage(f"message {item.id} is already scheduled")
            continue
        except AoError as exc:
            out[index] = exc
            continue
        locked[assignment.process_id] = assignment.process
        out[index] = assignment


def _assign_locked(
    item: dataitem.DataItem,
    schedulable: su.Schedulable,
    process: models.Process | None,
    key: Ed25519Key,
    latest_block: int | None,
) -> models.Assignment:
    """Store the item and append it to its (locked, or new) process's log."""
    store = embedded_store()
    if schedulable.is_spawn:
        if item.tag("Scheduler") != key.address:
            raise WrongScheduler(f"process names scheduler {item.tag('Scheduler')}; this scheduler is {key.address}")
        [entry] = store.save_items([item], block=latest_block)
        process = models.Process.objects.create(
            id=item.id, owner_address=item.owner_address, module=item.tag("Module") or "", scheduler=key.address
        )
        _new_cursor(process.id).save(force_insert=True)
    else:
        if process is None:
            raise UnknownProcess(f"no process {schedulable.process_id} on this scheduler")
        [entry] = store.save_items([item], block=latest_block)  # plain inserts: every message takes this path
    return _append(process, entry, key, latest_block or 0, _source_times([item]).get(item.id, 0))


def _new_cursor(process_id: str) -> models.Evaluation:
    """The compute unit's cursor of a new process: made with its spawn, so work requests can mark it."""
    return models.Evaluation(process_id=process_id, next_nonce=0, state_hash=cu.GENESIS_STATE_HASH)


def _append(
    process: models.Process, entry: models.Entry, key: Ed25519Key, height: int, floor: int = 0,
) -> models.Assignment:
    """Write the next slot of a locked process's log."""
    assignment = _next_slot(process, entry.id, entry.pk, key, height, floor)
    assignment.message = entry
    bulk.insert_rows(models.Assignment, ASSIGNMENT_COLUMNS, [_assignment_row(assignment)])
    assignment._state.adding, assignment._state.db = False, "default"
    models.Process.objects.filter(pk=process.pk).update(
        next_nonce=process.next_nonce, last_assignment=process.last_assignment,
        last_hash_chain=process.last_hash_chain, last_timestamp=process.last_timestamp)
    return assignment


def _assignment_row(a: models.Assignment) -> tuple[object, ...]:
    return (a.id, a.process_id, a.nonce, a.epoch, a.message_id, a.hash_chain, a.block_height, a.timestamp, a.raw)


def _source_times(items: Sequence[dataitem.DataItem]) -> dict[str, int]:
    """For pushes naming an outbox entry of a process here: the timestamp of the message that sent it, by item id.

    A push is its source's word only if the source message was scheduled no later (``ao.compute.origins``);
    scheduling a genuine push no earlier than that keeps it true even if the wall clock steps back.
    """
    wanted: dict[tuple[str, int], list[str]] = {}
    for item in items:
        source = item.tag("From-Process")
        named = mu.anchor_origin(source, item.anchor) if source and su.is_id(source) else None
        if named is not None:
            wanted.setdefault((source, named[0]), []).append(item.id)
    if not wanted:
        return {}
    found: dict[str, int] = {}
    by_source: dict[str, list[int]] = {}
    for source, nonce in wanted:
        by_source.setdefault(source, []).append(nonce)
    for source, nonces in by_source.items():
        for nonce, timestamp in models.Assignment.objects.filter(process_id=source, nonce__in=nonces).values_list(
                "nonce", "timestamp"):
            for item_id in wanted[(source, nonce)]:
                found[item_id] = timestamp
    return found


def _next_slot(
    process: models.Process, message_id: str, message_seq: int, key: Ed25519Key, height: int, floor: int = 0,
) -> models.Assignment:
    """The signed assignment for the next nonce of a locked process; advances the process head in memory."""
    nonce = process.next_nonce
    if nonce == 0:
        hash_chain = su.first_hash_chain(process.id)
    else:
        hash_chain = su.next_hash_chain(process.last_assignment, process.last_hash_chain)
    # Timestamps never go backwards within a log, whatever the wall clock does.
    timestamp = max(int(time.time() * 1000), process.last_timestamp, floor)
    item = su.build_assignment(
        key,
        process_id=process.id,
        message_id=message_id,
        epoch=process.epoch,
        nonce=nonce,
        hash_chain=hash_chain,
        block_height=height,
        timestamp_ms=timestamp,
    )
    process.next_nonce, process.last_assignment = nonce + 1, item.id
    process.last_hash_chain, process.last_timestamp = hash_chain, timestamp
    return models.Assignment(
        id=item.id,
        process=process,
        nonce=nonce,
        epoch=process.epoch,
        message_id=message_seq,
        hash_chain=hash_chain,
        block_height=height,
        timestamp=timestamp,
        raw=item.serialize(),
    )


def spawn_tags(module_id: str, extra: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """The tags of a spawn on this node: protocol, module, this scheduler, and this messenger as the only Authority.

    The Authority tag is what lets this node's messenger deliver other processes' messages to the new process
    (still checked against their recorded outboxes); a process spawned without it hears every push as the
    messenger's own message.
    """
    return [("Data-Protocol", su.DATA_PROTOCOL), ("Variant", su.VARIANT), ("Type", "Process"), ("Module", module_id),
            ("Scheduler", keys.scheduler_key().address), ("Authority", keys.messenger_key().address), *extra]


def mu_submit(*, raw: bytes, admit: Admission | None = None) -> models.Assignment:
    """The messenger's intake: a signed item from a user goes to this node's scheduler."""
    return su_schedule(raw=raw, admit=admit)


def mu_submit_verified(*, item: dataitem.DataItem) -> models.Assignment:
    """The messenger's intake for an item its caller has already parsed and whose signature it has verified (the
    site's petition endpoints): the same scheduling, without checking the signature a second time."""
    return su_assign(item=item, schedulable=su.classify(item))


SCHEDULER_LOCATION_TTL_MS = 7 * 24 * 3600 * 1000


def node_init() -> tuple[list[str], str]:
    """Create missing keys and publish a Scheduler-Location record for this SU; idempotent."""
    created = keys.ensure_keys()
    su_key = keys.scheduler_key()
    url = settings.AO["PUBLIC_URL"].rstrip("/") + "/ao/su"
    store = embedded_store()
    for record in store.query(owners=[su_key.address], tags=[("Type", ["Scheduler-Location"])], descending=True):
        if any(t.name == "Url" and t.value == url for t in record.tags):
            return created, record.id
    item = dataitem.create_data_item(
        su_key,
        b"",
        tags=[
            ("Data-Protocol", su.DATA_PROTOCOL),
            ("Variant", su.VARIANT),
            ("Type", "Scheduler-Location"),
            ("Url", url),
            ("Time-To-Live", str(SCHEDULER_LOCATION_TTL_MS)),
        ],
    )
    store.save_item(item)
    return created, item.id


def su_attest(*, process_id: str, tx_id: str) -> models.Assignment:
    """The scheduler attests that a transaction is available to a process (WeaveDrive Assignments mode); idempotent."""
    if not su.is_id(tx_id):
        raise InvalidMessage(f"not a transaction id: {tx_id[:60]!r}")
    key = keys.scheduler_key()
    anchor = hashlib.sha256(f"ao-attest/{process_id}/{tx_id}".encode()).digest()
    item = dataitem.create_data_item(
        key,
        b"",
        tags=[("Data-Protocol", su.DATA_PROTOCOL), ("Variant", su.VARIANT), ("Type", "Attestation"), ("Message", tx_id)],
        target=process_id,
        anchor=anchor,
    )
    try:
        return su_assign(item=item, schedulable=su.classify(item))
    except DuplicateMessage:
        return models.Assignment.objects.get(process_id=process_id, message__id=item.id)
