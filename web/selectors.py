"""Reads of the site: the Fed and ledgers on this node, balances from ledger state, read models, petition status."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from ao import models as ao_models
from ao.compute import health
from web.formatting import format_amount
from web.models import (
    OPEN_STATUSES,
    CustodialWallet,
    FaucetDrip,
    Grant,
    LinkedAddress,
    Petition,
    PetitionRequest,
    Vote,
)

WAR, LLAMA = "wAR", "LLAMA"
TICKERS = (WAR, LLAMA)
# The Fed's defaults (policy/PROTOCOL.md), used until its spawn has been evaluated.
DEFAULT_OFFERING = 25_000_000_000
DEFAULT_DENOMINATION = 12
GRANTS_PER_PAGE = 20
# A petition sent this long ago without a final word no longer blocks its account from sending another.
PENDING_TIMEOUT = dt.timedelta(minutes=30)
TRANSFER_ERROR = "Transfer-Error"


def fed_process_id() -> str | None:
    """The Fed's process id on this node, or None when it is not spawned (or the policy app is absent)."""
    if not apps.is_installed("policy"):
        return None
    from policy.models import Fed  # imported late: the policy app is optional for the site
    fed = Fed.objects.order_by("id").only("process_id").first()
    return fed.process_id if fed is not None else None


def fed_health() -> health.ProcessHealth | None:
    """How the compute unit stands with the Fed (stalled, retrying, evaluating...), or None without a Fed."""
    fed = fed_process_id()
    return health.process_health(fed) if fed else None


def token_process_id(ticker: str) -> str | None:
    """The process id of a token ledger (wAR, LLAMA) on this node, or None."""
    from ledger.models import Token

    token = Token.objects.filter(ticker=ticker).only("process_id").first()
    return token.process_id if token is not None else None


def state_value(process_id: str, key: str, default: Any = None) -> Any:
    """One key of a process's evaluated state, decoded (values are stored as JSON)."""
    value = ao_models.StateEntry.objects.filter(process_id=process_id, key=key).values_list("value", flat=True).first()
    return default if value is None else json.loads(value)


_FED_CONFIGS: dict[str, dict[str, Any]] = {}  # by the Fed's process id: written by its spawn, never again


def _fed_config(process_id: str) -> dict[str, Any]:
    """The Fed's `config` (its parameters, fixed at its spawn: the Fed has no reconfiguration), read once."""
    config = _FED_CONFIGS.get(process_id)
    if config is None:
        config = state_value(process_id, "config") or {}
        if config and len(_FED_CONFIGS) < 64:
            _FED_CONFIGS[process_id] = config
    return config


@dataclass(frozen=True)
class FedParams:
    """The Fed parameters the site shows and checks before sending (the Fed decides; these only inform)."""

    process_id: str
    war: str | None
    offering: int
    governors: tuple[str, ...]
    cooldown_ms: int | None
    denomination: int
    schedule: tuple[int, ...]


def fed_params(process_id: str | None = None) -> FedParams | None:
    """The running Fed's parameters from its state (`config`), with the protocol's defaults before it is evaluated."""
    process_id = process_id or fed_process_id()
    if process_id is None:
        return None
    config = _fed_config(process_id)
    return FedParams(
        process_id=process_id,
        war=config.get("War-Token") or token_process_id(WAR),
        offering=int(config.get("Offering", DEFAULT_OFFERING)),
        governors=tuple(g["name"] for g in config.get("Governors", [])),
        cooldown_ms=config.get("Cooldown-Ms"),
        denomination=int(config.get("Denomination", DEFAULT_DENOMINATION)),
        schedule=tuple(config.get("Schedule", ())),
    )


_UNREAD = object()


def cooldown_ends(params: FedParams, address: str, *, last: Any = _UNREAD) -> dt.datetime | None:
    """When the Fed will next accept a petition from this address, if it would refund one now. `last`: the Fed's
    `last/<address>` if already read (``petitioner_state``; None when it has none)."""
    if last is _UNREAD:
        last = state_value(params.process_id, f"last/{address}")
    if last is None or params.cooldown_ms is None:
        return None
    ends = ms_to_datetime(int(last) + params.cooldown_ms)
    return ends if ends > timezone.now() else None


