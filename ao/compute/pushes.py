"""Outbox messages: recorded with their result, delivered exactly once, never dropped.

Recording happens in the batch's commit: every outbox message of every committed result becomes a Push row
keyed by (process, nonce, index), whatever its target (the outbox was validated with the result, so every
row can be pushed). Delivery claims rows, builds the signed item (its id is fixed by the row's identity), and in
one transaction schedules it on the target's log — or, when no process of that id lives on this scheduler (a
wallet, a process elsewhere), keeps the item in this node's store where its recipient finds it — and marks the
row. On PostgreSQL a claim is a row lock (``FOR UPDATE SKIP LOCKED``) held by the transaction that delivers the
rows; on SQLite, whose writers take turns, it is a holder and an expiry written by a conditional update. A
worker killed at any point leaves the row pending (its lock gone with its connection, or its claim expiring);
the next delivery finds it, and the scheduler drops a repeat as a duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from ao import models, services
from ao.compute import lease
from ao.compute.message import Evaluated
from ao.effects import bulk, keys
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
    rows = [(process_id, r.nonce, index, message.target, r.pushed_for)
            for r in results for index, message in enumerate(r.outbox)]
    if rows:
        _insert_pending(rows)
    return len(rows)


def _insert_pending(rows: list[tuple[str, int, int, str, str]]) -> None:
    """Insert pending Push rows in one statement: the commit's hot path (two notices per ledger transfer)."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    bulk.insert_rows(models.Push, ("process_id", "nonce", "index", "target", "pushed_for", "state", "attempts",
                                   "error", "claimed_by", "created_at"),
                     [(*row, models.Push.State.PENDING, 0, "", "", now) for row in rows])


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


def deliver_pending(*, process_id: str | None = None, limit: int = DELIVER_LIMIT,
                    target: str | None = None) -> DeliveryReport:
    """Deliver pending pushes (of one process, or all; to one target, or any) in (process, nonce, index) order;
    safe to run anywhere, twice."""
    holder = lease.new_holder()
    report = DeliveryReport()
    taken = 0
    while taken < limit:
        pending = models.Push.objects.filter(_unclaimed(), state=models.Push.State.PENDING)
        if process_id is not None:
            pending = pending.filter(process_id=process_id)
        if target is not None:
            pending = pending.filter(target=target)
        pending = pending.order_by("process_id", "nonce", "index")
        if connection.features.has_select_for_update_skip_locked:
            # PostgreSQL: the chunk's rows are claimed by row locks for the length of one transaction (a killed
            # worker's locks go with its connection), not by writing a claim into every row first.
            with transaction.atomic():
                rows = [_Row(*values, counted=False) for values in pending.select_for_update(
                    skip_locked=True, of=("self",)).values_list(*_Row.COLUMNS)[:CHUNK]]
                if rows:
                    report = report + _deliver(rows)
        else:
            ids = list(pending.values_list("id", flat=True)[:CHUNK])
            models.Push.objects.filter(_unclaimed(), id__in=ids, state=models.Push.State.PENDING).update(
                claimed_by=holder, claimed_until=timezone.now() + timedelta(seconds=_claim_s()),
                attempts=F("attempts") + 1)
            rows = [_Row(*values) for values in models.Push.objects.filter(
                id__in=ids, claimed_by=holder, state=models.Push.State.PENDING).order_by(
                "process_id", "nonce", "index").values_list(*_Row.COLUMNS)]
            if rows:
                report = report + _deliver(rows)
        if not rows:
            return report
        taken += len(rows)
    return DeliveryReport(report.delivered, report.stored, report.failed, report.retrying, more=True)


@dataclass
class _Row:
    """A claimed Push row: what delivery reads and sets (plain values, not a model object per row)."""

    COLUMNS = ("id", "process_id", "nonce", "index", "target", "pushed_for", "raw", "process__module", "attempts")

    id: int
    process_id: str
    nonce: int
    index: int
    target: str
    pushed_for: str
    raw: bytes | None
    module: str
    attempts: int
    error: str = ""
    counted: bool = True  # the claim already counted this attempt (else the row's outcome counts it)

    def __post_init__(self) -> None:
        if not self.counted:
            self.attempts += 1


