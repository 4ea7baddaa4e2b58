"""The compute unit's writes: evaluate a process's pending messages in order, exactly once.

``cu_evaluate_pending`` takes the process's evaluation lock (a row lock on its cursor; a
second worker skips a locked process), evaluates a batch of messages in nonce order, and
commits the batch's results, state writes, cursor and outbox pushes in one transaction. A
worker killed at any point leaves either the whole batch or none of it; the next run starts
from the cursor. Delivery of pushes happens after the commit (``ao.deliver_pushes``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.db import transaction
from django.db.models import F

from ao import models
from ao.effects import keys
from ao.effects.compute import component_runtime
from ao.effects.process_state import BatchState
from ao.effects.stores import embedded_store
from ao.effects.wasm_runtime import CallContext, ComponentRuntime, HostCallError, check_value
from ao.errors import AoError
from ao.effects import core_processes
from ao.extensions import llm_host, weavedrive
from ao.effects.core64 import CoreProcess
from ao.modules import COMPONENT_FORMAT, CORE64_FORMAT
from ao.permaweb import dataitem
from ao.units import cu, mu
from ao.units import weavedrive as wd

log = logging.getLogger(__name__)

DEFAULT_BATCH = 500


class EvaluationError(AoError):
    """The process cannot be evaluated (its module is missing or of an unknown format)."""

    status = 422


class ProcessBusy(AoError):
    """Another worker is evaluating this process."""

    status = 503


@dataclass(frozen=True)
class ProcessContext:
    """What stays the same for every message of a process."""

    process_id: str
    module_id: str
    env_json: str
    fuel: int
    memory_limit: int
    trusted_pushers: frozenset[str]
    module_format: str = COMPONENT_FORMAT
    weave: wd.Policy | None = None
    llm: bool = False


def process_context(process_id: str) -> ProcessContext:
    """Read the spawn and its module; limits from the process's tags, then the module's, then defaults."""
    spawn_raw = (
        models.Assignment.objects.filter(process_id=process_id, nonce=0).values_list("message__raw", flat=True).first()
    )
    if spawn_raw is None:
        raise EvaluationError(f"no process {process_id}")
    spawn = dataitem.parse(bytes(spawn_raw))
    module_id = spawn.tag("Module") or ""
    records = embedded_store().query(ids=[module_id], first=1)
    if not records or records[0].kind != "tx":
        raise EvaluationError(f"process {process_id}: module {module_id} is not in the store")
    module = records[0]
    module_tags = [(t.name, t.value) for t in module.tags]
    fmt = cu.first_tag(module_tags, "Module-Format")
    if fmt not in (COMPONENT_FORMAT, CORE64_FORMAT):
        raise EvaluationError(
            f"module {module_id} has Module-Format {fmt!r}; this unit runs {COMPONENT_FORMAT} and {CORE64_FORMAT}"
        )
    try:
        memory = cu.parse_memory_limit(spawn.tag("Memory-Limit") or cu.first_tag(module_tags, "Memory-Limit"))
        fuel = cu.parse_compute_limit(spawn.tag("Compute-Limit") or cu.first_tag(module_tags, "Compute-Limit"))
    except cu.LimitError as exc:
        raise EvaluationError(f"process {process_id}: {exc}") from exc
    try:
        weave = wd.policy_from_tags(
            process_tags=spawn.tags, module_tags=module_tags, scheduler=spawn.tag("Scheduler") or "",
            owner=spawn.owner_address,
        )
    except wd.WeaveDriveError as exc:
        raise EvaluationError(f"process {process_id}: {exc}") from exc
    env = cu.env_json(
        process_id=process_id,
        process_owner=spawn.owner_address,
        process_tags=spawn.tags,
        module_id=module_id,
        module_owner=module.owner_address,
        module_tags=module_tags,
    )
    return ProcessContext(
        process_id=process_id,
        module_id=module_id,
        env_json=cu.canonical(env).decode("utf-8"),
        fuel=fuel,
        memory_limit=memory,
        trusted_pushers=frozenset({keys.messenger_key().address}),
        module_format=fmt,
        weave=weave,
        llm=llm_host.enabled(list(spawn.tags), module_tags),
    )


@lru_cache(maxsize=256)
def _module_bytes(module_id: str) -> bytes:
    return embedded_store().read(module_id)


@dataclass(frozen=True)
class Evaluated:
    """One message's evaluation, ready to commit."""

    nonce: int
    message_id: str
    body: dict[str, Any]
    error: str
    gas_used: int
    state_hash: str
    logs: tuple[str, ...]


