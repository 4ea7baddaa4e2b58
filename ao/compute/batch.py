"""Evaluate a process's pending messages in nonce order, exactly once, with no transaction open while they run.

``evaluate_process`` claims the process's lease, then repeats: read the cursor and the next assignments,
evaluate them against the process's state (reads are plain queries; writes stay in memory), and commit the
batch — results, state writes, cursor and outbox pushes — in one short transaction guarded by
compare-and-set on the cursor and the lease holder. A lost lease discards the batch; a host fault commits
what was evaluated before the faulting message, then leaves the process to be retried (``health``).

A batch ends early (and commits) after a message that called an extension (so a deliberation's progress is
visible as each governor votes), after ``BATCH_COMMIT_S`` or when its messages used ``BATCH_FUEL``. A run
gives the worker back after ``RUN_BUDGET_S`` and asks for another run, so one busy process cannot hold a
worker from the others.

Instance windows (see ``context.INSTANCE_WINDOW``): message n runs on a fresh instance when n is the first
of its window, else on the instance that ran the window so far. A worker without that instance (a restart,
another worker moved on) rebuilds it by re-running the window's earlier messages against the state as it
was (the recorded ``undo`` of each), checking each reproduces its recorded result and fuel.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.utils import timezone

from ao import dispatch, models
from ao.compute import health, lease, pushes
from ao.compute.context import ProcessContext, process_context
from ao.compute.origins import Origins
from ao.compute.message import Evaluated, evaluate_core_message, evaluate_message, load_module
from ao.effects import bulk, core_processes
from ao.effects.compute import component_runtime
from ao.effects.core64 import CoreProcess, Snapshot
from ao.effects.process_state import BatchState, PastState
from ao.effects.wasm_runtime import ComponentRuntime
from ao.errors import EvaluationError, HostFault, HostUnavailable, LeaseLost
from ao.extensions import llm_ahead, llm_host, weavedrive
from ao.modules import CORE64_FORMAT
from ao.units import cu

log = logging.getLogger(__name__)

DEFAULT_BATCH = 500
BATCH_COMMIT_S = 1.0  # commit at least this often, so results and the read models follow closely
BATCH_FUEL = 2_000_000_000_000  # a batch's messages together use at most about this much fuel before it commits
RUN_BUDGET_S = 20.0  # one run's share of a worker before it re-queues the process behind the others


@dataclass
class RunReport:
    """What one run did with a process."""

    evaluated: int = 0
    busy: bool = False  # another worker holds the lease
    backing_off: bool = False  # a fault's retry time has not come yet
    fault: str = ""
    more: bool = False  # the run's budget ran out with messages left (another run was asked for)


@dataclass
class _Run:
    """One worker's hold on a process: what it keeps between batches while its lease lasts."""

    process_id: str
    held: lease.Lease
    runtime: ComponentRuntime = field(default_factory=component_runtime)
    pctx: ProcessContext | None = None
    state: BatchState | None = None
    admissions: weavedrive.Admissions | None = None
    origins: Origins | None = None
    next_nonce: int = -1
    sent_to_itself: bool = False  # the last commit recorded pushes to the process itself

    def reset(self) -> None:
        """Forget everything cached: the next batch reads the record afresh."""
        self.pctx, self.state, self.admissions, self.origins, self.next_nonce = None, None, None, None, -1


def evaluate_process(
    *, process_id: str, batch_size: int = DEFAULT_BATCH, budget_s: float | None = RUN_BUDGET_S,
    force: bool = False, max_batches: int | None = None, deliver_to_itself: bool = True,
) -> RunReport:
    """Evaluate the process's pending messages; safe to run twice and on many workers at once.

    ``force`` ignores a fault's backoff (an operator's `manage.py ao evaluate`). ``budget_s`` None runs to the end.
    ``deliver_to_itself``: what the process sends itself is delivered at once and evaluated in the same run.
    """
    dispatch.evaluation_started(process_id)
    if not force and health.backing_off(process_id):
        return RunReport(backing_off=True)
    held = lease.Lease(process_id)
    if not held.acquire():
        return RunReport(busy=True)
    run = _Run(process_id, held)
    report = RunReport()
    started = time.monotonic()
    batches = 0
    try:
        while True:
            count = _batch(run, batch_size)
            report.evaluated += count
            batches += 1
            if run.sent_to_itself and deliver_to_itself:
                _deliver_to_itself(run)
            if count == 0 or (max_batches is not None and batches >= max_batches):
                break
            if budget_s is not None and time.monotonic() - started > budget_s:
                report.more = True
                break
    except HostFault as fault:
        report.fault = str(fault)
        health.record_fault(process_id, fault)
    except LeaseLost as exc:
        log.info("process %s: %s", process_id, exc)
    except DatabaseError as exc:  # the database failing under us is this node's fault too
        report.fault = str(exc)
        health.record_fault(process_id, HostUnavailable(f"database error: {exc}"))
    finally:
        held.release()
    if not report.fault and _behind(process_id):
        # Messages that arrived while this run held the lease found an evaluation queued or running: look again.
        dispatch.request_evaluation(process_id)
    return report


