"""What the compute unit's HTTP endpoints answer: recorded results, and dry-runs that change nothing.

The web tier never evaluates a process's log: ``wait_for_result`` asks for evaluation and waits, within a
deadline, for a worker to commit the result, then answers "in progress" (AO's 202). A dry-run runs the module on
a throwaway instance against the last committed state and writes nothing; in the web tier it gets a small fuel
and wall-clock budget (``WEB_DRY_RUN_FUEL``), and one that needs more is handed to a worker, whose answer the
shared cache keeps for the client's next identical request.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.cache import cache

from ao import dispatch, models
from ao.compute import batch
from ao.compute.context import process_context
from ao.compute.message import error_body, load_module
from ao.effects.compute import component_runtime
from ao.effects.process_state import BatchState
from ao.effects.stores import embedded_store
from ao.effects.wasm_runtime import OUT_OF_FUEL, CallContext
from ao.errors import (
    AoError,
    Evaluating,
    HostFault,
    InvalidMessage,
    NotEvaluable,
    NotYetEvaluated,
    WallClockExceeded,
)
from ao.modules import CORE64_FORMAT
from ao.units import cu

RESULT_POLL_S = 0.1
MAX_DRY_RUN_BYTES = 100 * 1024
DRY_RUN_WALL_S = 10.0
DRY_RUN_FUEL = 100_000_000_000  # a worker's dry-run: about a minute of interpreter work at most
WEB_DRY_RUN_WALL_S = 2.0
WEB_DRY_RUN_FUEL = 2_000_000_000  # a web request's dry-run: about a second of interpreter work
DRY_RUN_ANSWER_S = 300  # how long a worker's dry-run answer waits in the cache for its client
DRY_RUN_TASK = "ao.dry_run"


def result_json(result: models.Result) -> dict[str, Any]:
    """A stored result in AO's shape, with GasUsed."""
    body = dict(result.body)
    body["GasUsed"] = result.gas_used
    return body


def wait_for_result(*, process_id: str, message_id: str, wait_s: float | None = None) -> models.Result:
    """The result of a scheduled message; if a worker has not committed it yet, ask for it and wait (bounded).

    Past the wait: Evaluating (202, a worker has it), or NotYetEvaluated (503) if the process is stalled.
    """
    wait_s = settings.AO["RESULT_WAIT_S"] if wait_s is None else wait_s
    assignment = models.Assignment.objects.filter(process_id=process_id, message__id=message_id).first()
    if assignment is None:
        raise NotEvaluable(f"message {message_id} is not scheduled on process {process_id}")
    deadline = time.monotonic() + wait_s
    asked = False
    while True:
        found = models.Result.objects.filter(process_id=process_id, nonce=assignment.nonce).first()
        if found is not None:
            return found
        if not asked:
            if current_app.conf.task_always_eager:  # no workers (tests, one-process setups): evaluate here, bounded
                batch.evaluate_process(process_id=process_id, budget_s=wait_s)
            else:
                dispatch.request_evaluation(process_id)
            asked = True
            continue
        cursor = models.Evaluation.objects.filter(process_id=process_id).values("next_nonce", "stalled_at").first()
        if cursor and cursor["next_nonce"] > assignment.nonce:  # results commit with the cursor: this one is lost
            raise NotYetEvaluated(
                f"message {message_id} (nonce {assignment.nonce}) is not evaluated yet on this node: its result is "
                "missing below the evaluation cursor; `manage.py ao verify` names the damage")
        if time.monotonic() >= deadline:
            if cursor and cursor["stalled_at"] is not None:
                raise NotYetEvaluated(
                    f"message {message_id} (nonce {assignment.nonce}) is not evaluated yet: the process is stalled "
                    "on this node (a host fault); it resumes by itself — ask again later")
            raise Evaluating(
                f"Evaluation of process {process_id} to message {message_id} (nonce {assignment.nonce}) is in "
                "progress; ask again in a few seconds", retry_after=max(1, int(wait_s)))
        time.sleep(RESULT_POLL_S)


def _answer_key(process_id: str, message: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps([process_id, message], sort_keys=True).encode()).hexdigest()
    return f"dry-run:{digest}"


