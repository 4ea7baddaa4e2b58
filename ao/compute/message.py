"""One message's evaluation: its result, state writes, validated outbox and state hash.

Pure but for the runtime it is given: everything here depends only on the signed log, the process's state
and the instance position the caller chose from nonces. A failure of the message (a trap, running out of
fuel, a malformed result, an outbox the messenger could not push) is its ``Error`` with the state left as it
was; a fault of this node (``HostFault``) propagates and nothing of the message is kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from ao import models
from ao.compute.context import ProcessContext, module_bytes
from ao.compute.origins import Origin, Origins
from ao.effects.core64 import CoreProcess
from ao.effects.wasm_runtime import CallContext, ComponentRuntime, HostCallError, HostState, check_value
from ao.errors import HostUnavailable, WallClockExceeded
from ao.extensions import llm_host, weavedrive
from ao.permaweb import dataitem
from ao.permaweb.store import StoreError
from ao.units import cu, mu

# The wall-clock safety net of one message. A Compute-Limit bounds the work deterministically; this only stops a
# machine that is far too slow or stuck, and running past it is a fault of the node, never a result.
MESSAGE_WALL_S = 300.0


class MessageState(HostState, Protocol):
    """Process state with message boundaries (BatchState, MemoryState, PastState)."""

    def undo_of_message(self) -> dict[str, str | None]: ...
    def commit_message(self) -> dict[str, str | None]: ...
    def rollback_message(self) -> None: ...


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
    outbox: tuple[mu.OutboxMessage, ...] = ()
    pushed_for: str = ""
    undo: dict[str, str | None] | None = None
    host_calls: int = 0  # extension calls (LLM completions) the message made
    origin: str = ""  # the outbox entry a genuine push carries ("process/nonce/index")
    # completions the message hinted a later one will ask for ((model tx, request), llm.prefetch): not history
    hints: tuple[tuple[str, Any], ...] = ()
    body_json: bytes = b""  # cu.canonical(body): what the state hash covers and the record keeps


def error_body(error: str) -> dict[str, Any]:
    """AO's result for a failed message: no messages, no output, the error."""
    return {"Messages": [], "Spawns": [], "Assignments": [], "Output": "", "Error": error}


def message_json_for(
    pctx: ProcessContext, assignment: models.Assignment, origins: Origins, item: dataitem.DataItem | None = None,
) -> tuple[dataitem.DataItem, str, Origin | None]:
    """(the item, canonical msg JSON, its origin if it is a genuine push) of a scheduled message; `item` is the
    message already parsed from ``assignment.message.raw``, when the caller has it."""
    if item is None:
        item = dataitem.parse(bytes(assignment.message.raw))
    slot = cu.Slot(
        process_id=pctx.process_id, nonce=assignment.nonce, epoch=assignment.epoch, timestamp=assignment.timestamp,
        block_height=assignment.block_height, hash_chain=assignment.hash_chain,
    )
    origin = origins.judge(item, nonce=assignment.nonce, timestamp=assignment.timestamp)
    return item, cu.message_text(item, slot, genuine_push=origin is not None), origin


def _outcome(
    assignment: models.Assignment, item: dataitem.DataItem, origin: Origin | None, previous_hash: str, *,
    body: dict[str, Any] | None, error: str | None, gas: int, logs: tuple[str, ...], state: MessageState | None,
    keep_undo: bool, calls: list[dict[str, Any]] | None = None, hints: tuple[tuple[str, Any], ...] = (),
) -> Evaluated:
    """Validate the outbox, settle the state writes and the hash of one evaluated message."""
    outbox: tuple[mu.OutboxMessage, ...] = ()
    if error is None and body is not None:
        try:
            outbox = mu.validate_outbox(body["Messages"])
        except mu.OutboxError as exc:
            error = str(exc)
    undo = None
    if error:
        if state is not None:
            state.rollback_message()
        body, writes, outbox = error_body(error), {}, ()
    else:
        assert body is not None
        if state is not None:
            undo = state.undo_of_message() if keep_undo else None
            writes = state.commit_message()
        else:
            writes = {}
    if calls:
        body["Calls"] = calls  # every completion's request, model, params, raw output, token counts
    body_json = cu.canonical(body)
    return Evaluated(
        nonce=assignment.nonce, message_id=item.id, body=body, error=error or "", gas_used=gas, body_json=body_json,
        state_hash=cu.next_state_hash(previous_hash, assignment.nonce, writes, body, result_json=body_json),
        logs=logs, outbox=outbox,
        pushed_for=mu.pushed_for(item.tags, item.id, origin is not None) if outbox else "", undo=undo,
        host_calls=len(calls or ()), origin=origin.key if origin is not None else "", hints=() if error else hints,
    )


