"""Run this node's units inline until nothing moves (tests, benchmarks, one-off maintenance).

In production Celery workers do this work as it arrives; here the compute unit evaluates every process
with pending messages and the messenger delivers every pending push, round after round, until a round
finds nothing to do.
"""

from __future__ import annotations

from ao.compute import batch, pushes
from ao.errors import AoError

MAX_ROUNDS = 40


class NodeBusy(AoError):
    """The node kept finding work for more rounds than allowed (a message loop between processes?)."""

    status = 503


def node_settle(*, max_rounds: int = MAX_ROUNDS) -> int:
    """Evaluate and deliver until a round does nothing; return the messages evaluated. A host fault is raised."""
    evaluated = 0
    for _ in range(max_rounds):
        pending = batch.processes_with_pending_messages()
        for process_id in pending:
            evaluated += batch.evaluate_pending(process_id=process_id)
        delivered = pushes.deliver_pending()
        if not (delivered.delivered or delivered.stored or delivered.retrying) and not pending:
            return evaluated
    raise NodeBusy(f"still busy after {max_rounds} rounds of evaluation and delivery")