@dataclass(frozen=True)
class PetitionerState:
    """What a petition's checks read of the ledgers' state about its sender, in one query."""

    balance: int  # wAR, base units
    last: Any  # the Fed's `last/<address>`: when it last took a petition from the address (None: never)


def petitioner_state(params: FedParams, address: str) -> PetitionerState:
    """The sender's wAR balance and the Fed's record of its last petition (one statement for both)."""
    balance_key, last_key = f"balance/{address}", f"last/{address}"
    rows = ao_models.StateEntry.objects.filter(
        Q(process_id=params.war or "", key=balance_key) | Q(process_id=params.process_id, key=last_key)
    ).values_list("process_id", "key", "value")
    found = {(process, key): json.loads(value) for process, key, value in rows}
    return PetitionerState(balance=int(found.get((params.war or "", balance_key), "0")),
                           last=found.get((params.process_id, last_key)))


def ms_to_datetime(ms: int) -> dt.datetime:
    """A message timestamp (ms since the epoch) as an aware datetime."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def balance(process_id: str | None, address: str) -> int:
    """An address's balance in a token ledger's evaluated state, base units (0 when unknown)."""
    if process_id is None:
        return 0
    return int(state_value(process_id, f"balance/{address}", "0"))


def balances(address: str) -> dict[str, int]:
    """wAR and LLAMA balances of an address."""
    return {ticker: balance(token_process_id(ticker), address) for ticker in TICKERS}


@dataclass(frozen=True)
class Supply:
    """LLAMA's supply as its ledger reports it and as the Fed granted it."""

    supply: int
    max_supply: int | None
    granted: int
    grants: int


def llama_supply() -> Supply:
    """LLAMA's total supply (ledger state `supply`), cap, and what the Fed's decisions granted."""
    from ledger.models import Token

    token = Token.objects.filter(ticker=LLAMA).first()
    supply = int(state_value(token.process_id, "supply", "0")) if token else 0
    live = Grant.objects.exclude(status=Grant.Status.FAILED)
    total = live.aggregate(total=Sum("amount"))["total"] or Decimal(0)
    return Supply(
        supply=supply,
        max_supply=int(token.max_supply) if token and token.max_supply is not None else None,
        granted=int(total),
        grants=live.count(),
    )


def wallet_of(user: AbstractBaseUser) -> CustodialWallet | None:
    """The account's custodial wallet."""
    return CustodialWallet.objects.filter(user=user).first()


def addresses_of(user: AbstractBaseUser) -> list[str]:
    """The account's custodial address first, then the addresses it linked."""
    wallet = wallet_of(user)
    linked = list(LinkedAddress.objects.filter(user=user).order_by("created_at").values_list("address", flat=True))
    return ([wallet.address] if wallet else []) + linked


def linked_user(address: str) -> AbstractBaseUser | None:
    """The account that proved control of an address, if any."""
    link = LinkedAddress.objects.select_related("user").filter(address=address).first()
    return link.user if link else None


def faucet_drips_left(user: AbstractBaseUser) -> int:
    """How many faucet drips the account may still take in the current window."""
    since = timezone.now() - dt.timedelta(seconds=settings.FAUCET_WINDOW)
    used = FaucetDrip.objects.filter(user=user, created_at__gte=since).count()
    return max(settings.FAUCET_PER_ACCOUNT - used, 0)


def faucet_refill_at(user: AbstractBaseUser) -> dt.datetime | None:
    """When the account gets its next faucet drip back (its oldest drip in the window leaves it); None: none used."""
    since = timezone.now() - dt.timedelta(seconds=settings.FAUCET_WINDOW)
    oldest = FaucetDrip.objects.filter(user=user, created_at__gte=since).order_by("created_at").first()
    return None if oldest is None else oldest.created_at + dt.timedelta(seconds=settings.FAUCET_WINDOW)


def faucet_pending(user: AbstractBaseUser) -> bool:
    """A recent drip's Mint is not evaluated yet: the balance shown is about to change."""
    recent = list(FaucetDrip.objects.filter(user=user, created_at__gte=timezone.now() - PENDING_TIMEOUT)
                  .values_list("message_id", flat=True))
    war = token_process_id(WAR)
    if not recent or war is None:
        return False
    done = ao_models.Result.objects.filter(process_id=war, message_id__in=recent).count()
    return done < len(recent)


