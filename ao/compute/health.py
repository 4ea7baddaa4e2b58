"""Host faults of the compute unit: retried with backoff, then shown as a stalled process, never recorded.

A fault (a store or disk failure, a chunk failing its proof locally, a model that will not load, a database
error, a message past the wall-clock limit, a gap in the log) leaves the log and results as they were. The
cursor row keeps the fault, how many times in a row it happened and when to try again; after
``STALL_AFTER`` faults in a row the process is *stalled* (operators see it in the admin, the Fed's public
status and ``manage.py ao status``). The sweeper keeps retrying at the backoff's pace, so a stalled process
resumes by itself once the fault is gone; the first batch that commits clears the fault.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, F
from django.utils import timezone

from ao import models

log = logging.getLogger(__name__)

RETRY_BASE_S = 2.0
RETRY_MAX_S = 120.0
STALL_AFTER = 4  # faults in a row (2 + 4 + 8 s of retries) before the process is shown as stalled
MAX_FAULT_CHARS = 2000

# What a fault clears when a batch commits.
CLEARED = {"fault": "", "fault_count": 0, "fault_at": None, "retry_at": None, "stalled_at": None}


def backoff_s(count: int) -> float:
    """Seconds before retry number `count` (1-based): doubling from RETRY_BASE_S, capped."""
    return min(RETRY_MAX_S, RETRY_BASE_S * 2 ** max(0, count - 1))


def record_fault(process_id: str, fault: BaseException) -> int:
    """Note a fault of this node for the process and when to retry; return how many happened in a row."""
    text = f"{type(fault).__name__}: {fault}"[:MAX_FAULT_CHARS]
    now = timezone.now()
    row = (models.Evaluation.objects.filter(process_id=process_id)
           .values("fault_count", "fault_at", "stalled_at").first())
    count = (row["fault_count"] if row else 0) + 1
    stalled = row["stalled_at"] if row else None
    if stalled is None and count >= STALL_AFTER:
        stalled = now
    models.Evaluation.objects.filter(process_id=process_id).update(
        fault=text, fault_count=F("fault_count") + 1, fault_at=(row or {}).get("fault_at") or now,
        retry_at=now + timedelta(seconds=backoff_s(count)), stalled_at=stalled,
    )
    if stalled is not None:
        log.error("process %s is stalled (%d faults in a row; retried every %.0f s): %s", process_id, count,
                  backoff_s(count), text)
    else:
        log.warning("process %s: fault %d, retrying in %.0f s: %s", process_id, count, backoff_s(count), text)
    return count


def backing_off(process_id: str) -> bool:
    """True while a faulted process waits for its next retry."""
    return models.Evaluation.objects.filter(process_id=process_id, retry_at__gt=timezone.now()).exists()


@dataclass(frozen=True)
class ProcessHealth:
    """How the compute unit stands with one process, for operators."""

    process_id: str
    scheduled: int  # messages in the log
    evaluated: int
    state: str  # "current", "behind", "evaluating", "retrying", "stalled"
    fault: str
    fault_count: int
    fault_since: datetime | None
    retry_at: datetime | None
    stalled_since: datetime | None
    lease_holder: str
    pending_pushes: int

    @property
    def stalled(self) -> bool:
        return self.state == "stalled"


def _health(row: models.Evaluation, pending: int) -> ProcessHealth:
    now = timezone.now()
    leased = bool(row.lease_holder) and row.lease_expires_at is not None and row.lease_expires_at > now
    if row.stalled_at is not None:
        state = "stalled"
    elif row.fault:
        state = "retrying"
    elif leased:
        state = "evaluating"
    elif row.next_nonce < row.process.next_nonce:
        state = "behind"
    else:
        state = "current"
    return ProcessHealth(
        process_id=row.process_id, scheduled=row.process.next_nonce, evaluated=row.next_nonce, state=state,
        fault=row.fault, fault_count=row.fault_count, fault_since=row.fault_at, retry_at=row.retry_at,
        stalled_since=row.stalled_at, lease_holder=row.lease_holder if leased else "", pending_pushes=pending,
    )


def process_health(process_id: str) -> ProcessHealth | None:
    """One process's health, or None if it has no cursor here."""
    row = models.Evaluation.objects.select_related("process").filter(process_id=process_id).first()
    if row is None:
        return None
    pending = models.Push.objects.filter(process_id=process_id, state=models.Push.State.PENDING).count()
    return _health(row, pending)


def all_health() -> list[ProcessHealth]:
    """Every process's health, stalled and faulted ones first."""
    pending = dict(
        models.Push.objects.filter(state=models.Push.State.PENDING).values_list("process_id").annotate(
            n=Count("id")).values_list("process_id", "n")
    )
    rows = [_health(r, pending.get(r.process_id, 0)) for r in models.Evaluation.objects.select_related("process")]
    order = {"stalled": 0, "retrying": 1, "behind": 2, "evaluating": 3, "current": 4}
    return sorted(rows, key=lambda h: (order[h.state], h.process_id))