def _deliver_to_itself(run: _Run) -> None:
    """Deliver at once what the process just sent itself (a Deliberate to the next governor), so that the run goes
    on to it instead of waiting for a delivery task and then an evaluation task behind the queue's other work.
    The delivery task asked for at the commit still runs and finds the rest; a failure here is left to it."""
    run.sent_to_itself = False
    try:
        pushes.deliver_pending(process_id=run.process_id, target=run.process_id, limit=SELF_DELIVERY_LIMIT)
    except Exception:  # delivery is the messenger's work, not this evaluation's: its task retries it
        log.exception("process %s: delivering its messages to itself", run.process_id)


SELF_DELIVERY_LIMIT = 100


def evaluate_pending(*, process_id: str, force: bool = True, batch_size: int = DEFAULT_BATCH) -> int:
    """Evaluate every pending message now, in this thread (commands, tests, benchmarks); return how many.

    Messages the process sends itself wait for delivery (``pushes.deliver_pending``), so a caller steps through
    a deliberation message by message. A host fault is recorded as for a worker and raised, so a caller sees it.
    """
    report = evaluate_process(process_id=process_id, budget_s=None, force=force, batch_size=batch_size,
                              deliver_to_itself=False)
    if report.fault:
        raise HostUnavailable(report.fault)
    return report.evaluated


def _behind(process_id: str) -> bool:
    return models.Evaluation.objects.filter(process_id=process_id, next_nonce__lt=F("process__next_nonce")).exists()


def processes_with_pending_messages() -> list[str]:
    """Processes whose log runs past their evaluation cursor."""
    return sorted(models.Evaluation.objects.filter(next_nonce__lt=F("process__next_nonce"))
                  .values_list("process_id", flat=True))


def _batch(run: _Run, batch_size: int) -> int:
    """Evaluate and commit one batch; return how many messages it committed."""
    cursor = models.Evaluation.objects.filter(process_id=run.process_id).first()
    if cursor is None or cursor.lease_holder != run.held.holder:
        raise LeaseLost(f"the lease of {run.process_id} was taken over before a batch began")
    start = cursor.next_nonce
    assignments = list(
        models.Assignment.objects.filter(process_id=run.process_id, nonce__gte=start)
        .select_related("message").order_by("nonce")[:batch_size]
    )
    if not assignments:
        return 0
    if run.pctx is None or run.next_nonce != start:
        run.reset()
        run.pctx = process_context(run.process_id)
        run.state = BatchState(run.process_id)
        run.admissions = weavedrive.Admissions(run.process_id)
        run.origins = Origins(run.process_id, run.pctx.trusted_pushers)
    try:
        if run.pctx.module_format == CORE64_FORMAT and not run.pctx.invalid:
            return _core_batch(run, cursor, assignments)
        return _component_batch(run, cursor, assignments)
    except BaseException:
        run.reset()  # the cache may hold writes that never committed
        raise


def _component_batch(run: _Run, cursor: models.Evaluation, assignments: list[models.Assignment]) -> int:
    pctx, state = run.pctx, run.state
    assert pctx is not None and state is not None
    key = pctx.instance_key
    start, state_hash, window_start = cursor.next_nonce, cursor.state_hash, cursor.window_start
    if start == 0:
        window_start = 0
    results: list[Evaluated] = []
    fault: BaseException | None = None
    began, fuel = time.monotonic(), 0
    for assignment in assignments:
        nonce = start + len(results)
        if assignment.nonce != nonce:
            fault = EvaluationError(f"process {run.process_id}: its log has a gap at nonce {nonce}")
            break
        if run.held.lost:
            raise LeaseLost(f"another worker took the lease of {run.process_id} during a batch")
        fresh = nonce == window_start
        try:
            if not fresh and run.runtime.warm_position(key) != (nonce, state_hash):
                _rebuild_window(run, window_start, nonce)
            evaluated = evaluate_message(run.runtime, pctx, state, assignment, state_hash, origins=run.origins,
                                         instance_key=key, fresh=fresh, admissions=run.admissions, ahead=True)
        except HostFault as exc:
            state.rollback_message()
            run.runtime.forget(key)
            fault = exc
            break
        results.append(evaluated)
        state_hash = evaluated.state_hash
        if evaluated.error or (nonce + 1) % pctx.window == 0:
            window_start = nonce + 1
            run.runtime.forget(key)
        else:
            run.runtime.set_position(key, (nonce + 1, state_hash))
        fuel += evaluated.gas_used
        if evaluated.host_calls or fuel >= BATCH_FUEL or time.monotonic() - began >= BATCH_COMMIT_S:
            break
    if results:
        _commit(run, start, results, state_hash, window_start)
    if fault is not None:
        raise fault
    return len(results)


