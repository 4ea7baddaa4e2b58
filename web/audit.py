"""Audit for staff: a petition's full trace through the Fed's log, and replay-verify on demand."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from django.db import transaction
from django.utils import timezone

import policy

from ao import dispatch
from ao import models as ao_models
from ao.permaweb import dataitem
from web import selectors
from web.models import VerifyRun

VERIFY_TASK = "web.verify_run"
MAX_TRACE_SCAN = 20_000  # results scanned per trace; the Fed's log is read newest first


@dataclass(frozen=True)
class Sent:
    """One message a Fed message sent: to whom (named when known), its action, all its tags as JSON."""

    target: str
    target_name: str
    action: str
    tags_json: str


@dataclass(frozen=True)
class Call:
    """One governor's model call, as recorded in the result, with the shared prompt made readable again."""

    record: dict[str, Any]
    prefix_text: str | None  # the system prompt and worked examples, rebuilt from the Fed's source and config
    petition_text: str  # the petition turn, as the model read it (scaffold included)
    params_json: str


@dataclass(frozen=True)
class TraceRow:
    """One message of the Fed that touched a petition, with what its evaluation produced."""

    nonce: int
    message_id: str
    action: str
    sender: str
    sender_name: str
    timestamp: int
    gas_used: int
    state_hash: str
    error: str
    sent: list[Sent] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    @property
    def at(self) -> Any:
        """The message's timestamp (the scheduler's, part of the log) as a datetime."""
        return selectors.ms_to_datetime(self.timestamp)

    @property
    def iso(self) -> str:
        """The timestamp in ISO 8601, to the millisecond, UTC."""
        return self.at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _tags(tag_list: list[dict[str, str]]) -> dict[str, str]:
    return {t["name"]: t["value"] for t in tag_list}


def process_names(*, fed_process_id: str, petitioner: str = "", sender_name: str = "") -> dict[str, str]:
    """Names people know for the ids of a trace: the two ledgers, the Fed, the petitioner."""
    names = {fed_process_id: "the Fed"}
    for ticker in (selectors.WAR, selectors.LLAMA):
        process = selectors.token_process_id(ticker)
        if process:
            names[process] = f"the {ticker} ledger"
    if petitioner:
        names[petitioner] = f"the petitioner ({sender_name})" if sender_name else "the petitioner"
    return names


