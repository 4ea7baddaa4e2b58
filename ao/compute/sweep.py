"""The sweeper: finds work the broker lost and asks for it again. The database, not the broker, is the truth.

Run periodically (Celery beat, every ``settings.AO["SWEEP_S"]``) and when a worker starts. It re-queues:

- evaluation of every process whose log runs past its cursor, that nobody holds a live lease on, whose queue
  mark is absent or older than the grace (``settings.AO["QUEUE_GRACE_S"]``: the task was lost to a broker
  outage, a worker killed after fetching it, or the filesystem broker, which deletes a task when it is
  fetched), and whose fault backoff is over;
- delivery of every process with pending pushes that nobody has claimed, older than the grace;

and deletes completions computed ahead (``llm_ahead``) older than an hour.

Asking twice is harmless: tasks are idempotent and the lease lets one worker in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from ao import dispatch, models
from ao.extensions import llm_ahead


@dataclass(frozen=True)
class SweepReport:
    """What one sweep asked for again."""

    evaluations: tuple[str, ...]
    deliveries: tuple[str, ...]


def sweep(*, grace_s: float | None = None) -> SweepReport:
    """Re-queue lost evaluation and delivery work; return the processes it asked for."""
    if grace_s is None:
        grace_s = float(settings.AO["QUEUE_GRACE_S"])
    now = timezone.now()
    stale = now - timedelta(seconds=grace_s)
    unleased = Q(lease_holder="") | Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    evaluations = list(
        models.Evaluation.objects.filter(unleased, next_nonce__lt=F("process__next_nonce"))
        .filter(Q(queued_at__isnull=True) | Q(queued_at__lt=stale))
        .filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now))
        .order_by("process_id").values_list("process_id", flat=True)
    )
    for process_id in evaluations:
        dispatch.request_evaluation(process_id, force=True)
    waiting = set(
        models.Push.objects.filter(state=models.Push.State.PENDING, created_at__lt=stale)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .values_list("process_id", flat=True).distinct()
    )
    deliveries = sorted(
        models.Evaluation.objects.filter(process_id__in=waiting)
        .filter(Q(delivery_queued_at__isnull=True) | Q(delivery_queued_at__lt=stale))
        .values_list("process_id", flat=True)
    )
    for process_id in deliveries:
        dispatch.request_delivery(process_id, force=True)
    llm_ahead.sweep()  # completions computed ahead are work, not history: old ones go (a lost task needs no retry:
    # the message that asks computes the completion itself)
    return SweepReport(tuple(evaluations), tuple(deliveries))