def _items(rows: list[_Row]) -> dict[int, dataitem.DataItem]:
    """The signed item of each row, built from its result's outbox message (the Result keeps the message)."""
    signer = keys.messenger_key()
    bodies = {}
    for process_id in {r.process_id for r in rows}:
        nonces = {r.nonce for r in rows if r.process_id == process_id}
        for nonce, body in models.Result.objects.filter(process_id=process_id, nonce__in=nonces).values_list(
                "nonce", "body"):
            bodies[(process_id, nonce)] = body
    items = {}
    for row in rows:
        if row.raw:  # built by an earlier version of the messenger
            items[row.id] = dataitem.parse(bytes(row.raw))
            continue
        message = mu.OutboxMessage.from_json(bodies[(row.process_id, row.nonce)]["Messages"][row.index])
        items[row.id] = mu.build_push(
            signer, process_id=row.process_id, module_id=row.module, nonce=row.nonce, index=row.index,
            pushed_for=row.pushed_for or row.process_id, message=message,
        )
    return items


def _deliver(rows: list[_Row]) -> DeliveryReport:
    """Deliver claimed rows: schedule or store each item and mark its row, all in one transaction."""
    items = _items(rows)
    local = set(models.Process.objects.filter(id__in={r.target for r in rows}).values_list("id", flat=True))
    now = timezone.now()
    delivered, stored, failed, retrying = [], [], [], []
    with transaction.atomic():
        to_schedule = [row for row in rows if row.target in local]
        outcomes = services.su_assign_items(items=[items[r.id] for r in to_schedule]) if to_schedule else []
        for row, outcome in zip(to_schedule, outcomes):
            if isinstance(outcome, (models.Assignment, DuplicateMessage)):
                delivered.append(row)
            else:
                row.error = str(outcome)[:2000]
                (failed if row.attempts >= MAX_ATTEMPTS else retrying).append(row)
        elsewhere = [row for row in rows if row.target not in local]
        if elsewhere:
            _keep_in_store([items[r.id] for r in elsewhere])
            stored.extend(elsewhere)
        _mark_done({row.id: (items[row.id].id, models.Push.State.DELIVERED.value) for row in delivered}
                   | {row.id: (items[row.id].id, models.Push.State.STORED.value) for row in stored}, now,
                   count_attempt=not rows[0].counted)
        for row in failed:
            models.Push.objects.filter(id=row.id).update(state=models.Push.State.FAILED, error=row.error,
                                                         item_id=items[row.id].id, claimed_by="", claimed_until=None,
                                                         attempts=row.attempts)
        for row in retrying:  # the claim runs out later and the row is tried again
            models.Push.objects.filter(id=row.id).update(
                error=row.error, item_id=items[row.id].id, attempts=row.attempts,
                claimed_until=now + timedelta(seconds=_claim_s() * row.attempts))
    for row in failed:
        log.error("push %s/%s/%s to %s failed for good: %s", row.process_id, row.nonce, row.index, row.target,
                  row.error)
    return DeliveryReport(len(delivered), len(stored), len(failed), len(retrying))


def _mark_done(done: dict[int, tuple[str, str]], now: object, *, count_attempt: bool) -> None:
    """Rows delivered or stored, each with its item id and state, in one statement: every row is rewritten once
    (Django's bulk_update builds a CASE per row, 20x slower here; and on PostgreSQL each UPDATE of an indexed
    column writes the row and its index entries anew)."""
    if not done:
        return
    table = models.Push._meta.db_table
    values = ", ".join(["(%s, %s, %s)"] * len(done))
    params: list[object] = [p for row_id, (item_id, state) in done.items() for p in (row_id, item_id, state)]
    with connection.cursor() as cursor:
        # Both SQLite (3.33+) and PostgreSQL name a VALUES list's columns column1, column2, ...
        attempts = ", attempts = attempts + 1" if count_attempt else ""
        cursor.execute(f"UPDATE {table} SET item_id = v.column2, state = v.column3, delivered_at = %s, "  # noqa: S608
                       f"error = '', claimed_by = '', claimed_until = NULL{attempts} FROM (VALUES {values}) AS v "
                       f"WHERE {table}.id = v.column1", [connection.ops.adapt_datetimefield_value(now), *params])


def _keep_in_store(items: list[dataitem.DataItem]) -> None:
    """Keep items addressed outside this scheduler in the store (GraphQL finds them by recipient); idempotent."""
    store = embedded_store()
    known = set(models.Entry.objects.filter(id__in=[i.id for i in items]).values_list("id", flat=True))
    fresh = [i for i in items if i.id not in known]
    if not fresh:
        return
    store.insert_items(fresh, block=store.latest_block())

