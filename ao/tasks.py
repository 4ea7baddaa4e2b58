"""Celery entry points of the AO units: thin, idempotent, taking ids.

Every task here is safe to run twice and on many workers at once (leases, claims and compare-and-set on
the cursor), so each acknowledges late and is given back to the broker when its worker dies. What a broker
loses anyway is found again by the sweeper, which reads the database.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready

from ao import dispatch
from ao.compute import batch, pushes, reads, sweep
from ao.extensions import llm_ahead, llm_host

log = logging.getLogger(__name__)

IDEMPOTENT = {"acks_late": True, "reject_on_worker_lost": True}


@shared_task(name=dispatch.EVALUATE_TASK, **IDEMPOTENT)
def evaluate(process_id: str) -> int:
    """Evaluate a process's pending messages in order for a while; host faults are kept on the process, not raised."""
    report = batch.evaluate_process(process_id=process_id)
    if report.fault:
        log.warning("process %s: %s", process_id, report.fault)
    return report.evaluated


@shared_task(name=dispatch.DELIVER_TASK, **IDEMPOTENT)
def deliver_pushes(process_id: str | None = None) -> int:
    """Deliver the pending pushes of one process (or all); asks for another run if it stopped at its limit."""
    if process_id is not None:
        dispatch.delivery_started(process_id)
    report = pushes.deliver_pending(process_id=process_id)
    if report.more and process_id is not None:
        dispatch.request_delivery(process_id)
    return report.delivered + report.stored


@shared_task(name=llm_ahead.TASK, **IDEMPOTENT)
def complete_ahead(key: str) -> bool:
    """Compute a completion a committed message hinted at, unless another worker has it (it is work, not history)."""
    return llm_ahead.compute(key, llm_host.engine_for_model)


@shared_task(name=reads.DRY_RUN_TASK)
def dry_run(process_id: str, message: dict, key: str) -> None:
    """A dry-run beyond a web request's budget; the answer waits in the shared cache for its client."""
    reads.worker_dry_run(process_id=process_id, message=message, key=key)


@shared_task(name="ao.sweep", **IDEMPOTENT)
def sweep_lost_work() -> int:
    """Re-queue evaluation and delivery that a broker outage or a killed worker lost (periodic, and on start)."""
    report = sweep.sweep()
    return len(report.evaluations) + len(report.deliveries)


@worker_ready.connect
def _recover_on_start(**_: object) -> None:
    """After a crash nothing else remembers unfinished work: look for it when a worker comes up."""
    sweep_lost_work.delay()