def _rebuild_window(run: _Run, window_start: int, nonce: int) -> None:
    """Bring a fresh instance to where the window stands at `nonce` by re-running its earlier messages."""
    pctx, state = run.pctx, run.state
    assert pctx is not None and state is not None
    recorded = list(models.Result.objects.filter(process_id=run.process_id, nonce__gte=window_start, nonce__lt=nonce)
                    .order_by("nonce"))
    if len(recorded) != nonce - window_start or any(r.undo is None for r in recorded):
        raise EvaluationError(f"process {run.process_id}: cannot rebuild the instance window from nonce "
                              f"{window_start} (results or their undo are missing)")
    undo: dict[str, str | None] = {}
    for result in reversed(recorded):  # the earliest message's view of a key wins
        undo.update(result.undo)
    past = PastState(state, undo)
    previous = models.Result.objects.filter(process_id=run.process_id, nonce=window_start - 1).values_list(
        "state_hash", flat=True).first() if window_start else cu.GENESIS_STATE_HASH
    assignments = models.Assignment.objects.filter(
        process_id=run.process_id, nonce__gte=window_start, nonce__lt=nonce).select_related("message").order_by("nonce")
    for assignment, result in zip(assignments, recorded):
        again = evaluate_message(run.runtime, pctx, past, assignment, previous or "", origins=run.origins,
                                 instance_key=pctx.instance_key, fresh=assignment.nonce == window_start,
                                 admissions=run.admissions)
        if (again.body, again.state_hash, again.gas_used) != (result.body, result.state_hash, result.gas_used):
            run.runtime.forget(pctx.instance_key)
            raise EvaluationError(
                f"process {run.process_id}: re-running nonce {assignment.nonce} to rebuild its instance window did "
                f"not reproduce the record (gas {again.gas_used} vs {result.gas_used}): the module is not "
                "deterministic")
        previous = again.state_hash
        run.runtime.set_position(pctx.instance_key, (assignment.nonce + 1, previous))


def _commit(run: _Run, start: int, results: list[Evaluated], state_hash: str, window_start: int,
            checkpoint: models.Checkpoint | None = None) -> None:
    """Results, state, cursor and pushes in one transaction, if the cursor and the lease are still ours."""
    end = results[-1].nonce + 1
    with transaction.atomic():
        moved = models.Evaluation.objects.filter(
            process_id=run.process_id, next_nonce=start, lease_holder=run.held.holder
        ).update(next_nonce=end, state_hash=state_hash, window_start=window_start, lease_expires_at=lease.expiry(),
                 **health.CLEARED)
        if moved != 1:
            raise LeaseLost(f"the cursor of {run.process_id} moved or its lease was taken: batch at {start} discarded")
        _insert_results(run.process_id, results)
        if run.state is not None:
            run.state.flush()
        if checkpoint is not None:
            checkpoint.save(force_insert=True)
        if pushes.record(process_id=run.process_id, results=results):
            dispatch.request_delivery(run.process_id)
            run.sent_to_itself = any(m.target == run.process_id for r in results for m in r.outbox)
        if llm_ahead.enabled():
            llm_ahead.record(run.process_id, ((r.nonce, r.hints) for r in results if r.hints),
                             sha256_of=llm_host.model_sha256, pool=llm_host.engine_pool())
        dispatch.announce_results(run.process_id, start, end - 1)
    run.next_nonce = end


