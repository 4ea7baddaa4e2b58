"""Work requests: tasks enqueued after the commit that calls for them, by name, at most one queued per process.

Services and the compute unit never import the task modules: they ask for work here, and the task is looked
up by name in the Celery app when the transaction commits. A request sets a "queued" mark on the process's
cursor row in the caller's transaction; only the request that sets it enqueues, so a stream of messages
queues one evaluation, not one per message. The task clears the mark when it starts. If the broker loses
the task (an outage, a worker killed after fetching it), the mark grows old and the sweeper enqueues again.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from ao import models

log = logging.getLogger(__name__)

EVALUATE_TASK = "ao.evaluate"
DELIVER_TASK = "ao.deliver_pushes"

# Sent after a batch of a process's results has committed (process_id, first_nonce, last_nonce): read models
# elsewhere (the site) follow the log without ao knowing them.
results_committed = Signal()


def enqueue(task_name: str, *args: object) -> None:
    """Send a task once the current transaction commits (at once outside one); a failed send is left to the sweeper."""

    def send() -> None:
        from celery import current_app

        if task_name not in current_app.tasks:  # outside a worker the task modules load on first use
            current_app.loader.import_default_modules()
        current_app.tasks[task_name].apply_async(args=args)

    send.__qualname__ = f"enqueue {task_name}{args!r}"  # what a failed send is logged as
    transaction.on_commit(send, robust=True)


def request_evaluation(process_id: str, *, force: bool = False) -> bool:
    """Ask for the process to be evaluated; True if a task was queued (False: one is already waiting)."""
    marks = models.Evaluation.objects.filter(process_id=process_id)
    if not force:
        marks = marks.filter(queued_at__isnull=True)
        # Look before writing: in a stream the mark is usually set, and a plain read takes no row lock that a
        # committing worker would have to wait for.
        if not marks.exists():
            return False
    if not marks.update(queued_at=timezone.now()):
        return False
    enqueue(EVALUATE_TASK, process_id)
    return True


def request_delivery(process_id: str, *, force: bool = False) -> bool:
    """Ask for the process's pending pushes to be delivered; True if a task was queued."""
    marks = models.Evaluation.objects.filter(process_id=process_id)
    if not force:
        marks = marks.filter(delivery_queued_at__isnull=True)
        if not marks.exists():
            return False
    if not marks.update(delivery_queued_at=timezone.now()):
        return False
    enqueue(DELIVER_TASK, process_id)
    return True


def evaluation_started(process_id: str) -> None:
    """An evaluation task runs: later messages must queue a new one."""
    models.Evaluation.objects.filter(process_id=process_id).update(queued_at=None)


def delivery_started(process_id: str) -> None:
    """A delivery task runs: later pushes must queue a new one."""
    models.Evaluation.objects.filter(process_id=process_id).update(delivery_queued_at=None)


def announce_results(process_id: str, first_nonce: int, last_nonce: int) -> None:
    """Tell read models about committed results, once the transaction commits; their failure is only logged."""

    def send() -> None:
        for receiver, outcome in results_committed.send_robust(
            sender=None, process_id=process_id, first_nonce=first_nonce, last_nonce=last_nonce
        ):
            if isinstance(outcome, Exception):
                log.warning("a read model did not follow process %s to nonce %s: %s", process_id, last_nonce, outcome)

    transaction.on_commit(send)
