"""The Llama Fed: petitions paid in wAR, graded by a committee of LLM governors, granted LLAMA by schedule.

The protocol is policy/PROTOCOL.md. State keys: ``config``, ``petition/<id>``, ``last/<address>``,
``granted``, ``epoch/<n>``, ``pending-grants``. Amounts are decimal strings of base units.

The offering is held while the committee deliberates: it is burned when the petition is decided, and
refunded in full when the deliberation fails (a governor's reply outside the grammar, or the model
refusing or failing), so a failure is never silently a grant or a denial.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fedrules
import prompts
import steering
from aosdk import Context, ExtensionError, Process, ProcessError, canonical_json

PETITION = "petition/"
LAST = "last/"
EPOCH = "epoch/"
GRANTED = "granted"
PENDING_GRANTS = "pending-grants"
DELIBERATING, DECIDED, REFUNDED, FAILED = "deliberating", "decided", "refunded", "failed"
GRANT_NONE, GRANT_PENDING, GRANT_DONE, GRANT_FAILED = "none", "pending", "granted", "failed"
MAX_ERROR_CHARS = 300
FILTER_NAME = "Filter"  # the deterministic first line's name in a petition's votes

process = Process()


class Refused(Exception):
    """A message the Fed does not take: answered with Fed-Error (or only logged when the Fed sent it)."""


def _config(ctx: Context) -> dict[str, Any]:
    config = ctx.get("config")
    if config is None:
        raise ProcessError("the Fed is not initialised (its spawn message failed or was not evaluated)")
    return config


def _int(ctx: Context, key: str) -> int:
    return int(ctx.get(key, "0"))


def _refused(ctx: Context, error: str) -> None:
    """Tell the sender why; a message from the Fed itself is only logged (no reply loops)."""
    if ctx.msg.sender == ctx.process_id:
        ctx.print(f"ignored: {error}")
    else:
        ctx.reply({"Action": "Fed-Error", "Error": error}, error)


Handler = Callable[[Context], None]


def refusing(action: str) -> Callable[[Handler], Handler]:
    """Register a handler whose Refused errors become Fed-Error replies, changing nothing."""

    def register(fn: Handler) -> Handler:
        def run(ctx: Context) -> None:
            try:
                fn(ctx)
            except Refused as exc:
                ctx.writes.clear()
                ctx.messages.clear()
                _refused(ctx, str(exc))

        process.on(action)(run)
        return fn

    return register


@process.on_spawn
def spawn(ctx: Context) -> None:
    """Read and check the parameters; a bad spawn tag fails the spawn."""
    try:
        config = fedrules.parse_config(ctx.msg.tags, ctx.msg.owner)
    except fedrules.ConfigError as exc:
        raise ProcessError(str(exc)) from None
    ctx.put("config", config)
    ctx.put(GRANTED, "0")
    ctx.put(PENDING_GRANTS, [])
    ctx.print(f"Llama Fed ready: {len(config['Governors'])} governors, model {config['Model']}")


@refusing("Info")
def info(ctx: Context) -> None:
    """The Fed's parameters and what it has granted."""
    config = _config(ctx)
    granted = str(_int(ctx, GRANTED))
    ctx.reply({"Action": "Fed-Info", "Granted": granted, "Model": config["Model"]},
              canonical_json({"config": config, "granted": granted}))