def _insert_results(process_id: str, results: list[Evaluated]) -> None:
    """The batch's Result rows in as few statements as the database allows (the commit's largest write)."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    bulk.insert_rows(models.Result, RESULT_COLUMNS, (
        (process_id, r.nonce, r.message_id, r.body_json.decode("utf-8") if r.body_json else json.dumps(r.body),
         r.error, r.gas_used, r.state_hash,
         json.dumps(list(r.logs)), None if r.undo is None else json.dumps(r.undo), r.pushed_for, r.origin, now)
        for r in results
    ))


RESULT_COLUMNS = ("process_id", "nonce", "message_id", "body", "error", "gas_used", "state_hash", "logs", "undo",
                  "pushed_for", "origin", "evaluated_at")


# -- core (memory64) processes: state is the live memory, checkpointed with every batch ------------------------


def _core_batch(run: _Run, cursor: models.Evaluation, assignments: list[models.Assignment]) -> int:
    pctx = run.pctx
    assert pctx is not None
    process_id = run.process_id
    core_processes.live_cores().pop(process_id, None)  # until this batch commits, memory is ahead of the record
    core = _core_at(pctx, cursor.next_nonce, run.origins)
    start, state_hash = cursor.next_nonce, cursor.state_hash
    results: list[Evaluated] = []
    began = time.monotonic()
    for assignment in assignments:
        if assignment.nonce != start + len(results):
            raise EvaluationError(f"process {process_id}: its log has a gap at nonce {start + len(results)}")
        if run.held.lost:
            raise LeaseLost(f"another worker took the lease of {process_id} during a batch")
        # a fault discards the whole batch
        evaluated = evaluate_core_message(core, pctx, assignment, state_hash, origins=run.origins)
        state_hash = evaluated.state_hash
        results.append(evaluated)
        if time.monotonic() - began >= BATCH_COMMIT_S:
            break
    digest, size = core_processes.save_snapshot(core.take_snapshot())
    last = results[-1].nonce
    checkpoint = models.Checkpoint(process_id=process_id, nonce=last, sha256=digest, size=size,
                                   memory_size=core.memory_size)
    _commit(run, start, results, state_hash, last + 1, checkpoint=checkpoint)
    core_processes.live_cores()[process_id] = core_processes.LiveCore(core, last + 1)
    return len(results)


def _usable_checkpoint(process_id: str, next_nonce: int) -> tuple[models.Checkpoint | None, Snapshot | None]:
    """The newest checkpoint before next_nonce whose snapshot this worker can read, or none (replay from the spawn).

    Snapshots are files of the worker that wrote them: a worker on another machine, or one whose copy is corrupt,
    starts from an older one it has, or from the beginning; the replay after it checks every recorded result.
    """
    for checkpoint in (models.Checkpoint.objects.filter(process_id=process_id, nonce__lt=next_nonce)
                       .order_by("-nonce")[:CHECKPOINTS_TRIED]):
        try:
            return checkpoint, core_processes.load_snapshot(checkpoint)
        except (OSError, ValueError) as exc:
            log.info("process %s: checkpoint at nonce %s is not usable here: %s", process_id, checkpoint.nonce, exc)
    return None, None


CHECKPOINTS_TRIED = 8  # beyond these, replaying from the spawn is no slower than looking further


def _core_at(pctx: ProcessContext, next_nonce: int, origins: Origins) -> CoreProcess:
    """The live core process at next_nonce: this worker's, or restored from the newest checkpoint and replayed."""
    live = core_processes.live_cores().get(pctx.process_id)
    if live is not None and live.next_nonce == next_nonce and live.process.broken is None:
        return live.process
    core_processes.live_cores().pop(pctx.process_id, None)
    checkpoint, snapshot = _usable_checkpoint(pctx.process_id, next_nonce)
    core = CoreProcess.create(
        core_processes.core_runtime(), load_module(pctx.module_id), memory_limit_bytes=pctx.memory_limit,
        snapshot=snapshot,
    )
    start = checkpoint.nonce + 1 if checkpoint else 0
    recorded = {
        r.nonce: r
        for r in models.Result.objects.filter(process_id=pctx.process_id, nonce__gte=start, nonce__lt=next_nonce)
    }
    replay = models.Assignment.objects.filter(
        process_id=pctx.process_id, nonce__gte=start, nonce__lt=next_nonce
    ).select_related("message").order_by("nonce")
    for assignment in replay:
        previous = recorded[assignment.nonce - 1].state_hash if assignment.nonce - 1 in recorded else ""
        again = evaluate_core_message(core, pctx, assignment, previous, origins=origins)
        if again.body != recorded[assignment.nonce].body:
            raise EvaluationError(
                f"process {pctx.process_id}: replay from the checkpoint diverged at nonce {assignment.nonce}"
            )
    return core