def evaluate_message(
    runtime: ComponentRuntime,
    pctx: ProcessContext,
    state: BatchState,
    assignment: models.Assignment,
    previous_hash: str,
    *,
    instance_key: str | None,
    admissions: weavedrive.Admissions | None = None,
) -> Evaluated:
    """Evaluate one scheduled message against the batch state (pure but for the runtime)."""
    message_id, msg_json = message_json_for(pctx, assignment)
    seed = hashlib.sha256(f"{pctx.process_id}/{assignment.nonce}/{message_id}".encode()).digest()
    ctx = CallContext(state=state, seed=seed, timestamp_ms=assignment.timestamp)
    if pctx.weave is not None and pctx.weave.enabled:
        ctx.weavedrive = weavedrive.WeaveDrive(
            policy=pctx.weave, process_id=pctx.process_id, nonce=assignment.nonce,
            block_height=assignment.block_height,
            admissions=admissions or weavedrive.Admissions(pctx.process_id), cache=weavedrive.chunk_cache(),
        )
        if pctx.llm:
            ctx.llm = llm_host.LlmBinding(drive=ctx.weavedrive)
    component = runtime.component(pctx.module_id, lambda: _module_bytes(pctx.module_id))
    outcome = runtime.call(
        component, msg_json, pctx.env_json, ctx,
        fuel=pctx.fuel, memory_limit=pctx.memory_limit, instance_key=instance_key,
    )
    error = outcome.error
    body: dict[str, Any]
    if error is None and outcome.output is not None:
        try:
            body, carried = cu.normalize_result(outcome.output)
            error = body.get("Error")
            for key, value in carried.items():
                if value is None:
                    state.delete(key)
                else:
                    check_value(key, value)
                    state.set(key, value)
        except (cu.ResultError, HostCallError) as exc:
            error = str(exc)
    if error:
        state.rollback_message()
        body = {"Messages": [], "Spawns": [], "Assignments": [], "Output": "", "Error": error}
        writes: dict[str, str | None] = {}
    else:
        writes = state.commit_message()
    if ctx.llm is not None and ctx.llm.calls:
        body["Calls"] = ctx.llm.calls  # every completion's request, model, params, raw output, token counts
    state_hash = cu.next_state_hash(previous_hash, assignment.nonce, writes, body)
    return Evaluated(
        nonce=assignment.nonce, message_id=message_id, body=body, error=error or "", gas_used=outcome.gas_used,
        state_hash=state_hash, logs=outcome.logs,
    )


CORE_TIMEOUT_S = 60.0


def message_json_for(pctx: ProcessContext, assignment: models.Assignment) -> tuple[str, str]:
    """(message id, canonical msg JSON) of a scheduled message as the process sees it."""
    item = dataitem.parse(bytes(assignment.message.raw))
    slot = cu.Slot(
        process_id=pctx.process_id, nonce=assignment.nonce, epoch=assignment.epoch, timestamp=assignment.timestamp,
        block_height=assignment.block_height, hash_chain=assignment.hash_chain,
    )
    msg = cu.message_json(item, slot, trusted_pushers=pctx.trusted_pushers)
    return item.id, cu.canonical(msg).decode("utf-8")


def evaluate_core_message(
    core: CoreProcess, pctx: ProcessContext, assignment: models.Assignment, previous_hash: str
) -> Evaluated:
    """Evaluate one message of a core (memory64) process; its state is the live memory."""
    message_id, msg_json = message_json_for(pctx, assignment)
    outcome = core.evaluate(msg_json, pctx.env_json, fuel=pctx.fuel, timeout_s=CORE_TIMEOUT_S)
    error = outcome.error
    body: dict[str, Any] = {}
    if error is None:
        try:
            body, _ = cu.normalize_result(cu.canonical(outcome.result).decode("utf-8"))
        except cu.ResultError as exc:
            error = str(exc)  # pragma: no cover - core64 already validated the result
    if error:
        body = {"Messages": [], "Spawns": [], "Assignments": [], "Output": "", "Error": error}
    state_hash = cu.next_state_hash(previous_hash, assignment.nonce, {}, body)
    return Evaluated(
        nonce=assignment.nonce, message_id=message_id, body=body, error=error or "", gas_used=outcome.gas_used,
        state_hash=state_hash, logs=(),
    )


