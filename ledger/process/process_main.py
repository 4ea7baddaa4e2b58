"""The token ledger process (aos token semantics), for wAR and LLAMA.

Amounts are integers in base units, carried as decimal strings. State keys:
``config`` (name, ticker, denomination, max supply, owner, owner powers, grant authorities),
``supply`` (total supply), ``balance/<address>``.

Owner powers are fixed by the spawn tag ``Owner-Powers``: ``All`` (the default: the owner mints and adds
grant authorities, as an aos token) or ``Bind-Once``: the owner can never mint, and may name the grant
authority exactly once (``Allow-Grant``), which seals the token: from then on it has no owner at all and
only that authority creates tokens. LLAMA is spawned ``Bind-Once`` and bound to the Fed in the genesis.
Errors that are the sender's (bad quantity, insufficient balance, unauthorized) come
back to the sender as ``<Action>-Error`` messages and change nothing.
"""

from __future__ import annotations

import re

from collections.abc import Callable

from aosdk import Context, Process, ProcessError, canonical_json

MAX_QUANTITY_DIGITS = 40  # far above any supply; bounds the integer parsing work
ADDRESS_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
DECIMAL_RE = re.compile(r"^(0|[1-9][0-9]*)$")
BALANCE = "balance/"
OWNER_ALL, OWNER_BIND_ONCE = "All", "Bind-Once"

process = Process()


class Refused(Exception):
    """The sender's mistake: answered with an error message, state unchanged."""


def _quantity(ctx: Context, name: str = "Quantity") -> int:
    raw = ctx.msg.tag(name)
    if raw is None:
        raise Refused(f"tag {name} is required (an integer number of base units)")
    if len(raw) > MAX_QUANTITY_DIGITS or not DECIMAL_RE.match(raw):
        raise Refused(f"{name} must be a positive integer string in base units, got {raw[:50]!r}")
    value = int(raw)
    if value <= 0:
        raise Refused(f"{name} must be greater than zero")
    return value


def _address(ctx: Context, name: str) -> str:
    value = ctx.msg.tag(name)
    if value is None or not ADDRESS_RE.match(value):
        raise Refused(f"tag {name} must be a 43-character address or process id")
    return value


def _balance(ctx: Context, account: str) -> int:
    return int(ctx.get(BALANCE + account, "0"))


def _set_balance(ctx: Context, account: str, value: int) -> None:
    if value < 0:  # unreachable by construction; a guard, not a path
        raise ProcessError(f"balance of {account} would go negative")
    if value == 0:
        ctx.delete(BALANCE + account)
    else:
        ctx.put(BALANCE + account, str(value))


def _config(ctx: Context) -> dict:
    config = ctx.get("config")
    if config is None:
        raise ProcessError("token is not initialised (its spawn message was not evaluated)")
    return config


def _supply(ctx: Context) -> int:
    return int(ctx.get("supply", "0"))


def _issue(ctx: Context, config: dict, recipient: str, quantity: int) -> None:
    """Create new tokens within the max supply."""
    supply = _supply(ctx)
    cap = config.get("Max-Supply")
    if cap is not None and supply + quantity > int(cap):
        raise Refused(f"would exceed the max supply {cap} (supply {supply}, asked {quantity})")
    ctx.put("supply", str(supply + quantity))
    _set_balance(ctx, recipient, _balance(ctx, recipient) + quantity)


def refusing(action: str) -> Callable[[Callable[[Context], None]], Callable[[Context], None]]:
    """Register a handler whose Refused errors become <Action>-Error replies."""

    def register(fn: Callable[[Context], None]) -> Callable[[Context], None]:
        def run(ctx: Context) -> None:
            try:
                fn(ctx)
            except Refused as exc:
                # X- tags ride along so the sender can match the error to its request.
                forwarded = [(n, v) for n, v in ctx.msg.forwarded_tags() if n != "X-Reference"]
                ctx.reply([("Action", f"{action}-Error"), ("Error", str(exc)), *forwarded], str(exc))

        process.on(action)(run)
        return fn

    return register


@process.on_spawn
def spawn(ctx: Context) -> None:
    """Read the token's parameters from the spawn tags."""
    tag = ctx.msg.tag
    denomination = tag("Denomination", "12") or "12"
    cap = tag("Max-Supply")
    for name, value in (("Denomination", denomination), ("Max-Supply", cap)):
        if value is not None and (not DECIMAL_RE.match(value) or len(value) > MAX_QUANTITY_DIGITS):
            raise ProcessError(f"spawn tag {name} must be a non-negative integer, got {value!r}")
    authorities = [a for a in (tag("Grant-Authorities", "") or "").split(",") if a]
    powers = tag("Owner-Powers", OWNER_ALL) or OWNER_ALL
    if powers not in (OWNER_ALL, OWNER_BIND_ONCE):
        raise ProcessError(f"spawn tag Owner-Powers must be {OWNER_ALL} or {OWNER_BIND_ONCE}, got {powers[:40]!r}")
    if powers == OWNER_BIND_ONCE and authorities:
        raise ProcessError("a Bind-Once token names its grant authority with Allow-Grant, not Grant-Authorities")
    ctx.put(
        "config",
        {
            "Name": tag("Name", "Token"),
            "Ticker": tag("Ticker", "TKN"),
            "Logo": tag("Logo", ""),
            "Denomination": denomination,
            "Max-Supply": cap,
            "Owner": ctx.msg.owner,
            "Owner-Powers": powers,
            "Grant-Authorities": sorted(set(authorities)),
        },
    )
    ctx.put("supply", "0")
    ctx.print(f"token {tag('Ticker', 'TKN')} ready")