def evaluate_message(
    runtime: ComponentRuntime,
    pctx: ProcessContext,
    state: MessageState,
    assignment: models.Assignment,
    previous_hash: str,
    *,
    origins: Origins,
    instance_key: str | None,
    fresh: bool,
    admissions: weavedrive.Admissions | None = None,
    timeout_s: float | None = None,
    ahead: bool = False,
    item: dataitem.DataItem | None = None,
) -> Evaluated:
    """Evaluate one scheduled message of a component process against `state`.

    ``ahead``: the compute unit's live evaluation, which shares completions computed ahead (``llm_ahead``) and
    collects the message's hints; replay and window rebuilds leave it off and compute every completion.
    ``item``: the message already parsed (replay has it).
    """
    timeout_s = timeout_s or MESSAGE_WALL_S
    item, msg_json, origin = message_json_for(pctx, assignment, origins, item)
    if pctx.invalid:
        return _outcome(assignment, item, origin, previous_hash, body=None, error=pctx.invalid, gas=0, logs=(),
                        state=state, keep_undo=False)
    seed = hashlib.sha256(f"{pctx.process_id}/{assignment.nonce}/{item.id}".encode()).digest()
    ctx = CallContext(state=state, seed=seed, timestamp_ms=assignment.timestamp)
    if pctx.weave is not None and pctx.weave.enabled:
        ctx.weavedrive = weavedrive.WeaveDrive(
            policy=pctx.weave, process_id=pctx.process_id, nonce=assignment.nonce,
            block_height=assignment.block_height,
            admissions=admissions or weavedrive.Admissions(pctx.process_id), cache=weavedrive.chunk_cache(),
        )
        if pctx.llm:
            ctx.llm = llm_host.LlmBinding(drive=ctx.weavedrive, ahead=ahead)
    component = runtime.component(pctx.module_id, lambda: load_module(pctx.module_id))
    outcome = runtime.call(
        component, msg_json, pctx.env_json, ctx, fuel=pctx.fuel, memory_limit=pctx.memory_limit,
        instance_key=instance_key, fresh=fresh, timeout_s=timeout_s,
    )
    error = outcome.error
    body: dict[str, Any] | None = None
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
    elif error is None:
        error = "the module returned no result"
    calls = ctx.llm.calls if ctx.llm is not None else None
    hints = tuple(ctx.llm.hints) if ctx.llm is not None else ()
    evaluated = _outcome(assignment, item, origin, previous_hash, body=body, error=error, gas=outcome.gas_used,
                         logs=outcome.logs, state=state, keep_undo=pctx.window > 1, calls=calls, hints=hints)
    if evaluated.error and instance_key is not None:
        runtime.forget(instance_key)  # an Error ends the instance window: the next message starts fresh
    return evaluated


def evaluate_core_message(
    core: CoreProcess, pctx: ProcessContext, assignment: models.Assignment, previous_hash: str, *,
    origins: Origins, timeout_s: float | None = None, item: dataitem.DataItem | None = None,
) -> Evaluated:
    """Evaluate one message of a core (memory64) process; its state is the live memory."""
    timeout_s = timeout_s or MESSAGE_WALL_S
    item, msg_json, origin = message_json_for(pctx, assignment, origins, item)
    if pctx.invalid:
        return _outcome(assignment, item, origin, previous_hash, body=None, error=pctx.invalid, gas=0, logs=(),
                        state=None, keep_undo=False)
    outcome = core.evaluate(msg_json, pctx.env_json, fuel=pctx.fuel, timeout_s=timeout_s)
    if outcome.interrupted:
        raise WallClockExceeded(f"a message ran past the {timeout_s:g} s wall-clock safety limit on this node")
    error = outcome.error
    body: dict[str, Any] | None = None
    if error is None:
        try:
            body, _ = cu.normalize_result(cu.canonical(outcome.result).decode("utf-8"))
        except cu.ResultError as exc:
            error = str(exc)  # pragma: no cover - core64 already validated the result
    return _outcome(assignment, item, origin, previous_hash, body=body, error=error, gas=outcome.gas_used, logs=(),
                    state=None, keep_undo=False)


def load_module(module_id: str) -> bytes:
    """A module's binary; a store failure is a fault of this node."""
    try:
        return module_bytes(module_id)
    except (StoreError, OSError) as exc:
        raise HostUnavailable(f"cannot read module {module_id} from this node's store: {exc}") from exc
