"""Outbox messages: recorded with their result, delivered exactly once, never dropped.

Recording happens in the batch's commit: every outbox message of every committed result becomes a Push row
keyed by (process, nonce, index), whatever its target (the outbox was validated with the result, so every
row can be pushed). Delivery claims rows (a holder and an expiry, taken by a conditional update), builds the
signed item (its id is fixed by the row's identity), and in one transaction schedules it on the target's log
— or, when no process of that id lives on this scheduler (a wallet, a process elsewhere), keeps the item in
this node's store where its recipient finds it — and marks the row. A worker killed at any point leaves the
row pending and its claim expiring; the next delivery finds it, and the scheduler drops a repeat as a
duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from ao import dispatch, models, services
from ao.compute import lease
from ao.compute.message import Evaluated
from ao.effects import keys
from ao.effects.stores import embedded_store
from ao.errors import DuplicateMessage
from ao.permaweb import dataitem
from ao.units import mu

log = logging.getLogger(__name__)

CHUNK = 200  # pushes delivered per transaction
MAX_ATTEMPTS = 5
DELIVER_LIMIT = 5000  # rows one delivery run takes before it asks for another run (fairness between processes)


def record(*, process_id: str, results: Sequence[Evaluated]) -> int:
    """Record the outbox of committed results (call inside the batch's commit); return how many rows."""
    rows = [
        models.Push(process_id=process_id, nonce=r.nonce, index=index, target=message.target,
                    message=message.to_json(), pushed_for=r.pushed_for)
        for r in results for index, message in enumerate(r.outbox)
    ]
    models.Push.objects.bulk_create(rows, batch_size=1000)
    return len(rows)


@dataclass(frozen=True)
class DeliveryReport:
    """What one delivery run did."""

    delivered: int = 0
    stored: int = 0
    failed: int = 0
    retrying: int = 0
    more: bool = False

    def __add__(self, other: DeliveryReport) -> DeliveryReport:
        return DeliveryReport(self.delivered + other.delivered, self.stored + other.stored,
                              self.failed + other.failed, self.retrying + other.retrying, other.more)


def _claim_s() -> float:
    """How long a delivery claim lasts: a row is retried after this if its worker dies before marking it."""
    return float(settings.AO["CLAIM_S"])


def _unclaimed() -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=timezone.now())


def deliver_pending(*, process_id: str | None = None, limit: int = DELIVER_LIMIT) -> DeliveryReport:
    """Deliver pending pushes (of one process, or all) in (process, nonce, index) order; safe to run anywhere, twice."""
    holder = lease.new_holder()
    report = DeliveryReport()
    taken = 0
    while taken < limit:
        pending = models.Push.objects.filter(_unclaimed(), state=models.Push.State.PENDING)
        if process_id is not None:
            pending = pending.filter(process_id=process_id)
        ids = list(pending.order_by("process_id", "nonce", "index").values_list("id", flat=True)[:CHUNK])
        if not ids:
            return report
        models.Push.objects.filter(_unclaimed(), id__in=ids, state=models.Push.State.PENDING).update(
            claimed_by=holder, claimed_until=timezone.now() + timedelta(seconds=_claim_s()), attempts=F("attempts") + 1
        )
        rows = list(models.Push.objects.filter(id__in=ids, claimed_by=holder, state=models.Push.State.PENDING)
                    .select_related("process").order_by("process_id", "nonce", "index"))
        taken += len(ids)
        if rows:
            report = report + _deliver(rows)
    return DeliveryReport(report.delivered, report.stored, report.failed, report.retrying, more=True)


def _item(row: models.Push, signer: object) -> dataitem.DataItem:
    if row.raw:
        return dataitem.parse(bytes(row.raw))
    assert row.message is not None
    return mu.build_push(
        signer, process_id=row.process_id, module_id=row.process.module, nonce=row.nonce, index=row.index,  # type: ignore[arg-type]
        pushed_for=row.pushed_for or row.process_id, message=mu.OutboxMessage.from_json(row.message),
    )


def _deliver(rows: list[models.Push]) -> DeliveryReport:
    """Deliver claimed rows: schedule or store each item and mark its row, all in one transaction."""
    signer = keys.messenger_key()
    items = {row.id: _item(row, signer) for row in rows}
    local = set(models.Process.objects.filter(id__in={r.target for r in rows}).values_list("id", flat=True))
    now = timezone.now()
    delivered, stored, failed, retrying = [], [], [], []
    with transaction.atomic():
        to_schedule = [row for row in rows if row.target in local]
        outcomes = services.su_assign_items(items=[items[r.id] for r in to_schedule]) if to_schedule else []
        for row, outcome in zip(to_schedule, outcomes):
            if isinstance(outcome, models.Assignment) or isinstance(outcome, DuplicateMessage):
                delivered.append(row)
            else:
                row.error = str(outcome)[:2000]
                (failed if row.attempts >= MAX_ATTEMPTS else retrying).append(row)
        elsewhere = [row for row in rows if row.target not in local]
        if elsewhere:
            _keep_in_store([items[r.id] for r in elsewhere])
            stored.extend(elsewhere)
        for group, state in ((delivered, models.Push.State.DELIVERED), (stored, models.Push.State.STORED)):
            for row in group:
                row.state, row.delivered_at, row.error = state, now, ""
        for row in failed:
            row.state = models.Push.State.FAILED
        for row in retrying:  # the claim runs out and the row is tried again
            row.claimed_until = now + timedelta(seconds=_claim_s() * row.attempts)
        for row in rows:
            row.item_id, row.raw, row.claimed_by = items[row.id].id, items[row.id].serialize(), ""
            if row.state != models.Push.State.PENDING:
                row.claimed_until = None
        models.Push.objects.bulk_update(
            rows, ["state", "delivered_at", "error", "item_id", "raw", "claimed_by", "claimed_until"]
        )
    for row in failed:
        log.error("push %s/%s/%s to %s failed for good: %s", row.process_id, row.nonce, row.index, row.target,
                  row.error)
    return DeliveryReport(len(delivered), len(stored), len(failed), len(retrying))


def _keep_in_store(items: list[dataitem.DataItem]) -> None:
    """Keep items addressed outside this scheduler in the store (GraphQL finds them by recipient); idempotent."""
    store = embedded_store()
    known = set(models.Entry.objects.filter(id__in=[i.id for i in items]).values_list("id", flat=True))
    fresh = [i for i in items if i.id not in known]
    if not fresh:
        return
    block = store.latest_block()
    entries = [store.entry_for(item, block=block) for item in fresh]
    models.Entry.objects.bulk_create(entries)
    models.EntryTag.objects.bulk_create(
        (models.EntryTag(entry=entry, position=i, name=name, value=value)
         for entry, item in zip(entries, fresh) for i, (name, value) in enumerate(item.tags)),
        batch_size=2000,
    )


def request_delivery_after(results: Sequence[Evaluated], process_id: str) -> None:
    """Ask for delivery once the commit recording these results' pushes lands."""
    if any(r.outbox for r in results):
        dispatch.request_delivery(process_id)