@refusing("Info")
def info(ctx: Context) -> None:
    """Name, ticker, logo, denomination, supply."""
    c = _config(ctx)
    tags = {"Name": c["Name"], "Ticker": c["Ticker"], "Logo": c["Logo"], "Denomination": c["Denomination"],
            "Total-Supply": str(_supply(ctx))}
    if c.get("Max-Supply") is not None:
        tags["Max-Supply"] = c["Max-Supply"]
    ctx.reply(tags)


@refusing("Balance")
def balance(ctx: Context) -> None:
    """One account's balance (Recipient or Target tag, else the sender)."""
    account = ctx.msg.tag("Recipient") or ctx.msg.tag("Target") or ctx.msg.sender
    value = str(_balance(ctx, account))
    ctx.reply({"Balance": value, "Ticker": _config(ctx)["Ticker"], "Account": account}, value)


@refusing("Balances")
def balances(ctx: Context) -> None:
    """Balances as JSON {address: amount}, a page at a time (Cursor tag = last address seen)."""
    after = BALANCE + ctx.msg.tag("Cursor", "") if ctx.msg.tag("Cursor") else ""
    keys = ctx.keys(BALANCE, after)
    page = {k[len(BALANCE):]: ctx.get(k) for k in keys}
    ctx.reply({"Count": str(len(page))}, canonical_json(page))


@refusing("Total-Supply")
def total_supply(ctx: Context) -> None:
    """The total supply in base units."""
    value = str(_supply(ctx))
    ctx.reply({"Total-Supply": value, "Ticker": _config(ctx)["Ticker"]}, value)


@refusing("Transfer")
def transfer(ctx: Context) -> None:
    """Move tokens from the sender to Recipient; notify both, forwarding X- tags."""
    recipient = _address(ctx, "Recipient")
    quantity = _quantity(ctx)
    sender = ctx.msg.sender
    have = _balance(ctx, sender)
    if have < quantity:
        raise Refused(f"insufficient balance: {sender} has {have}, asked to send {quantity}")
    _set_balance(ctx, sender, have - quantity)
    _set_balance(ctx, recipient, _balance(ctx, recipient) + quantity)
    if ctx.msg.tag("Cast") is None:
        forwarded = ctx.msg.forwarded_tags()
        ctx.reply([("Action", "Debit-Notice"), ("Recipient", recipient), ("Quantity", str(quantity)), *forwarded])
        ctx.send(recipient, [("Action", "Credit-Notice"), ("Sender", sender), ("Quantity", str(quantity)), *forwarded])


@refusing("Mint")
def mint(ctx: Context) -> None:
    """Create tokens (the token's owner only), to Recipient or the owner."""
    config = _config(ctx)
    if config.get("Owner-Powers", OWNER_ALL) != OWNER_ALL:
        raise Refused("this token cannot be minted: only its grant authority creates tokens")
    if ctx.msg.sender != config["Owner"]:
        raise Refused("only the token's owner may mint")
    quantity = _quantity(ctx)
    recipient = _address(ctx, "Recipient") if ctx.msg.tag("Recipient") else ctx.msg.sender
    _issue(ctx, config, recipient, quantity)
    ctx.reply({"Action": "Mint-Confirmation", "Recipient": recipient, "Quantity": str(quantity)})


@refusing("Grant")
def grant(ctx: Context) -> None:
    """Create tokens for Recipient, only on a grant authority's word (the Fed)."""
    config = _config(ctx)
    if ctx.msg.sender not in config["Grant-Authorities"]:
        raise Refused(f"{ctx.msg.sender} is not a grant authority of this token")
    recipient = _address(ctx, "Recipient")
    quantity = _quantity(ctx)
    _issue(ctx, config, recipient, quantity)
    forwarded = ctx.msg.forwarded_tags()
    ctx.send(recipient, [("Action", "Grant-Notice"), ("Quantity", str(quantity)), ("Granter", ctx.msg.sender),
                         *forwarded])
    ctx.reply([("Action", "Grant-Confirmation"), ("Recipient", recipient), ("Quantity", str(quantity)), *forwarded])


@refusing("Allow-Grant")
def allow_grant(ctx: Context) -> None:
    """Add a grant authority (the token's owner only); a Bind-Once token takes one and seals itself."""
    config = _config(ctx)
    if config["Owner"] is None:
        raise Refused(f"this token is sealed: its grant authorities {', '.join(config['Grant-Authorities'])} "
                      "are fixed and it has no owner")
    if ctx.msg.sender != config["Owner"]:
        raise Refused("only the token's owner may add a grant authority")
    authority = _address(ctx, "Authority")
    config["Grant-Authorities"] = sorted({*config["Grant-Authorities"], authority})
    sealed = config.get("Owner-Powers", OWNER_ALL) == OWNER_BIND_ONCE
    if sealed:
        config["Owner"] = None
        config["Sealed-At"] = ctx.msg.nonce
    ctx.put("config", config)
    ctx.reply({"Action": "Allow-Grant-Confirmation", "Authority": authority, "Sealed": "yes" if sealed else "no"})


@refusing("Burn")
def burn(ctx: Context) -> None:
    """Destroy some of the sender's tokens."""
    quantity = _quantity(ctx)
    sender = ctx.msg.sender
    have = _balance(ctx, sender)
    if have < quantity:
        raise Refused(f"insufficient balance: {sender} has {have}, asked to burn {quantity}")
    _set_balance(ctx, sender, have - quantity)
    ctx.put("supply", str(_supply(ctx) - quantity))
    ctx.reply({"Action": "Burn-Notice", "Quantity": str(quantity)})
