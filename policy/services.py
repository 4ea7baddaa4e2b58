"""Writes of the policy app: the bootstrap that builds the Fed module, spawns the Fed and lets it grant LLAMA."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from django.db import transaction

from ao import modules, services, weave
from ao.effects import keys
from ao.errors import AoError
from ao.permaweb import dataitem
from ao.units import su
from ledger.services import ledger_bootstrap
from policy.models import Fed

MODULE_SOURCE = Path(__file__).resolve().parent / "process"
MODULE_NAME = "llamafed-fed"
FED_NAME = "Llama Fed"
# Fuel per message. A governor's call costs about 10M + 20M per prompt token + 50M per generated token
# (ao.extensions.llm): ~1,500 prompt tokens and 64 generated at most with the default model is ~34e9,
# plus the interpreter's own work; 200e9 leaves room for longer prompts or a larger Max-Tokens.
COMPUTE_LIMIT = 200_000_000_000
# Tags the bootstrap sets itself; overrides may not replace them.
FIXED_TAGS = frozenset({"Data-Protocol", "Variant", "Type", "Module", "Scheduler", "Authority", "Extension", "War-Token",
                        "Llama-Token", "Model"})


class FedBootstrapError(AoError):
    """The Fed cannot be bootstrapped as asked."""

    status = 409


def fed_module_id() -> str:
    """Build (cached by source digest) and publish the Fed module; return its id."""
    # The module's own limit is what any process on it may use at most; a spawn can only lower it.
    return modules.publish_module(modules.build_component(MODULE_SOURCE), name=MODULE_NAME,
                                  extra_tags=[("Compute-Limit", str(COMPUTE_LIMIT))])


def fed_spawn_tags(*, module_id: str, war: str, llama: str, model_tx: str,
                   overrides: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """The Fed's spawn tags: protocol, extensions, tokens, model, fuel, then any parameter overrides."""
    extra = dict(overrides or {})
    fixed = sorted(FIXED_TAGS & set(extra))
    if fixed:
        raise FedBootstrapError(f"the bootstrap sets {', '.join(fixed)} itself; it cannot be overridden")
    extra.setdefault("Compute-Limit", str(COMPUTE_LIMIT))
    extra.setdefault("Name", FED_NAME)
    return services.spawn_tags(module_id, [
        ("Extension", "WeaveDrive"),
        ("Extension", "Llama"),
        ("War-Token", war),
        ("Llama-Token", llama),
        ("Model", f"/data/{model_tx}"),
        *sorted(extra.items()),
    ])


def fed_bootstrap(*, model_tx: str | None = None, overrides: Mapping[str, str] | None = None) -> Fed:
    """Ensure wAR, LLAMA and the Fed exist; a new Fed gets its model attested and LLAMA's Allow-Grant. Idempotent.

    model_tx defaults to the uploaded default model (uploaded now if needed); overrides are spawn tags
    (Schedule, Epoch-Budget, ...) for a new Fed.
    """
    existing = Fed.objects.order_by("id").first()
    if existing is not None:
        if model_tx is not None and model_tx != existing.model_tx:
            raise FedBootstrapError(f"the Fed {existing.process_id} already runs model {existing.model_tx}")
        return existing
    tokens = {t.ticker: t for t in ledger_bootstrap()}
    war, llama = tokens["wAR"], tokens["LLAMA"]
    if model_tx is None:
        model_tx = weave.weave_upload_default_model()
    if not su.is_id(model_tx):
        raise FedBootstrapError(f"not a transaction id: {model_tx[:60]!r}")
    module_id = fed_module_id()
    wallet = keys.operator_wallet()
    tags = fed_spawn_tags(module_id=module_id, war=war.process_id, llama=llama.process_id, model_tx=model_tx,
                          overrides=overrides)
    spawn = dataitem.create_data_item(wallet, b"", tags=tags, anchor=os.urandom(32))
    allow = dataitem.create_data_item(
        wallet, b"",
        tags=[("Data-Protocol", su.DATA_PROTOCOL), ("Variant", su.VARIANT), ("Type", "Message"),
              ("Action", "Allow-Grant"), ("Authority", spawn.id)],
        target=llama.process_id, anchor=os.urandom(32),
    )
    with transaction.atomic():
        services.su_schedule(raw=spawn.serialize())
        services.su_attest(process_id=spawn.id, tx_id=model_tx)
        services.su_schedule(raw=allow.serialize())
        return Fed.objects.create(process_id=spawn.id, module_id=module_id, model_tx=model_tx)
