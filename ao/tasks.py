"""Celery entry points of the AO units: thin, idempotent, taking ids."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.db import OperationalError

from ao import evaluation, services
from ao.errors import HostUnavailable
from ao.permaweb.store import StoreUnavailable

log = logging.getLogger(__name__)

BUSY_RETRY_S = 2
BUSY_MAX_RETRIES = 300


@shared_task(
    name="ao.deliver_pushes",
    acks_late=True,
    autoretry_for=(StoreUnavailable, OperationalError),
    retry_backoff=True,
    max_retries=5,
)
def deliver_pushes(process_id: str | None = None) -> int:
    """Deliver pending outbox pushes (of one process, or all); safe to run twice."""
    return services.mu_deliver_pending(process_id=process_id)


@shared_task(
    bind=True,
    name="ao.evaluate",
    acks_late=True,
    autoretry_for=(StoreUnavailable, HostUnavailable, OperationalError),
    retry_backoff=True,
    max_retries=8,
)
def evaluate(self, process_id: str) -> int:  # type: ignore[no-untyped-def]
    """Evaluate a process's pending messages in order; safe to run twice, and on many workers."""
    try:
        return evaluation.cu_evaluate_pending(process_id=process_id)
    except evaluation.ProcessBusy as exc:
        # Another worker holds the process; its run may end before seeing our message.
        raise self.retry(exc=exc, countdown=BUSY_RETRY_S, max_retries=BUSY_MAX_RETRIES) from exc
    except evaluation.EvaluationError as exc:
        log.warning("process %s cannot be evaluated: %s", process_id, exc)
        return 0


@shared_task(name="ao.evaluate_all_pending", acks_late=True)
def evaluate_all_pending() -> int:
    """Queue evaluation for every process with unevaluated messages (run when a worker starts)."""
    ids = evaluation.processes_with_pending_messages()
    for process_id in ids:
        evaluate.delay(process_id)
    return len(ids)


@worker_ready.connect
def _recover_on_start(**_: object) -> None:
    """After a crash nothing else remembers unfinished work: look for it when a worker comes up."""
    evaluate_all_pending.delay()
