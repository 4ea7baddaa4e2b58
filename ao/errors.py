"""Every error the AO units raise to callers, in one hierarchy (HTTP status in `status`)."""

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


class HostUnavailable(AoError):
    """This node cannot do a message's host work right now (a store, file or memory fault).

    Never recorded as the message's result: the result would then depend on this node's health, and a
    replay elsewhere would disagree. Evaluation stops, nothing is committed, and the task retries.
    """

    status = 503
