"""Reads of the AO units: log pages, processes, messages, in AO's JSON shapes."""

from __future__ import annotations

from dataclasses import dataclass

from ao import models
from ao.errors import AoError, UnknownProcess
from ao.permaweb import dataitem
from ao.permaweb.b64 import b64url_encode

MAX_PAGE = 1000
DEFAULT_PAGE = 100


class NotScheduled(AoError):
    """No such message in that process's log."""

    status = 404


def item_json(item: dataitem.DataItem) -> dict:
    """A data item in the scheduler's JSON shape (data as UTF-8 text, as AO's SU shows it)."""
    return {
        "id": item.id,
        "owner": {"address": item.owner_address, "key": item.owner_b64},
        "data": item.data.decode("utf-8", errors="replace"),
        "tags": [{"name": n, "value": v} for n, v in item.tags],
        "signature": b64url_encode(item.signature),
        "anchor": item.anchor_b64 or None,
        "target": item.target_b64 or None,
    }


def assignment_node(assignment: models.Assignment) -> dict:
    """One edge node: the message and its assignment."""
    return {
        "message": item_json(dataitem.parse(bytes(assignment.message.raw))),
        "assignment": item_json(dataitem.parse(bytes(assignment.raw))),
    }


@dataclass(frozen=True)
class LogPage:
    """A page of a process's log."""

    edges: list[dict]
    has_next_page: bool

    def to_json(self) -> dict:
        """AO's paginated shape."""
        return {"page_info": {"has_next_page": self.has_next_page}, "edges": self.edges}


def log_page(
    *,
    process_id: str,
    from_timestamp: int | None = None,
    to_timestamp: int | None = None,
    from_nonce: int | None = None,
    to_nonce: int | None = None,
    limit: int = DEFAULT_PAGE,
) -> LogPage:
    """A page of the log, by timestamp (from exclusive, to inclusive, as AO) or by nonce."""
    if not models.Process.objects.filter(id=process_id).exists():
        raise UnknownProcess(f"no process {process_id} on this scheduler")
    limit = max(1, min(limit, MAX_PAGE))
    qs = models.Assignment.objects.filter(process_id=process_id).select_related("message")
    by_nonce = from_nonce is not None or to_nonce is not None
    if by_nonce:
        if from_nonce is not None:
            qs = qs.filter(nonce__gt=from_nonce)
        if to_nonce is not None:
            qs = qs.filter(nonce__lte=to_nonce)
    else:
        if from_timestamp is not None:
            qs = qs.filter(timestamp__gt=from_timestamp)
        if to_timestamp is not None:
            qs = qs.filter(timestamp__lte=to_timestamp)
    rows = list(qs.order_by("nonce")[: limit + 1])
    has_next = len(rows) > limit
    rows = rows[:limit]
    if has_next and not by_nonce and rows:
        # Several messages can share a millisecond; a timestamp cursor must not cut a run
        # of equal timestamps, or the next page (timestamp > cursor) would skip the rest.
        last = rows[-1]
        rows += list(qs.filter(timestamp=last.timestamp, nonce__gt=last.nonce).order_by("nonce"))
        has_next = qs.filter(nonce__gt=rows[-1].nonce).exists()
    edges = [
        {"node": assignment_node(a), "cursor": str(a.nonce if by_nonce else a.timestamp)} for a in rows
    ]
    return LogPage(edges=edges, has_next_page=has_next)


def message_node(*, message_id: str, process_id: str) -> dict:
    """A scheduled message and its assignment."""
    assignment = (
        models.Assignment.objects.select_related("message")
        .filter(process_id=process_id, message__id=message_id)
        .first()
    )
    if assignment is None:
        raise NotScheduled(f"message {message_id} is not in the log of process {process_id}")
    return assignment_node(assignment)


def process_json(*, process_id: str) -> dict:
    """A process spawn as the SU's /processes/{id} shows it."""
    assignment = (
        models.Assignment.objects.select_related("message").filter(process_id=process_id, nonce=0).first()
    )
    if assignment is None:
        raise UnknownProcess(f"no process {process_id} on this scheduler")
    body = item_json(dataitem.parse(bytes(assignment.message.raw)))
    body.update(
        {
            "process_id": process_id,
            "block": str(assignment.block_height),
            "timestamp": assignment.timestamp,
            "nonce": 0,
            "epoch": assignment.epoch,
            "hash_chain": assignment.hash_chain,
        }
    )
    return body


def latest_json(*, process_id: str) -> dict:
    """The newest slot of a process's log."""
    assignment = (
        models.Assignment.objects.select_related("message").filter(process_id=process_id).order_by("-nonce").first()
    )
    if assignment is None:
        raise UnknownProcess(f"no process {process_id} on this scheduler")
    return assignment_node(assignment)