def _core_at(pctx: ProcessContext, next_nonce: int) -> CoreProcess:
    """The live core process at next_nonce: this worker's, or restored from the newest checkpoint and replayed."""
    live = core_processes.live_cores().get(pctx.process_id)
    if live is not None and live.next_nonce == next_nonce and live.process.broken is None:
        return live.process
    core_processes.live_cores().pop(pctx.process_id, None)
    checkpoint = (
        models.Checkpoint.objects.filter(process_id=pctx.process_id, nonce__lt=next_nonce).order_by("-nonce").first()
    )
    snapshot = core_processes.load_snapshot(checkpoint) if checkpoint else None
    core = CoreProcess.create(
        core_processes.core_runtime(), _module_bytes(pctx.module_id), memory_limit_bytes=pctx.memory_limit,
        snapshot=snapshot,
    )
    start = checkpoint.nonce + 1 if checkpoint else 0
    recorded = {
        r.nonce: r for r in models.Result.objects.filter(process_id=pctx.process_id, nonce__gte=start, nonce__lt=next_nonce)
    }
    replay = models.Assignment.objects.filter(
        process_id=pctx.process_id, nonce__gte=start, nonce__lt=next_nonce
    ).select_related("message").order_by("nonce")
    for assignment in replay:
        previous = recorded[assignment.nonce - 1].state_hash if assignment.nonce - 1 in recorded else ""
        again = evaluate_core_message(core, pctx, assignment, previous)
        if again.body != recorded[assignment.nonce].body:
            raise EvaluationError(
                f"process {pctx.process_id}: replay from the checkpoint diverged at nonce {assignment.nonce}"
            )
    return core


def cu_evaluate_pending(*, process_id: str, batch_size: int = DEFAULT_BATCH, max_batches: int | None = None) -> int:
    """Evaluate every scheduled, unevaluated message of a process in order; return how many. Safe to run twice."""
    done = 0
    batches = 0
    carry: _Carry = _Carry()
    while max_batches is None or batches < max_batches:
        count = _evaluate_batch(process_id, batch_size, carry)
        if count < 0:
            if done:
                break
            raise ProcessBusy(f"process {process_id} is being evaluated by another worker")
        done += count
        batches += 1
        if count < batch_size:
            break
    return done


def processes_with_pending_messages() -> list[str]:
    """Processes whose log runs past their evaluation cursor (or that were never evaluated)."""
    behind = models.Process.objects.filter(evaluation__next_nonce__lt=F("next_nonce"))
    never = models.Process.objects.filter(evaluation__isnull=True, next_nonce__gt=0)
    return sorted(set(behind.values_list("id", flat=True)) | set(never.values_list("id", flat=True)))


@dataclass
class _Carry:
    """What one run keeps between its batches: the state cache, valid while nobody else moved the cursor."""

    state: BatchState | None = None
    next_nonce: int = -1
    pctx: ProcessContext | None = None
    admissions: weavedrive.Admissions | None = None


