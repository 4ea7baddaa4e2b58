"""Builders of signed AO items for tests."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ao import services
from ao.effects import keys
from ao.permaweb import dataitem
from ao.permaweb.wallet import Ed25519Key, Signer
from ao.units import su

MODULE_ID = "M" * 43  # a syntactically valid module id; the SU does not look modules up


def ao_tags(kind: str, extra: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """The AO protocol tags plus extra ones."""
    return [("Data-Protocol", su.DATA_PROTOCOL), ("Variant", su.VARIANT), ("Type", kind), *extra]


def spawn_item(
    signer: Signer, *, extra: Sequence[tuple[str, str]] = (), data: bytes = b"", module: str = MODULE_ID
) -> dataitem.DataItem:
    """A process spawn addressed to this node's scheduler, trusting its messenger (random anchor: spawns may repeat)."""
    tags = services.spawn_tags(module, extra)
    return dataitem.create_data_item(signer, data, tags=tags, anchor=os.urandom(32))


def message_item(
    signer: Signer, process_id: str, *, action: str = "Ping", data: bytes = b"", extra: Sequence[tuple[str, str]] = ()
) -> dataitem.DataItem:
    """A message to a process, with a random anchor as aoconnect sets (Ed25519 signatures are
    deterministic, so two identical messages from one key would otherwise share an id)."""
    return dataitem.create_data_item(
        signer,
        data,
        tags=ao_tags("Message", [("Action", action), *extra]),
        target=process_id,
        anchor=os.urandom(32),
    )


def user_key() -> Ed25519Key:
    """A fresh user key (Ed25519: fast to make; RSA wallets are covered by the permaweb tests)."""
    return Ed25519Key.generate()


def record_outbox(process_id: str, nonce: int, messages: Sequence[object], *, catch_up: bool = False) -> list[object]:
    """Commit message `nonce` as evaluated with this outbox, as the compute unit would: its result, the cursor, and
    its Push rows (returned by index). The message must be the next one the cursor waits for; with `catch_up`, the
    messages before it are first committed with empty outboxes."""
    from django.db import transaction

    from ao import models
    from ao.compute import pushes
    from ao.compute.message import Evaluated
    from ao.units import cu, mu

    if catch_up:
        for earlier in range(models.Evaluation.objects.get(process_id=process_id).next_nonce, nonce):
            record_outbox(process_id, earlier, [])
    assignment = models.Assignment.objects.select_related("message").get(process_id=process_id, nonce=nonce)
    item = dataitem.parse(bytes(assignment.message.raw))
    outbox = tuple(m if isinstance(m, mu.OutboxMessage) else mu.OutboxMessage.from_json(m) for m in messages)
    root = mu.pushed_for(item.tags, item.id, item.owner_address == keys.messenger_key().address)
    body = {"Messages": [m.to_json() for m in outbox], "Spawns": [], "Assignments": [], "Output": ""}
    with transaction.atomic():
        cursor = models.Evaluation.objects.select_for_update().get(process_id=process_id)
        assert cursor.next_nonce == nonce, f"the cursor waits for nonce {cursor.next_nonce}, not {nonce}"
        state_hash = cu.next_state_hash(cursor.state_hash, nonce, {}, body)
        models.Result.objects.create(process_id=process_id, nonce=nonce, message_id=item.id, body=body, error="",
                                     gas_used=0, state_hash=state_hash, pushed_for=root if outbox else "")
        models.Evaluation.objects.filter(process_id=process_id).update(next_nonce=nonce + 1, state_hash=state_hash,
                                                                      window_start=nonce + 1)
        evaluated = Evaluated(nonce=nonce, message_id=item.id, body=body, error="", gas_used=0,
                              state_hash=state_hash, logs=(), outbox=outbox, pushed_for=root)
        pushes.record(process_id=process_id, results=[evaluated])
    return list(models.Push.objects.filter(process_id=process_id, nonce=nonce).order_by("index"))
