"""Writes of the ledger app: the bootstrap that builds the module and spawns the token ledgers."""

from __future__ import annotations

import os
from pathlib import Path

from django.db import transaction

from ao import modules, services
from ao.effects import keys
from ao.permaweb import dataitem
from ledger.models import Token
from ledger.tokens import TOKENS, TokenSpec

MODULE_SOURCE = Path(__file__).resolve().parent / "process"


def ledger_module_id() -> str:
    """Build (cached by source digest) and publish the ledger module; return its id."""
    return modules.publish_module(modules.build_component(MODULE_SOURCE), name="llamafed-token-ledger")


def token_spawn(*, spec: TokenSpec, module_id: str) -> Token:
    """Spawn one token ledger signed by the operator wallet, unless it exists; idempotent."""
    existing = Token.objects.filter(ticker=spec.ticker).first()
    if existing is not None:
        return existing
    wallet = keys.operator_wallet()
    tags = services.spawn_tags(module_id, spec.spawn_tags())
    item = dataitem.create_data_item(wallet, b"", tags=tags, anchor=os.urandom(32))
    with transaction.atomic():
        assignment = services.su_schedule(raw=item.serialize())
        return Token.objects.create(
            ticker=spec.ticker, process_id=assignment.process_id, module_id=module_id,
            denomination=spec.denomination, max_supply=spec.max_supply,
        )


def ledger_bootstrap() -> list[Token]:
    """Spawn wAR and LLAMA (owner: the operator wallet)."""
    module_id = ledger_module_id()
    return [token_spawn(spec=spec, module_id=module_id) for spec in TOKENS]
