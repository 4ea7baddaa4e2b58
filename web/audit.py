"""Audit for staff: a petition's full trace through the Fed's log, and replay-verify on demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from ao import dispatch
from ao import models as ao_models
from ao.permaweb import dataitem
from web.models import VerifyRun

VERIFY_TASK = "web.verify_run"
MAX_TRACE_SCAN = 20_000  # results scanned per trace; the Fed's log is read newest first


@dataclass(frozen=True)
class TraceRow:
    """One message of the Fed that touched a petition, with what its evaluation produced."""

    nonce: int
    message_id: str
    action: str
    sender: str
    timestamp: int
    gas_used: int
    state_hash: str
    error: str
    sent: list[dict[str, str]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)


def _tags(tag_list: list[dict[str, str]]) -> dict[str, str]:
    return {t["name"]: t["value"] for t in tag_list}


def petition_trace(*, fed_process_id: str, petition_id: str) -> list[TraceRow]:
    """Every Fed message whose input or output names the petition, in nonce order."""
    rows = []
    results = (
        ao_models.Result.objects.filter(process_id=fed_process_id).order_by("-nonce")[:MAX_TRACE_SCAN]
    )
    by_nonce = {r.nonce: r for r in results}
    assignments = ao_models.Assignment.objects.filter(
        process_id=fed_process_id, nonce__in=list(by_nonce)
    ).select_related("message")
    for assignment in sorted(assignments, key=lambda a: a.nonce):
        result = by_nonce[assignment.nonce]
        item = dataitem.parse(bytes(assignment.message.raw))
        tags = dict(item.tags)
        sent = [
            {"target": m.get("Target", ""), **_tags(m.get("Tags", []))}
            for m in result.body.get("Messages", [])
        ]
        mentions = petition_id in (tags.get("Petition-Id"), tags.get("Pushed-For"), tags.get("X-Petition-Id")) or any(
            petition_id in (m.get("Petition-Id"), m.get("X-Petition-Id"), m.get("X-Refund-For")) for m in sent
        )
        if not mentions:
            continue
        rows.append(
            TraceRow(
                nonce=assignment.nonce, message_id=item.id, action=tags.get("Action", tags.get("Type", "")),
                sender=tags.get("From-Process") or item.owner_address, timestamp=assignment.timestamp,
                gas_used=result.gas_used, state_hash=result.state_hash, error=result.error, sent=sent,
                calls=list(result.body.get("Calls", [])),
            )
        )
    return rows


def verify_request(*, user: Any, process_id: str) -> VerifyRun:
    """Record a staff member's request to replay a process, and queue it after the commit."""
    with transaction.atomic():
        run = VerifyRun.objects.create(process_id=process_id, requested_by=user)
        dispatch.enqueue(VERIFY_TASK, run.id)
    return run


def verify_run(*, run_id: int) -> VerifyRun:
    """Replay the process of a queued run and record the outcome; a finished run is left as it is."""
    from ao import verify
    from ao.errors import AoError

    claimed = VerifyRun.objects.filter(id=run_id, status=VerifyRun.Status.QUEUED).exists()
    run = VerifyRun.objects.get(id=run_id)
    if not claimed:
        return run
    try:
        report = verify.verify_process(process_id=run.process_id)
    except AoError as exc:
        VerifyRun.objects.filter(id=run_id).update(status=VerifyRun.Status.FAILED, error=str(exc),
                                                   finished_at=timezone.now())
    else:
        d = report.divergence
        if report.fault:  # this node could not finish the replay: not a verdict on the record
            VerifyRun.objects.filter(id=run_id).update(status=VerifyRun.Status.FAILED, error=report.fault,
                                                       checked=report.checked, finished_at=timezone.now())
            run.refresh_from_db()
            return run
        VerifyRun.objects.filter(id=run_id).update(
            status=VerifyRun.Status.MATCH if d is None else VerifyRun.Status.DIVERGED,
            checked=report.checked,
            divergence=None if d is None else {"nonce": d.nonce, "what": d.what, "recorded": d.recorded,
                                               "replayed": d.replayed},
            finished_at=timezone.now(),
        )
    run.refresh_from_db()
    return run