def requests_of(user: AbstractBaseUser, limit: int = 20) -> list[PetitionRequest]:
    """The account's latest petitions sent through the site."""
    return list(PetitionRequest.objects.filter(user=user).order_by("-created_at")[:limit])


def transfer_errors(war: str | None, message_ids: Sequence[str]) -> dict[str, str]:
    """Petition transfers the wAR ledger refused (insufficient balance...), by message id."""
    if war is None or not message_ids:
        return {}
    found: dict[str, str] = {}
    for result in ao_models.Result.objects.filter(process_id=war, message_id__in=list(message_ids)).only(
        "message_id", "body", "error"
    ):
        if result.error:
            found[result.message_id] = result.error
            continue
        for message in result.body.get("Messages", []):
            tags = tags_of(message)
            if tags.get("Action") == TRANSFER_ERROR:
                found[result.message_id] = tags.get("Error", "the transfer was refused")
    return found


def recent_requests(*, since: dt.timedelta, user: AbstractBaseUser | None = None,
                    petitioner: str | None = None) -> QuerySet[PetitionRequest]:
    """Petitions an account (or, without one, an address) sent through this site within `since`."""
    recent = PetitionRequest.objects.filter(created_at__gte=timezone.now() - since)
    return recent.filter(user=user) if user is not None else recent.filter(petitioner=petitioner)


def open_requests(requests: Sequence[PetitionRequest]) -> list[PetitionRequest]:
    """Those of the requests sent within PENDING_TIMEOUT that have no final word yet: not answered by the wAR
    ledger, or credited to the Fed and not decided, refunded or failed there (a refused transfer is final)."""
    since = timezone.now() - PENDING_TIMEOUT
    requests = [r for r in requests if r.created_at >= since and r.ledger_answer != PetitionRequest.Answer.REFUSED]
    credited = [r.message_id for r in requests if r.ledger_answer == PetitionRequest.Answer.CREDITED]
    final = set(Petition.objects.filter(id__in=credited, status__in=FINAL_STATUSES).values_list("id", flat=True)
                ) if credited else set()
    return [r for r in requests if r.message_id not in final]


FINAL_STATUSES = (Petition.Status.DECIDED, Petition.Status.REFUNDED, Petition.Status.FAILED)
# Seconds per decision assumed until the Fed has decided a few (a warm decision with the default model takes
# ~15-20 s on these machines; a first one loads the model).
DEFAULT_DECISION_S = 30.0
DECISIONS_SAMPLED = 20


@dataclass(frozen=True)
class FedQueue:
    """The Fed's backlog: petitions sent or received without a final word, and how long one takes to decide."""

    waiting: int
    seconds_per_decision: float
    measured: bool  # from the Fed's recent decisions (False: DEFAULT_DECISION_S)

    @property
    def expected_wait_s(self) -> float:
        """How long a petition sent now would wait for its decision: the backlog's, then its own."""
        return (self.waiting + 1) * self.seconds_per_decision


def fed_queue() -> FedQueue:
    """The backlog (petitions in the log not final yet, and those this site sent that the wAR ledger has not
    answered yet) and the Fed's time per decision: the median over its recent decisions of the time this node
    recorded the decision minus the later of the petition's arrival and the decision before it (the time the Fed
    spent on it, not the time it queued)."""
    # One statement over two partial indexes (the open petitions, the unanswered requests), so a petition's intake
    # check reads only the backlog itself, never the ledger's results or the decided petitions. Plain SQL: this
    # runs on every petition submission, where building the ORM's queries cost more than running them.
    petition, request = Petition._meta.db_table, PetitionRequest._meta.db_table
    open_marks = ", ".join(["%s"] * len(OPEN_STATUSES))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT COUNT(*) FROM {petition} WHERE status IN ({open_marks})), "
            f"(SELECT COUNT(*) FROM {request} WHERE ledger_answer = %s AND created_at >= %s)",
            [*OPEN_STATUSES, PetitionRequest.Answer.WAITING, timezone.now() - PENDING_TIMEOUT])
        open_in_log, unanswered = cursor.fetchone()
    return FedQueue(waiting=open_in_log + unanswered, **_decision_time())


