"""The read models (Petition, Vote, Grant) as a projection of the log: the wAR ledger's results (transfers to the
Fed: "submitted") and the Fed's results (the Petition-* messages of policy/PROTOCOL.md, and the LLAMA ledger's
grant replies the Fed took).

Each process has a cursor (Projection.next_nonce). A batch of results is applied in nonce order, together with
the cursor, in one transaction; every write is an upsert keyed by petition id or (petition, governor), and every
value comes from the log (message timestamps, never the clock), so applying a result twice changes nothing and
`rebuild` reproduces the same rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.db import transaction

from ao import models as ao_models
from ao.permaweb import dataitem
from web import selectors
from web.models import MAX_NAME_CHARS, MAX_PETITION_CHARS, Grant, Petition, PetitionRequest, Projection, Vote

log = logging.getLogger(__name__)

BATCH = 500
MAX_REASON_CHARS = 400
MAX_ERROR_CHARS = 300
MAX_GOVERNOR_CHARS = 32
SENTINEL = "sentinel"  # the governor order whose vote is a veto, not a grade (policy/PROTOCOL.md)
# The Fed refunds a second transfer carrying a known petition id with this reason and keeps the first petition.
DUPLICATE_REASON = "duplicate petition id"
# Status order: a late or repeated message never moves a petition backwards.
RANK = {
    Petition.Status.SUBMITTED: 0,
    Petition.Status.RECEIVED: 1,
    Petition.Status.DELIBERATING: 2,
    Petition.Status.DECIDED: 3,
    Petition.Status.REFUNDED: 3,
    Petition.Status.FAILED: 3,
}

Applier = Callable[[ao_models.Result, ao_models.Assignment | None], None]


def project_fed(*, fed_process_id: str) -> int:
    """Apply the new results of the wAR ledger and of the Fed to the read models; return how many were read."""
    applied = 0
    war = _war_of(fed_process_id)
    if war is not None:
        applied += _project(war, lambda result, assignment: _apply_war(result, assignment, fed_process_id),
                            after=_answer_requests)
    applied += _project(fed_process_id, _apply_fed)
    return applied


def follow(sender: object = None, *, process_id: str, **_: object) -> int:
    """Project right after the worker commits results of the Fed or its wAR ledger (ao's results_committed)."""
    fed = selectors.fed_process_id()
    if fed is None or process_id not in (fed, _war_of(fed)):
        return 0
    return project_fed(fed_process_id=fed)


def rebuild(*, fed_process_id: str | None) -> int:
    """Empty the read models and their cursors, then project the whole log again, in one transaction."""
    with transaction.atomic():
        Vote.objects.all().delete()
        Grant.objects.all().delete()
        Petition.objects.all().delete()
        Projection.objects.all().delete()
        return project_fed(fed_process_id=fed_process_id) if fed_process_id else 0


def _war_of(fed_process_id: str) -> str | None:
    """The wAR ledger the Fed takes petitions from (its spawn config), else this node's wAR token."""
    config = selectors.state_value(fed_process_id, "config") or {}
    return config.get("War-Token") or selectors.token_process_id(selectors.WAR)


def _project(process_id: str, apply: Applier,
             after: Callable[[list[ao_models.Result]], None] | None = None) -> int:
    """Apply a process's unprojected results in nonce order, a batch per transaction; stop at the first gap.
    ``after``: called with each applied batch, in its transaction."""
    done = 0
    while True:
        cursor = Projection.objects.filter(process_id=process_id).values_list("next_nonce", flat=True).first() or 0
        # Look before taking a write lock: pages call this on every poll.
        if not ao_models.Result.objects.filter(process_id=process_id, nonce__gte=cursor).exists():
            return done
        with transaction.atomic():
            Projection.objects.get_or_create(process_id=process_id)
            locked = Projection.objects.select_for_update(skip_locked=True).filter(process_id=process_id).first()
            if locked is None:
                return done  # another worker is projecting this process
            results = list(
                ao_models.Result.objects.filter(process_id=process_id, nonce__gte=locked.next_nonce)
                .order_by("nonce")[:BATCH]
            )
            contiguous = []
            for result in results:
                if result.nonce != locked.next_nonce + len(contiguous):
                    break
                contiguous.append(result)
            if not contiguous:
                return done
            assignments = {
                a.nonce: a
                for a in ao_models.Assignment.objects.filter(
                    process_id=process_id, nonce__in=[r.nonce for r in contiguous]
                ).select_related("message")
            }
            for result in contiguous:
                apply(result, assignments.get(result.nonce))
            if after is not None:
                after(contiguous)
            locked.next_nonce = contiguous[-1].nonce + 1
            locked.save(update_fields=["next_nonce", "updated_at"])
        done += len(contiguous)
        if len(contiguous) < BATCH:
            return done


# --- helpers ------------------------------------------------------------------------------------------------


def _input_item(assignment: ao_models.Assignment | None) -> dataitem.DataItem | None:
    if assignment is None or assignment.message.raw is None:
        return None
    try:
        return dataitem.parse(bytes(assignment.message.raw))
    except dataitem.DataItemError:
        return None


def _input_tags(item: dataitem.DataItem | None) -> dict[str, str]:
    tags: dict[str, str] = {}
    for name, value in item.tags if item else ():
        tags.setdefault(name, value)
    return tags


def _timestamp(assignment: ao_models.Assignment | None) -> Any:
    return selectors.ms_to_datetime(assignment.timestamp) if assignment is not None else None


def _amount(raw: str | None) -> Decimal | None:
    if raw is None or not raw.isdigit():
        return None
    return Decimal(int(raw))


def _cut(text: str | None, limit: int) -> str:
    """Trimmed and cut to the Fed's limit, as the Fed stores it."""
    return (text or "").strip()[:limit]


def _advance(petition: Petition, status: str) -> None:
    if RANK[Petition.Status(status)] >= RANK[Petition.Status(petition.status)]:
        petition.status = status


def _messages(result: ao_models.Result) -> list[tuple[dict[str, Any], dict[str, str]]]:
    out = []
    for message in result.body.get("Messages") or []:
        if isinstance(message, dict):
            out.append((message, selectors.tags_of(message)))
    return out


# --- the wAR ledger: transfers to the Fed -------------------------------------------------------------------


def _apply_war(result: ao_models.Result, assignment: ao_models.Assignment | None, fed: str) -> None:
    """A Credit-Notice to the Fed is a petition on its way: create it as submitted (never touch a later state)."""
    if result.error:
        return
    notices = [(m, t) for m, t in _messages(result) if t.get("Action") == "Credit-Notice" and m.get("Target") == fed]
    if not notices:
        return
    # The petition id is the root message the transfer was pushed for: the Fed sees it as Pushed-For.
    petition_id = result.pushed_for or result.message_id
    at = _timestamp(assignment)
    for _, tags in notices[:1]:  # one transfer, one notice
        petition, created = Petition.objects.get_or_create(
            id=petition_id,
            defaults={
                "petitioner": tags.get("Sender", ""),
                "sender_name": _cut(tags.get("X-Sender-Name"), MAX_NAME_CHARS),
                "text": _cut(tags.get("X-Petition"), MAX_PETITION_CHARS),
                "offering": _amount(tags.get("Quantity")),
                "status": Petition.Status.SUBMITTED,
                "submitted_at": at,
            },
        )
        if not created and petition.submitted_at is None:
            petition.submitted_at = at
            petition.save(update_fields=["submitted_at"])


def _answer_requests(results: list[ao_models.Result]) -> None:
    """Record the wAR ledger's answer on the petitions this site sent among these results: credited when the
    transfer put the petition in the Fed's log (its Petition row, written just before), else refused."""
    sent = list(PetitionRequest.objects.filter(message_id__in=[r.message_id for r in results],
                                               ledger_answer=PetitionRequest.Answer.WAITING)
                .values_list("message_id", flat=True))
    if not sent:
        return
    credited = set(Petition.objects.filter(id__in=sent).values_list("id", flat=True))
    for answer, ids in ((PetitionRequest.Answer.CREDITED, credited),
                        (PetitionRequest.Answer.REFUSED, set(sent) - credited)):
        if ids:
            PetitionRequest.objects.filter(message_id__in=ids).update(ledger_answer=answer)


# --- the Fed: Petition-* messages and grant replies ---------------------------------------------------------


def _apply_fed(result: ao_models.Result, assignment: ao_models.Assignment | None) -> None:
    """Apply what one Fed message did, as its outbox says; a failed message did nothing."""
    if result.error:
        return
    item = _input_item(assignment)
    source = _input_tags(item)
    at = _timestamp(assignment)
    done = result.evaluated_at  # the step's end, on this node's clock (display only)
    messages = _messages(result)
    for message, tags in messages:
        action = tags.get("Action")
        petition_id = tags.get("Petition-Id", "")
        if not petition_id:
            continue
        if action == "Petition-Received":
            _received(petition_id, message, source, at, done)
        elif action == "Petition-Refunded":
            _refunded(petition_id, message, tags, source, at, done)
        elif action == "Petition-Failed":
            _failed(petition_id, message, tags, at, done)
        elif action == "Petition-Vote":
            _voted(petition_id, message, tags, source, at, done)
        elif action == "Petition-Decision":
            _decided(petition_id, message, tags, at, result.nonce, done)
    refused = any(t.get("Action") == "Fed-Error" for _, t in messages)
    if source.get("Action") in ("Grant-Confirmation", "Grant-Error") and not refused:
        _grant_reply(source, at)


def _petition(petition_id: str, petitioner: str) -> Petition:
    petition, _ = Petition.objects.get_or_create(
        id=petition_id, defaults={"petitioner": petitioner, "status": Petition.Status.SUBMITTED}
    )
    return petition


def _take_intake(petition: Petition, message: dict[str, Any], source: dict[str, str]) -> None:
    """The petition's fields from the Credit-Notice the Fed took it from."""
    petition.petitioner = message.get("Target") or petition.petitioner
    if "X-Petition" in source or "X-Sender-Name" in source:
        petition.text = _cut(source.get("X-Petition"), MAX_PETITION_CHARS)
        petition.sender_name = _cut(source.get("X-Sender-Name"), MAX_NAME_CHARS)
    petition.offering = _amount(source.get("Quantity")) or petition.offering


def _received(petition_id: str, message: dict[str, Any], source: dict[str, str], at: Any, done: Any) -> None:
    petition = _petition(petition_id, message.get("Target", ""))
    _take_intake(petition, message, source)
    _advance(petition, Petition.Status.RECEIVED)
    petition.received_at = at
    petition.finished_at = done
    petition.save()


def _refunded(petition_id: str, message: dict[str, Any], tags: dict[str, str], source: dict[str, str],
              at: Any, done: Any) -> None:
    reason = tags.get("Reason") or str(message.get("Data") or "")
    if reason == DUPLICATE_REASON and Petition.objects.filter(id=petition_id).exclude(
        status=Petition.Status.SUBMITTED
    ).exists():
        return  # the Fed keeps the petition that holds the id
    petition = _petition(petition_id, message.get("Target", ""))
    _take_intake(petition, message, source)
    petition.status = Petition.Status.REFUNDED
    petition.refund_reason = reason[:MAX_REASON_CHARS]
    petition.refunded_at = at
    petition.finished_at = done
    petition.save()


def _failed(petition_id: str, message: dict[str, Any], tags: dict[str, str], at: Any, done: Any) -> None:
    """The deliberation could not give a grade (a reply outside the grammar, the model failing): refunded."""
    petition = _petition(petition_id, message.get("Target", ""))
    try:
        detail = json.loads(message.get("Data") or "{}")
    except ValueError:
        detail = {}
    votes = detail.get("votes") if isinstance(detail, dict) else None
    for index, vote in enumerate(votes if isinstance(votes, list) else []):
        if isinstance(vote, dict):
            _store_vote(petition, index, vote, str(vote.get("governor", "")), vote.get("grade"), at, done)
    petition.status = Petition.Status.FAILED
    petition.refund_reason = (tags.get("Reason") or "the deliberation failed")[:MAX_REASON_CHARS]
    petition.refunded_at = at
    petition.finished_at = done
    petition.save()


def _voted(petition_id: str, message: dict[str, Any], tags: dict[str, str], source: dict[str, str],
           at: Any, done: Any) -> None:
    petition = _petition(petition_id, message.get("Target", ""))
    try:
        vote = json.loads(message.get("Data") or "{}")
    except ValueError:
        vote = {}
    if not isinstance(vote, dict):
        vote = {}
    raw_index = source.get("Governor", "")
    index = int(raw_index) if raw_index.isdigit() else Vote.objects.filter(petition=petition).count()
    grade = tags.get("Grade", "")
    _store_vote(petition, index, vote, tags.get("Governor") or str(vote.get("governor", "")),
                int(grade) if grade.isdigit() else vote.get("grade"), at, done)
    _advance(petition, Petition.Status.DELIBERATING)
    petition.finished_at = done
    petition.save(update_fields=["status", "finished_at"])


def _store_vote(petition: Petition, index: int, vote: dict[str, Any], governor: str, grade: Any, at: Any,
                done: Any) -> None:
    """Upsert one governor's vote (grade None: the reply did not follow the grammar)."""
    Vote.objects.update_or_create(
        petition=petition,
        governor_index=index,
        defaults={
            "governor": governor[:MAX_GOVERNOR_CHARS],
            "grade": grade if type(grade) is int and 0 <= grade <= 5 else None,
            # A sentinel's and the steering filter's (order "rule") votes are vetoes or not; graders' are neither.
            "veto": bool(vote.get("veto")) if vote.get("order") in (SENTINEL, "rule") else None,
            "reason": str(vote.get("reason") or ""),
            "valid": bool(vote.get("valid", True)),
            "raw_output": str(vote.get("raw") or ""),
            "detail": vote,
            "voted_at": at,
            "finished_at": done,
        },
    )


def _decided(petition_id: str, message: dict[str, Any], tags: dict[str, str], at: Any, nonce: int,
             done: Any) -> None:
    recipient = message.get("Target", "")
    petition = _petition(petition_id, recipient)
    try:
        decision = json.loads(message.get("Data") or "null")
    except ValueError:
        decision = None
    grade = tags.get("Grade", "")
    amount = _amount(tags.get("Amount")) or Decimal(0)
    petition.status = Petition.Status.DECIDED
    petition.grade = int(grade) if grade.isdigit() else None
    petition.amount = amount
    petition.decision = decision if isinstance(decision, dict) else None
    petition.decided_at = at
    petition.finished_at = done
    petition.save()
    if amount > 0:
        Grant.objects.get_or_create(
            petition=petition,
            defaults={"recipient": recipient, "amount": amount, "decided_at": at, "decided_nonce": nonce},
        )


def _grant_reply(source: dict[str, str], at: Any) -> None:
    """LLAMA's answer to a Grant; without X-Petition-Id it is the oldest pending grant's, as the Fed matches it."""
    petition_id = source.get("X-Petition-Id")
    pending = Grant.objects.filter(status=Grant.Status.PENDING)
    grant = (pending.filter(petition_id=petition_id) if petition_id else pending.order_by("decided_nonce")).first()
    if grant is None:
        log.info("grant reply for %r matches no pending grant", petition_id)
        return
    if source.get("Action") == "Grant-Confirmation":
        grant.status = Grant.Status.GRANTED
    else:
        grant.status = Grant.Status.FAILED
        grant.error = (source.get("Error") or "refused by the LLAMA ledger")[:MAX_ERROR_CHARS]
        # The Fed refunds the offering it held for a grant the ledger refused.
        Petition.objects.filter(pk=grant.petition_id).update(
            refund_reason=f"the LLAMA ledger refused the grant: {grant.error}"[:MAX_REASON_CHARS], refunded_at=at)
    grant.confirmed_at = at
    grant.save(update_fields=["status", "error", "confirmed_at"])
