"""Celery entry points of the site: thin and idempotent."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from web import audit, projection, selectors


@shared_task(name="web.project", acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True,
             max_retries=5)
def project() -> int:
    """Bring the read models up to the Fed's evaluated results; safe to run twice (the cursor moves once)."""
    fed = selectors.fed_process_id()
    return projection.project_fed(fed_process_id=fed) if fed else 0


@shared_task(name=audit.VERIFY_TASK, acks_late=True)
def verify_run(run_id: int) -> str:
    """Replay-verify a process for a staff member's request; safe to run twice."""
    return audit.verify_run(run_id=run_id).status