@functools.cache
def _prompts() -> ModuleType:
    """The Fed's prompt source (policy/process/prompts.py, the module the Fed is built from), loaded on its own."""
    path = Path(policy.__file__).resolve().parent / "process" / "prompts.py"
    spec = importlib.util.spec_from_file_location("llamafed_fed_prompts", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def governor_prefixes(config: dict[str, Any]) -> dict[str, str]:
    """The shared prompt of each governor in the Fed's config, by the sha256 its calls record. A recorded hash
    not found here means this node's Fed source is not the one that ran: the audit then shows only the hash."""
    prompts, found = _prompts(), {}
    for governor in config.get("Governors") or []:
        try:
            text = prompts.prefix_text(governor["order"], governor["examples"])
        except (KeyError, TypeError):
            continue
        found[hashlib.sha256(text.encode()).hexdigest()] = text
    return found


def _call(record: dict[str, Any], prefixes: dict[str, str]) -> Call:
    request = record.get("request") or {}
    prefix_sha = (request.get("prefix") or {}).get("sha256", "")
    return Call(record=record, prefix_text=prefixes.get(prefix_sha),
                petition_text="".join(str(p.get("text", "")) for p in request.get("parts") or []),
                params_json=json.dumps(record.get("params") or {}, indent=2, sort_keys=True))


def petition_trace(*, fed_process_id: str, petition_id: str, names: dict[str, str] | None = None,
                   config: dict[str, Any] | None = None) -> list[TraceRow]:
    """Every Fed message whose input or output names the petition, in nonce order."""
    names = names or {}
    prefixes = governor_prefixes(config or {})
    rows = []
    results = (
        ao_models.Result.objects.filter(process_id=fed_process_id).order_by("-nonce")[:MAX_TRACE_SCAN]
    )
    by_nonce = {r.nonce: r for r in results}
    assignments = ao_models.Assignment.objects.filter(
        process_id=fed_process_id, nonce__in=list(by_nonce)
    ).select_related("message")
    for assignment in sorted(assignments, key=lambda a: a.nonce):
        result = by_nonce[assignment.nonce]
        item = dataitem.parse(bytes(assignment.message.raw))
        tags = dict(item.tags)
        out = [(m.get("Target", ""), _tags(m.get("Tags", []))) for m in result.body.get("Messages", [])]
        mentions = petition_id in (tags.get("Petition-Id"), tags.get("Pushed-For"), tags.get("X-Petition-Id")) or any(
            petition_id in (t.get("Petition-Id"), t.get("X-Petition-Id"), t.get("X-Refund-For")) for _, t in out
        )
        if not mentions:
            continue
        sender = tags.get("From-Process") or item.owner_address
        rows.append(
            TraceRow(
                nonce=assignment.nonce, message_id=item.id, action=tags.get("Action", tags.get("Type", "")),
                sender=sender, sender_name=names.get(sender, ""), timestamp=assignment.timestamp,
                gas_used=result.gas_used, state_hash=result.state_hash, error=result.error,
                sent=[Sent(target=t, target_name=names.get(t, ""), action=m.get("Action", ""),
                           tags_json=json.dumps(m, indent=2, ensure_ascii=False)) for t, m in out],
                calls=[_call(c, prefixes) for c in result.body.get("Calls", []) if isinstance(c, dict)],
            )
        )
    return rows


def verify_request(*, user: Any, process_id: str) -> VerifyRun:
    """Record a staff member's request to replay a process, and queue it after the commit."""
    with transaction.atomic():
        run = VerifyRun.objects.create(process_id=process_id, requested_by=user)
        dispatch.enqueue(VERIFY_TASK, run.id)
    return run


def verify_run(*, run_id: int) -> VerifyRun:
    """Replay the process of a queued (or interrupted) run and record the outcome, with progress as it goes; a
    finished run is left as it is."""
    from ao import verify
    from ao.errors import AoError

    run = VerifyRun.objects.get(id=run_id)
    evaluated = ao_models.Evaluation.objects.filter(process_id=run.process_id).values_list("next_nonce", flat=True)
    # A run left "replaying" by a killed worker is taken again when its task is delivered again; a replay only reads,
    # so two deliveries running at once would write the same outcome.
    claimed = VerifyRun.objects.filter(
        id=run_id, status__in=(VerifyRun.Status.QUEUED, VerifyRun.Status.RUNNING)
    ).update(status=VerifyRun.Status.RUNNING, total=evaluated.first() or 0)
    run.refresh_from_db()
    if not claimed:
        return run

    def progress(checked: int, total: int) -> None:  # every 100 messages and at the end (ao.verify)
        VerifyRun.objects.filter(id=run_id).update(checked=checked, total=total)

    try:
        report = verify.verify_process(process_id=run.process_id, progress=progress)
    except AoError as exc:
        VerifyRun.objects.filter(id=run_id).update(status=VerifyRun.Status.FAILED, error=str(exc),
                                                   finished_at=timezone.now())
    else:
        d = report.divergence
        if report.fault:  # this node could not finish the replay: not a verdict on the record
            VerifyRun.objects.filter(id=run_id).update(status=VerifyRun.Status.FAILED, error=report.fault,
                                                       checked=report.checked, finished_at=timezone.now())
            run.refresh_from_db()
            return run
        VerifyRun.objects.filter(id=run_id).update(
            status=VerifyRun.Status.MATCH if d is None else VerifyRun.Status.DIVERGED,
            checked=report.checked,
            divergence=None if d is None else {"nonce": d.nonce, "what": d.what, "recorded": d.recorded,
                                               "replayed": d.replayed},
            finished_at=timezone.now(),
        )
    run.refresh_from_db()
    return run