@refusing("Credit-Notice")
def credit_notice(ctx: Context) -> None:
    """A wAR transfer to the Fed: a petition, accepted or refunded in full."""
    config = _config(ctx)
    if ctx.msg.sender != config["War-Token"]:
        raise Refused(f"only Credit-Notices from the wAR process {config['War-Token']} are petitions")
    sender = ctx.msg.tag("Sender") or ""
    raw_quantity = ctx.msg.tag("Quantity") or ""
    quantity = fedrules.amount(raw_quantity)
    if not fedrules.ID_RE.match(sender) or quantity is None:
        raise ProcessError("a wAR Credit-Notice without a valid Sender and Quantity")  # the ledger never sends one
    petition_id = ctx.msg.tag("Pushed-For") or ctx.msg.id
    text, name = ctx.msg.tag("X-Petition"), ctx.msg.tag("X-Sender-Name")
    now = ctx.msg.timestamp
    if ctx.get(PETITION + petition_id) is not None:
        reason: str | None = fedrules.DUPLICATE
    else:
        reason = fedrules.intake_refusal(config, quantity=quantity, text=text, name=name,
                                         last=ctx.get(LAST + sender), now=now)
    record = {
        "id": petition_id, "sender": sender, "name": (name or "").strip()[: fedrules.MAX_NAME_CHARS],
        "text": (text or "").strip()[: fedrules.MAX_PETITION_CHARS], "quantity": str(quantity), "received": now,
        "votes": [], "grade": None, "amount": None,
    }
    if reason is not None:
        _refund(ctx, config, record, reason)
        return
    # The previous accepted timestamp is kept so that a failed deliberation gives the cooldown back.
    deliberating = {**record, "status": DELIBERATING, "previous_last": ctx.get(LAST + sender)}
    ctx.put(PETITION + petition_id, deliberating)
    ctx.put(LAST + sender, now)
    ctx.send(sender, {"Action": "Petition-Received", "Petition-Id": petition_id})
    rule = steering.detect(record["text"]) if config.get("Steering-Filter", "veto") == "veto" else None
    if rule is not None:
        # The deterministic first line: a petition that steers its own grade is decided at 0 before any model reads it.
        vote = {"governor": FILTER_NAME, "order": "rule", "examples": "", "grade": None, "veto": True,
                "reason": f"the steering filter: {rule}", "valid": True, "rule": rule}
        petition = {**deliberating, "votes": [vote]}
        ctx.send(sender, {"Action": "Petition-Vote", "Petition-Id": petition_id, "Governor": FILTER_NAME,
                          "Veto": "yes"}, canonical_json(vote))
        _decide(ctx, config, petition)
        return
    _ask_ahead(ctx, config, record["text"])
    _next_governor(ctx, petition_id, 0)


def _governor_request(config: dict[str, Any], governor: dict[str, str], text: str) -> dict[str, Any]:
    """The completion a governor's Deliberate asks for (a function of the config and the petition text alone)."""
    return {"prefix": prompts.prefix_parts(governor["order"], governor["examples"]),
            "parts": prompts.petition_parts(text, governor["order"]), "grammar": prompts.GRAMMARS[governor["order"]],
            "max_tokens": config["Max-Tokens"]}


def _ask_ahead(ctx: Context, config: dict[str, Any], text: str) -> None:
    """Hint every governor's completion now, so that workers compute them at once rather than one after another.

    All of them, the graders too though a sentinel's veto would make theirs unneeded: the steering filter has
    already decided most steering petitions without a model, a vetoed petition's offering is burned, and with a
    worker per governor the whole committee takes one completion's time instead of two.
    """
    for governor in config["Governors"]:
        ctx.prefetch(config["Model"], **_governor_request(config, governor, text))


def _refund(ctx: Context, config: dict[str, Any], record: dict[str, Any], reason: str) -> None:
    """Send the whole quantity back (wAR Transfer with Recipient) and tell the petitioner why."""
    sender, petition_id = record["sender"], record["id"]
    _give_back(ctx, config, record, reason)
    ctx.send(sender, {"Action": "Petition-Refunded", "Petition-Id": petition_id, "Reason": reason}, reason)
    if reason != fedrules.DUPLICATE:  # never overwrite the petition that holds the id
        ctx.put(PETITION + petition_id, {**record, "status": REFUNDED, "refund_reason": reason})


def _give_back(ctx: Context, config: dict[str, Any], petition: dict[str, Any], reason: str) -> None:
    """Refund a petition's whole quantity: a wAR Transfer with Recipient (not Reality's Target tag)."""
    ctx.send(config["War-Token"], {
        "Action": "Transfer", "Recipient": petition["sender"], "Quantity": petition["quantity"],
        "X-Refund-For": petition["id"], "X-Refund-Reason": reason,
    })


def _next_governor(ctx: Context, petition_id: str, governor: int) -> None:
    ctx.send(ctx.process_id, {"Action": "Deliberate", "Petition-Id": petition_id, "Governor": str(governor)})


def _deliberating(ctx: Context, petition_id: str) -> dict[str, Any]:
    petition = ctx.get(PETITION + petition_id)
    if petition is None:
        raise Refused(f"no petition {petition_id[:60]}")
    if petition["status"] != DELIBERATING:
        raise Refused(f"petition {petition_id} is {petition['status']}, not deliberating")
    return petition