def web_dry_run(*, process_id: str, message: dict[str, Any]) -> dict[str, Any]:
    """A dry-run within a web request's budget, or a worker's answer to the same request; else Evaluating (202)."""
    key = _answer_key(process_id, message)
    answer = cache.get(key)
    if isinstance(answer, dict) and "body" in answer:
        return answer["body"]
    if answer is not None:  # a worker has it
        raise Evaluating(f"the dry-run on {process_id} is being computed by a worker; send the same request again "
                         "in a few seconds", retry_after=2)
    body, out_of_budget = dry_run(process_id=process_id, message=message, fuel=WEB_DRY_RUN_FUEL,
                                  wall_s=WEB_DRY_RUN_WALL_S)
    if not out_of_budget:
        return body
    if cache.add(key, {"pending": True}, timeout=DRY_RUN_ANSWER_S):
        dispatch.enqueue(DRY_RUN_TASK, process_id, message, key)
    raise Evaluating(f"the dry-run on {process_id} needs more than a web request may compute; a worker has it: send "
                     "the same request again in a few seconds", retry_after=2)


def worker_dry_run(*, process_id: str, message: dict[str, Any], key: str) -> None:
    """A worker's dry-run with the full budget; its answer waits in the cache for the client's next request."""
    try:
        body, _ = dry_run(process_id=process_id, message=message, fuel=DRY_RUN_FUEL, wall_s=DRY_RUN_WALL_S)
    except AoError as exc:
        body = {"error": str(exc)}
    cache.set(key, {"body": body}, timeout=DRY_RUN_ANSWER_S)


def dry_run(*, process_id: str, message: dict[str, Any], fuel: int = DRY_RUN_FUEL,
            wall_s: float = DRY_RUN_WALL_S) -> tuple[dict[str, Any], bool]:
    """Evaluate an unsigned message against the process's committed state; nothing is written.

    Returns (AO's result body, whether it stopped on this budget short of the process's own limits).
    """
    if not models.Process.objects.filter(id=process_id).exists():
        raise NotEvaluable(f"no process {process_id}")
    tags = message.get("Tags") or []
    if not isinstance(tags, list) or not all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("value"), str) for t in tags
    ):
        raise InvalidMessage("Tags must be a list of {name, value} strings")
    owner = message.get("Owner") or message.get("From") or ""
    if not isinstance(owner, str):
        raise InvalidMessage("Owner must be a string")
    data = message.get("Data", "")
    cursor = models.Evaluation.objects.filter(process_id=process_id).first()
    now_ms = int(time.time() * 1000)  # a dry-run is not part of any history
    msg = {
        "Id": str(message.get("Id") or ""), "Signature": "", "Owner": owner, "From": owner, "Target": process_id,
        "Anchor": str(message.get("Anchor") or ""), "Data": data if isinstance(data, str) else json.dumps(data),
        "Tags": [t for t in tags if t["name"] not in cu.STRIPPED_FROM_USERS], "Epoch": 0,
        "Nonce": cursor.next_nonce if cursor else 0, "Timestamp": now_ms,
        "Block-Height": embedded_store().block_height(), "Hash-Chain": "", "Cron": False,
    }
    pctx = process_context(process_id)
    if pctx.invalid or pctx.module_format == CORE64_FORMAT:
        body = error_body(pctx.invalid or "dry-run is not offered for core (memory64) processes")
        body["GasUsed"] = 0
        return body, False
    runtime = component_runtime()
    state = BatchState(process_id)
    ctx = CallContext(state=state, seed=hashlib.sha256(f"dry-run/{now_ms}".encode()).digest(), timestamp_ms=now_ms)
    component = runtime.component(pctx.module_id, lambda: load_module(pctx.module_id))
    try:
        outcome = runtime.call(component, cu.canonical(msg).decode("utf-8"), pctx.env_json, ctx,
                               fuel=min(pctx.fuel, fuel), memory_limit=pctx.memory_limit, instance_key=None,
                               timeout_s=wall_s)
    except WallClockExceeded as exc:
        if wall_s < DRY_RUN_WALL_S:
            return {}, True
        raise NotYetEvaluated(f"the dry-run could not finish on this node: {exc}") from exc
    except HostFault as exc:
        raise NotYetEvaluated(f"the dry-run could not finish on this node: {exc}") from exc
    finally:
        state.rollback_message()
    if outcome.error is not None and outcome.error.startswith(OUT_OF_FUEL) and pctx.fuel > fuel:
        return {}, True
    if outcome.error is not None or outcome.output is None:
        body = error_body(outcome.error or "the module returned no result")
    else:
        try:
            body, _ = cu.normalize_result(outcome.output)
        except cu.ResultError as exc:
            body = error_body(str(exc))
    body["GasUsed"] = outcome.gas_used
    return body, False