def _evaluate_batch(process_id: str, batch_size: int, carry: _Carry | None = None) -> int:
    runtime = component_runtime()
    with transaction.atomic():
        models.Evaluation.objects.get_or_create(
            process_id=process_id, defaults={"next_nonce": 0, "state_hash": cu.GENESIS_STATE_HASH}
        )
        cursor = models.Evaluation.objects.select_for_update(skip_locked=True).filter(process_id=process_id).first()
        if cursor is None:
            return -1  # another worker is evaluating this process
        assignments = list(
            models.Assignment.objects.filter(process_id=process_id, nonce__gte=cursor.next_nonce)
            .select_related("message")
            .order_by("nonce")[:batch_size]
        )
        if not assignments:
            return 0
        carry = carry or _Carry()
        if carry.pctx is None or carry.next_nonce != cursor.next_nonce:
            carry.state, carry.pctx = None, process_context(process_id)
            carry.admissions = weavedrive.Admissions(process_id)
        if carry.pctx.module_format == CORE64_FORMAT:
            return _evaluate_core_batch(process_id, cursor, assignments, carry.pctx)
        if carry.state is None:
            carry.state = BatchState(process_id)
        state, pctx = carry.state, carry.pctx
        assert pctx is not None
        state_hash = cursor.state_hash
        results = []
        instance_key = f"{process_id}/{pctx.module_id}"
        if assignments[0].nonce == 0 or cursor.next_nonce == 0:
            runtime.forget(instance_key)
        for assignment in assignments:
            if assignment.nonce != cursor.next_nonce + len(results):
                raise EvaluationError(f"process {process_id}: log gap at nonce {cursor.next_nonce + len(results)}")
            evaluated = evaluate_message(runtime, pctx, state, assignment, state_hash, instance_key=instance_key,
                                         admissions=carry.admissions)
            state_hash = evaluated.state_hash
            results.append(evaluated)
        state.flush()
        models.Result.objects.bulk_create(
            models.Result(
                process_id=process_id, nonce=r.nonce, message_id=r.message_id, body=r.body, error=r.error,
                gas_used=r.gas_used, state_hash=r.state_hash, logs=list(r.logs),
            )
            for r in results
        )
        models.Evaluation.objects.filter(process_id=process_id).update(
            next_nonce=results[-1].nonce + 1, state_hash=state_hash
        )
        carry.next_nonce = results[-1].nonce + 1
        pushed = _record_pushes(process_id, pctx.module_id, assignments, results)
        if pushed:
            from ao import tasks

            transaction.on_commit(lambda: tasks.deliver_pushes.delay(process_id), robust=True)
    return len(results)


def _evaluate_core_batch(
    process_id: str, cursor: models.Evaluation, assignments: list[models.Assignment], pctx: ProcessContext
) -> int:
    """A batch of a core process: evaluate on the live memory, then checkpoint it with the results."""
    core_processes.live_cores().pop(process_id, None)  # until this batch commits, memory is ahead of the record
    try:
        core = _core_at(pctx, cursor.next_nonce)
        state_hash = cursor.state_hash
        results = []
        for assignment in assignments:
            evaluated = evaluate_core_message(core, pctx, assignment, state_hash)
            state_hash = evaluated.state_hash
            results.append(evaluated)
        digest, size = core_processes.save_snapshot(core.take_snapshot())
        last = results[-1].nonce
        models.Checkpoint.objects.create(
            process_id=process_id, nonce=last, sha256=digest, size=size, memory_size=core.memory_size
        )
        models.Result.objects.bulk_create(
            models.Result(
                process_id=process_id, nonce=r.nonce, message_id=r.message_id, body=r.body, error=r.error,
                gas_used=r.gas_used, state_hash=r.state_hash, logs=[],
            )
            for r in results
        )
        models.Evaluation.objects.filter(process_id=process_id).update(next_nonce=last + 1, state_hash=state_hash)
        if _record_pushes(process_id, pctx.module_id, assignments, results):
            from ao import tasks

            transaction.on_commit(lambda: tasks.deliver_pushes.delay(process_id), robust=True)
    except BaseException:
        core_processes.live_cores().pop(process_id, None)
        raise
    transaction.on_commit(
        lambda: core_processes.live_cores().__setitem__(process_id, core_processes.LiveCore(core, last + 1))
    )
    return len(results)


def _record_pushes(
    process_id: str, module_id: str, assignments: list[models.Assignment], results: list[Evaluated]
) -> int:
    """Record outbox messages addressed to processes on this scheduler, in the batch's transaction."""
    targets = {m.get("Target") for r in results for m in r.body["Messages"] if isinstance(m, dict)}
    local = set(models.Process.objects.filter(id__in=[t for t in targets if isinstance(t, str)]).values_list("id", flat=True))
    signer = keys.messenger_key()
    trusted = signer.address
    pushes = []
    for assignment, result in zip(assignments, results):
        outbox = [m for m in result.body["Messages"] if isinstance(m, dict) and m.get("Target") in local]
        if not outbox:
            continue
        source = dataitem.parse(bytes(assignment.message.raw))
        root = mu.pushed_for(source.tags, source.id, source.owner_address == trusted)
        for index, raw in enumerate(result.body["Messages"]):
            if not isinstance(raw, dict) or raw.get("Target") not in local:
                continue
            message = mu.OutboxMessage.from_json(raw)
            item = mu.build_push(
                signer, process_id=process_id, module_id=module_id, nonce=result.nonce, index=index,
                pushed_for=root, message=message,
            )
            pushes.append(
                models.Push(
                    process_id=process_id, nonce=result.nonce, index=index, target=message.target, item_id=item.id,
                    raw=item.serialize(),
                )
            )
    models.Push.objects.bulk_create(pushes, ignore_conflicts=True)
    return len(pushes)