@refusing("Deliberate")
def deliberate(ctx: Context) -> None:
    """One governor reads the petition and votes; after the last one the Fed decides."""
    config = _config(ctx)
    if ctx.msg.sender != ctx.process_id:
        raise Refused("only the Fed itself may send Deliberate")
    petition_id = ctx.msg.tag("Petition-Id") or ""
    petition = _deliberating(ctx, petition_id)
    index = len(petition["votes"])
    if ctx.msg.tag("Governor") != str(index):
        raise Refused(f"petition {petition_id} waits for governor {index}, not {ctx.msg.tag('Governor')!r}")
    governor = config["Governors"][index]
    try:
        answer = ctx.complete(config["Model"], **_governor_request(config, governor, petition["text"]))
    except ExtensionError as exc:
        # A refusal or failure of the model is a fact of the log (host faults never reach here: the compute
        # unit retries those), so the petition fails and the offering goes back.
        _fail(ctx, config, petition, f"governor {governor['name']}: the model failed: {str(exc)[:MAX_ERROR_CHARS]}")
        return
    parsed = prompts.parse_answer(answer["text"], governor["order"])
    vote = {
        "governor": governor["name"], "order": governor["order"], "examples": governor["examples"],
        "grade": parsed["grade"], "veto": parsed["veto"], "reason": parsed["reason"], "valid": parsed["valid"],
        "raw": answer["text"], "tokens": answer.get("tokens"), "stop": answer.get("stop"), "model": answer.get("model"),
    }
    petition["votes"].append(vote)
    if not vote["valid"]:
        _fail(ctx, config, petition, f"governor {governor['name']}: {prompts.INVALID_REASON}")
        return
    announce = {"Action": "Petition-Vote", "Petition-Id": petition_id, "Governor": governor["name"]}
    if vote["grade"] is not None:
        announce["Grade"] = str(vote["grade"])
    else:
        announce["Veto"] = "yes" if vote["veto"] else "no"
    ctx.send(petition["sender"], announce, canonical_json(vote))
    # A sentinel's veto decides at once (grade 0): the graders after it need not run.
    if len(petition["votes"]) < len(config["Governors"]) and not vote["veto"]:
        ctx.put(PETITION + petition_id, petition)
        _next_governor(ctx, petition_id, len(petition["votes"]))
    else:
        _decide(ctx, config, petition)


def _fail(ctx: Context, config: dict[str, Any], petition: dict[str, Any], reason: str) -> None:
    """The deliberation cannot give a grade: record why, refund the held offering, give the cooldown back."""
    petition_id, sender = petition["id"], petition["sender"]
    petition.update(status=FAILED, failure=reason, failed_at=ctx.msg.timestamp)
    ctx.put(PETITION + petition_id, petition)
    previous = petition.get("previous_last")
    if ctx.get(LAST + sender) == petition["received"]:  # no later petition of this sender took the slot
        if previous is None:
            ctx.delete(LAST + sender)
        else:
            ctx.put(LAST + sender, previous)
    _give_back(ctx, config, petition, reason)
    ctx.send(sender, {"Action": "Petition-Failed", "Petition-Id": petition_id, "Reason": reason},
             canonical_json({"petition": petition_id, "reason": reason, "votes": petition["votes"]}))


def _decide(ctx: Context, config: dict[str, Any], petition: dict[str, Any]) -> None:
    """Aggregate the votes, pay the schedule within the caps, tell the petitioner."""
    petition_id = petition["id"]
    grades = [v["grade"] for v in petition["votes"] if v["grade"] is not None]
    vetoed_by = [v["governor"] for v in petition["votes"] if v.get("veto")]
    grade = fedrules.committee_grade(petition["votes"], config["Aggregation"])
    epoch = fedrules.epoch_of(ctx.msg.timestamp, config["Epoch-Ms"])
    granted, epoch_granted = _int(ctx, GRANTED), _int(ctx, f"{EPOCH}{epoch}")
    scheduled, amount, cap = fedrules.payout(config, grade, granted=granted, epoch_granted=epoch_granted)
    decision = {
        "petition": petition_id, "grades": grades, "aggregation": config["Aggregation"], "grade": grade,
        "schedule_amount": str(scheduled), "amount": str(amount), "capped_by": cap, "epoch": epoch,
        "decided": ctx.msg.timestamp, "vetoed_by": vetoed_by,
    }
    petition.update(status=DECIDED, grade=grade, amount=str(amount), decision=decision,
                    grant=GRANT_PENDING if amount > 0 else GRANT_NONE)
    ctx.put(PETITION + petition_id, petition)
    if amount == 0:
        _burn(ctx, config, petition)  # denied: the offering is spent
    else:  # the offering is burned once LLAMA confirms the mint, refunded if LLAMA refuses it
        # Reserved now so that decisions taken before the confirmations arrive respect the caps.
        ctx.put(GRANTED, str(granted + amount))
        ctx.put(f"{EPOCH}{epoch}", str(epoch_granted + amount))
        ctx.put(PENDING_GRANTS, [*ctx.get(PENDING_GRANTS, []), petition_id])
        ctx.send(config["Llama-Token"], {"Action": "Grant", "Recipient": petition["sender"], "Quantity": str(amount),
                                         "X-Petition-Id": petition_id})
    ctx.send(petition["sender"], {"Action": "Petition-Decision", "Petition-Id": petition_id, "Grade": str(grade),
                                  "Amount": str(amount)}, canonical_json(decision))


