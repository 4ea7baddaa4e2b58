"""Celery entry points of the AO units: thin, idempotent, taking ids."""

from __future__ import annotations

from celery import shared_task

from ao import services
from ao.permaweb.store import StoreUnavailable


@shared_task(
    name="ao.deliver_pushes",
    acks_late=True,
    autoretry_for=(StoreUnavailable,),
    retry_backoff=True,
    max_retries=5,
)
def deliver_pushes(process_id: str | None = None) -> int:
    """Deliver pending outbox pushes (of one process, or all); safe to run twice."""
    return services.mu_deliver_pending(process_id=process_id)