def result_json(result: models.Result) -> dict[str, Any]:
    """A stored result in AO's shape, with GasUsed."""
    body = dict(result.body)
    body["GasUsed"] = result.gas_used
    return body


def dumps(value: Any) -> str:
    """JSON for logs."""
    return json.dumps(value, sort_keys=True)


RESULT_WAIT_S = 30.0
RESULT_POLL_S = 0.1
MAX_DRY_RUN_BYTES = 100 * 1024


def cu_result(*, process_id: str, message_id: str) -> models.Result:
    """The result of a message, evaluating the process up to it first if needed (as AO's CU does)."""
    assignment = models.Assignment.objects.filter(process_id=process_id, message__id=message_id).first()
    if assignment is None:
        raise NotEvaluable(f"message {message_id} is not scheduled on process {process_id}")
    deadline = time.monotonic() + RESULT_WAIT_S
    while True:
        found = models.Result.objects.filter(process_id=process_id, nonce=assignment.nonce).first()
        if found is not None:
            return found
        try:
            cu_evaluate_pending(process_id=process_id)
        except ProcessBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(RESULT_POLL_S)


class NotEvaluable(AoError):
    """No such message in the process's log."""

    status = 404


def cu_dry_run(*, process_id: str, message: dict[str, Any]) -> dict[str, Any]:
    """Evaluate an unsigned message against the process's current state; nothing is written."""
    if not models.Process.objects.filter(id=process_id).exists():
        raise NotEvaluable(f"no process {process_id}")
    try:
        cu_evaluate_pending(process_id=process_id)
    except ProcessBusy:
        pass  # read the state as the other worker last committed it
    tags = message.get("Tags") or []
    if not isinstance(tags, list) or not all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("value"), str) for t in tags
    ):
        raise EvaluationError("Tags must be a list of {name, value} strings")
    owner = message.get("Owner") or message.get("From") or ""
    if not isinstance(owner, str):
        raise EvaluationError("Owner must be a string")
    data = message.get("Data", "")
    cursor = models.Evaluation.objects.filter(process_id=process_id).first()
    now_ms = int(time.time() * 1000)
    msg = {
        "Id": str(message.get("Id") or ""),
        "Signature": "",
        "Owner": owner,
        "From": owner,
        "Target": process_id,
        "Anchor": str(message.get("Anchor") or ""),
        "Data": data if isinstance(data, str) else json.dumps(data),
        "Tags": [t for t in tags if t["name"] not in cu.STRIPPED_FROM_USERS],
        "Epoch": 0,
        "Nonce": cursor.next_nonce if cursor else 0,
        "Timestamp": now_ms,
        "Block-Height": embedded_store().block_height(),
        "Hash-Chain": "",
        "Cron": False,
    }
    pctx = process_context(process_id)
    runtime = component_runtime()
    state = BatchState(process_id)
    ctx = CallContext(state=state, seed=hashlib.sha256(f"dry-run/{now_ms}".encode()).digest(), timestamp_ms=now_ms)
    component = runtime.component(pctx.module_id, lambda: _module_bytes(pctx.module_id))
    outcome = runtime.call(component, cu.canonical(msg).decode("utf-8"), pctx.env_json, ctx, fuel=pctx.fuel,
                           memory_limit=pctx.memory_limit, instance_key=None)
    state.rollback_message()
    if outcome.error is not None or outcome.output is None:
        body: dict[str, Any] = {"Messages": [], "Spawns": [], "Assignments": [], "Output": "", "Error": outcome.error}
    else:
        try:
            body, _ = cu.normalize_result(outcome.output)
        except cu.ResultError as exc:
            body = {"Messages": [], "Spawns": [], "Assignments": [], "Output": "", "Error": str(exc)}
    body["GasUsed"] = outcome.gas_used
    return body