def _burn(ctx: Context, config: dict[str, Any], petition: dict[str, Any]) -> None:
    """Burn the held offering of a petition whose outcome is final."""
    ctx.send(config["War-Token"], {"Action": "Burn", "Quantity": petition["quantity"], "X-Petition-Id": petition["id"]})


def _grant_reply(ctx: Context) -> tuple[str, dict[str, Any]]:
    """The petition a LLAMA Grant reply is about (replies come back in the order the Grants were sent)."""
    config = _config(ctx)
    if ctx.msg.sender != config["Llama-Token"]:
        raise Refused(f"grant replies are accepted only from the LLAMA process {config['Llama-Token']}")
    pending: list[str] = ctx.get(PENDING_GRANTS, [])
    petition_id = ctx.msg.tag("X-Petition-Id") or (pending[0] if pending else "")
    if petition_id not in pending:
        raise Refused(f"no grant pending for petition {petition_id[:60]!r}")
    ctx.put(PENDING_GRANTS, [p for p in pending if p != petition_id])
    return petition_id, ctx.get(PETITION + petition_id)


@refusing("Grant-Confirmation")
def grant_confirmation(ctx: Context) -> None:
    """LLAMA minted the grant."""
    petition_id, petition = _grant_reply(ctx)
    petition.update(grant=GRANT_DONE, granted_at=ctx.msg.timestamp)
    ctx.put(PETITION + petition_id, petition)
    _burn(ctx, _config(ctx), petition)


@refusing("Grant-Error")
def grant_error(ctx: Context) -> None:
    """LLAMA refused the grant: record why, release the amount from the totals, refund the held offering."""
    config = _config(ctx)
    petition_id, petition = _grant_reply(ctx)
    amount, epoch = int(petition["amount"]), petition["decision"]["epoch"]
    error = (ctx.msg.tag("Error") or ctx.msg.data)[:MAX_ERROR_CHARS]
    petition.update(grant=GRANT_FAILED, grant_error=error)
    ctx.put(PETITION + petition_id, petition)
    ctx.put(GRANTED, str(max(0, _int(ctx, GRANTED) - amount)))
    ctx.put(f"{EPOCH}{epoch}", str(max(0, _int(ctx, f"{EPOCH}{epoch}") - amount)))
    _give_back(ctx, config, petition, f"the LLAMA ledger refused the grant: {error}"[:MAX_ERROR_CHARS])


@refusing("Resume-Deliberation")
def resume_deliberation(ctx: Context) -> None:
    """Anyone restarts a deliberation whose last Deliberate failed as a message (its Error left it waiting).

    Open to all, and no power: it only re-sends the Deliberate the Fed itself would send, for the governor the
    petition waits for; the vote is whatever the log makes it, so resuming cannot change an outcome.
    """
    _config(ctx)
    petition_id = ctx.msg.tag("Petition-Id") or ""
    petition = _deliberating(ctx, petition_id)
    _next_governor(ctx, petition_id, len(petition["votes"]))


@process.otherwise
def otherwise(ctx: Context) -> None:
    """Notices from the ledgers (Debit-, Burn-Notice) and anything unknown: logged, never answered."""
    if ctx.msg.action is None:  # attestations and other protocol items carry no Action
        return
    ctx.print(f"no handler for Action={ctx.msg.action!r} from {ctx.msg.sender}")