def _decision_time() -> dict[str, Any]:
    decided = list(Petition.objects.filter(status__in=(Petition.Status.DECIDED, Petition.Status.FAILED),
                                           finished_at__isnull=False).exclude(received_at=None)
                   .order_by("-finished_at").values_list("received_at", "finished_at")[:DECISIONS_SAMPLED + 1])
    decided.reverse()
    spans = []
    for previous, (received, done) in zip([None, *[d for _, d in decided]], decided):
        start = max(received, previous) if previous is not None else received
        spans.append(max((done - start).total_seconds(), 0.0))
    spans = spans[1:] if len(spans) > DECISIONS_SAMPLED else spans
    if not spans:
        return {"seconds_per_decision": DEFAULT_DECISION_S, "measured": False}
    spans.sort()
    return {"seconds_per_decision": max(spans[len(spans) // 2], 1.0), "measured": True}


def petition_estimate_s(status: PetitionStatus, queue: FedQueue | None = None) -> float | None:
    """Seconds until the petition's decision, from the Fed's recent decision time: the petitions ahead of it (in
    the log before it and not final), then what is left of its own deliberation. None once it is final."""
    p = status.petition
    if status.is_final or (p is not None and p.status in FINAL_STATUSES):
        return None
    queue = queue or fed_queue()
    per = queue.seconds_per_decision
    if p is None or p.received_at is None:
        ahead = Petition.objects.exclude(status__in=FINAL_STATUSES).exclude(id=status.id).count()
        return (ahead + 1) * per
    ahead = (Petition.objects.exclude(status__in=FINAL_STATUSES).exclude(id=p.id)
             .filter(received_at__lt=p.received_at).count())
    governors = max(status.governor_count, 1)
    own = per * (governors - len(status.votes)) / governors
    began = max([v.finished_at for v in status.votes if v.finished_at] + [p.finished_at or p.received_at])
    if not ahead:
        own -= (timezone.now() - began).total_seconds()
    return max(ahead * per + own, 5.0)


@dataclass(frozen=True)
class Outlook:
    """What a petitioner should know before writing: the rule, the offering, when they may send, the wait."""

    offering: int
    cooldown_s: float | None  # one petition per address per this many seconds (None: no cooldown)
    next_at: dt.datetime | None  # when this address may petition again (None: now)
    pending: PetitionRequest | None  # a petition of theirs still being decided
    queue: FedQueue

    @property
    def wait_s(self) -> float | None:
        """Seconds until they may petition again (None: now)."""
        return None if self.next_at is None else max((self.next_at - timezone.now()).total_seconds(), 1.0)

    @property
    def estimate_s(self) -> float:
        """How long a petition sent now would take to be decided."""
        return self.queue.expected_wait_s


def petition_outlook(params: FedParams, *, user: AbstractBaseUser | None, address: str | None) -> Outlook:
    """The Fed's rule and queue, and this petitioner's own standing (cooldown, a petition still open)."""
    requests = requests_of(user) if user is not None else []
    pending = open_requests(requests)
    return Outlook(
        offering=params.offering,
        cooldown_s=None if params.cooldown_ms is None else params.cooldown_ms / 1000,
        next_at=cooldown_ends(params, address) if address else None,
        pending=pending[0] if pending else None,
        queue=fed_queue(),
    )


def tags_of(message: dict[str, Any]) -> dict[str, str]:
    """An AO result message's tags as a dict (first value of each name)."""
    tags: dict[str, str] = {}
    for tag in message.get("Tags") or []:
        if isinstance(tag, dict) and isinstance(tag.get("name"), str):
            tags.setdefault(tag["name"], str(tag.get("value", "")))
    return tags


# --- petition status ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One line of a petition's timeline; state is done, current, waiting or failed."""

    key: str
    label: str
    state: str
    detail: str = ""
    at: dt.datetime | None = None
    grade: int | None = None
    verdict: str = ""  # a sentinel's, in plain words: whether the petition tries to steer the grade

    @property
    def time_label(self) -> str:
        """How to read `at`: a finished step's end, a running step's start."""
        return "since" if self.state == "current" else "at"


@dataclass
class PetitionStatus:
    """Everything known about one petition: the site's request, the projected petition, its votes and grant."""

    id: str
    request: PetitionRequest | None
    petition: Petition | None
    votes: list[Vote]
    grant: Grant | None
    governors: tuple[str, ...]
    transfer_error: str | None
    denomination: int = DEFAULT_DENOMINATION
    steps: list[Step] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The petition's text."""
        if self.petition is not None and self.petition.text:
            return self.petition.text
        return self.request.text if self.request else ""

    @property
    def sender_name(self) -> str:
        """The petitioner's chosen name."""
        if self.petition is not None and self.petition.sender_name:
            return self.petition.sender_name
        return self.request.sender_name if self.request else ""

    @property
    def petitioner(self) -> str:
        """The petitioner's address."""
        return self.petition.petitioner if self.petition else self.request.petitioner if self.request else ""

    @property
    def status(self) -> str:
        """sent (only the site knows), transfer-refused (the wAR ledger refused the transfer), or the projected petition's status."""
        if self.transfer_error:
            return "transfer-refused"
        return self.petition.status if self.petition else "sent"

    @property
    def governor_count(self) -> int:
        """N in "governor k of N" (the votes so far when the Fed's config is not known)."""
        return max(len(self.governors), len(self.votes))

    @property
    def is_final(self) -> bool:
        """Nothing more will happen: refunded, failed, or decided with the grant settled."""
        if self.transfer_error or (
            self.petition and self.petition.status in (Petition.Status.REFUNDED, Petition.Status.FAILED)
        ):
            return True
        if self.petition and self.petition.status == Petition.Status.DECIDED:
            return self.grant is None or self.grant.status != Grant.Status.PENDING
        return False


def petition_status(petition_id: str) -> PetitionStatus | None:
    """A petition's status with its timeline, or None when neither the site nor the log knows it."""
    request = PetitionRequest.objects.filter(message_id=petition_id).first()
    petition = Petition.objects.filter(id=petition_id).first()
    if request is None and petition is None:
        return None
    votes = list(Vote.objects.filter(petition_id=petition_id).order_by("governor_index")) if petition else []
    grant = Grant.objects.filter(petition_id=petition_id).first() if petition else None
    params = fed_params()
    error = None
    if petition is None:
        error = transfer_errors(token_process_id(WAR), [petition_id]).get(petition_id)
    status = PetitionStatus(
        id=petition_id, request=request, petition=petition, votes=votes, grant=grant,
        governors=params.governors if params else (), transfer_error=error,
        denomination=params.denomination if params else DEFAULT_DENOMINATION,
    )
    status.steps = _timeline(status)
    return status


def _timeline(s: PetitionStatus) -> list[Step]:
    """The steps a petition goes through, each done, current, waiting or failed."""
    p, Status = s.petition, Petition.Status
    steps = []
    sent_at = s.request.created_at if s.request else (p.submitted_at if p else None)
    if s.transfer_error:
        steps.append(Step("submitted", "Submitted", "failed", f"The wAR transfer was refused: {s.transfer_error}",
                          sent_at))
        return steps
    if p is None:
        steps.append(Step("submitted", "Submitted", "current",
                          "Sent; your offering in wAR is on its way to the Fed.", sent_at))
    else:
        steps.append(Step("submitted", "Submitted", "done", "The offering was transferred to the Fed.",
                          p.submitted_at or sent_at))
    if p is None or p.status == Status.SUBMITTED:
        steps.append(Step("received", "Received", "waiting" if p is None else "current",
                          "Waiting for the Fed to read the transfer."))
        return steps
    if p.status == Status.REFUNDED:
        steps.append(Step("refunded", "Refunded", "failed", f"The Fed refunded the offering: {p.refund_reason}.",
                          p.finished_at or p.refunded_at))
        return steps
    steps.append(Step("received", "Received", "done", "Accepted; the Fed holds the offering while the governors read.",
                      p.received_at))
    voted = {v.governor_index: v for v in s.votes}
    began = p.finished_at or p.received_at
    total = s.governor_count
    for k in range(max(total, 1)):
        vote = voted.get(k)
        name = s.governors[k] if k < len(s.governors) else (vote.governor if vote else "")
        label = f"Governor {k + 1}" + (f" of {total}" if total else "") + (f" ({name})" if name else "")
        if vote is not None:
            verdict = "" if vote.veto is None else (
                "tries to steer the grade: vetoed" if vote.veto else "checked: no attempt to steer the grade")
            ended = vote.finished_at or vote.voted_at
            steps.append(Step(f"vote-{k}", label, "done" if vote.valid else "failed", vote.reason, ended,
                              grade=vote.grade, verdict=verdict))
            began = max(filter(None, (began, ended)), default=None)
        elif p.status in (Status.DECIDED, Status.FAILED):
            continue
        elif k == len(voted):
            steps.append(Step(f"vote-{k}", label, "current", "Reading and grading your petition…", began))
        else:
            steps.append(Step(f"vote-{k}", label, "waiting", "Waiting for the governors before."))
    if p.status == Status.FAILED:
        steps.append(Step("decision", "Failed", "failed",
                          f"No grade could be given ({p.refund_reason}); the offering was refunded in full.",
                          p.finished_at or p.refunded_at))
        return steps
    if p.status != Status.DECIDED:
        steps.append(Step("decision", "Decision", "waiting", "After the last governor."))
        return steps
    amount = int(p.amount or 0)
    if amount > 0:
        detail = f"Granted {format_amount(amount, s.denomination)} LLAMA (grade {p.grade})."
        if s.grant is not None and s.grant.status == Grant.Status.PENDING:
            detail += " The LLAMA token is minting it."
        elif s.grant is not None and s.grant.status == Grant.Status.GRANTED:
            detail += " Minted; the offering was burned."
        elif s.grant is not None and s.grant.status == Grant.Status.FAILED:
            detail += f" The LLAMA token refused the grant ({s.grant.error}); the offering was refunded."
        state = "failed" if s.grant is not None and s.grant.status == Grant.Status.FAILED else "done"
        steps.append(Step("decision", "Granted", state, detail, p.finished_at or p.decided_at, grade=p.grade))
    else:
        vetoed = ", ".join((p.decision or {}).get("vetoed_by") or [])
        why = f"vetoed by {vetoed}" if vetoed else f"grade {p.grade}"
        steps.append(Step("decision", "Denied", "done",
                          f"{why[0].upper()}{why[1:]}: no LLAMA for this petition; the offering was burned.",
                          p.finished_at or p.decided_at, grade=p.grade))
    return steps


# --- public lists -------------------------------------------------------------------------------------------


def grants_page(page: int | str | None) -> Page:
    """Grants, newest decision first, one page."""
    grants: QuerySet[Grant] = Grant.objects.select_related("petition").order_by("-decided_at", "petition_id")
    return Paginator(grants, GRANTS_PER_PAGE).get_page(page)


AUDIT_PER_PAGE = 25
AUDIT_OUTCOMES = {
    "granted": "granted", "denied": "denied (grade 0 or vetoed)", "refunded": "refunded", "failed": "failed",
    "open": "not decided yet",
}


def audit_page(*, outcome: str = "", query: str = "", page: int | str | None = None) -> Page:
    """Staff's list of the Fed's petitions, newest first: by outcome, and by id, address, name or words."""
    qs = Petition.objects.select_related("grant").order_by("-received_at", "-submitted_at", "id")
    if outcome == "granted":
        qs = qs.filter(status=Petition.Status.DECIDED, amount__gt=0)
    elif outcome == "denied":
        qs = qs.filter(status=Petition.Status.DECIDED).exclude(amount__gt=0)
    elif outcome in ("refunded", "failed"):
        qs = qs.filter(status=outcome)
    elif outcome == "open":
        qs = qs.exclude(status__in=FINAL_STATUSES)
    query = query.strip()
    if query:
        qs = qs.filter(Q(id=query) | Q(petitioner=query) | Q(sender_name__icontains=query) | Q(text__icontains=query))
    return Paginator(qs, AUDIT_PER_PAGE).get_page(page)


def petitions(*, petitioner: str | None = None) -> QuerySet[Petition]:
    """Projected petitions, newest first (optionally one petitioner's)."""
    qs = Petition.objects.select_related("grant").order_by("-submitted_at", "-received_at", "id")
    return qs.filter(petitioner=petitioner) if petitioner else qs


def latest_grants(limit: int = 5) -> list[Grant]:
    """The newest grants."""
    return list(Grant.objects.select_related("petition").order_by("-decided_at", "petition_id")[:limit])


def grant_series() -> list[tuple[dt.datetime, int]]:
    """(decision time, LLAMA amount) of every grant not refused by the ledger, oldest first."""
    rows = (
        Grant.objects.exclude(status=Grant.Status.FAILED)
        .exclude(decided_at=None)
        .order_by("decided_at", "petition_id")
        .values_list("decided_at", "amount")
    )
    return [(at, int(amount)) for at, amount in rows]
