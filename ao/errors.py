"""Every error the AO units raise to callers, in one hierarchy (HTTP status in `status`).

Two families matter to the compute unit. A message's own failure (a trap, running out of fuel, an
invalid outbox) is a fact of the log: it becomes that message's ``Error`` result. A ``HostFault`` is a
fact of this node (a store, disk, memory, database or wall-clock problem): it is never recorded, the
batch is given back, the process is retried with backoff and, if the fault persists, shown as stalled.
"""

from __future__ import annotations


class AoError(Exception):
    """Base of the units' errors; `status` is the HTTP status an endpoint answers with."""

    status = 400


class InvalidMessage(AoError):
    """The item is malformed, unsigned, missing required tags or too large."""


class MessageTooLarge(InvalidMessage):
    """The item is over the scheduler's size limit."""

    status = 413


class BadSignature(InvalidMessage):
    """The item's signature does not verify."""


class DuplicateMessage(AoError):
    """A message with this id was already scheduled."""

    status = 409


class UnknownProcess(AoError):
    """No process with this id is scheduled here."""

    status = 404


class WrongScheduler(AoError):
    """The process names another scheduler."""

    status = 421


class HostFault(AoError):
    """This node cannot evaluate a message right now; the cause is the node, not the log.

    Never recorded as a result (a replay on a healthy node would disagree): evaluation stops, nothing of the
    faulting message is committed, and the process is retried later.
    """

    status = 503


class HostUnavailable(HostFault):
    """A store, file, memory or model-engine fault during a message's host work."""


class WallClockExceeded(HostFault):
    """A message ran past the compute unit's wall-clock safety limit (this machine is too slow or too busy)."""


class EvaluationError(HostFault):
    """The process cannot be evaluated on this node (its module is missing here, a gap in the log)."""


class SourcePending(HostFault):
    """A push names a scheduled message of its source process that is not evaluated yet: wait for it."""


class LeaseLost(AoError):
    """Another worker took this process's lease while a batch was evaluated: the batch is discarded."""

    status = 409


class ProcessBusy(AoError):
    """Another worker is evaluating this process."""

    status = 503


class NotEvaluable(AoError):
    """No such message in the process's log."""

    status = 404


class NotYetEvaluated(AoError):
    """The message is scheduled but its result is not ready within the wait (the process is busy or stalled)."""

    status = 503


class SpawnRefused(AoError):
    """A spawn from a public endpoint asking more than this node grants signers outside its allow-list."""

    status = 403


class UnknownMessage(AoError):
    """An assign naming a message this node does not hold."""

    status = 404


class Evaluating(AoError):
    """The answer needs more work than a web request may do: a worker has it; ask again (AO's 202 "busy")."""

    status = 202

    def __init__(self, message: str, *, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after
