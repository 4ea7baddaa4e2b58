"""Replay-verify trusts only the signed log: every tampering of the node's record is named, none crashes it, and the
compute unit keeps answering within its deadline meanwhile."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from ao import models, services, verify
from ao.compute import batch, pushes
from ao.compute.origins import Origin, Origins
from ao.effects import keys
from ao.effects.stores import embedded_store
from ao.permaweb.wallet import Ed25519Key
from ao.units import mu
from tests import factories
from tests.ao.test_cu import send, spawn

pytestmark = pytest.mark.django_db

TRANSFERS = 6


@pytest.fixture
def ledger(alice: Ed25519Key, ledger_module: str) -> str:
    """A token ledger with a mint and a few transfers, all evaluated: verify says OK."""
    pid = spawn(alice, ledger_module, [("Ticker", "VER")])
    bob = factories.user_key()
    send(alice, pid, "Mint", Quantity="1000")
    for i in range(TRANSFERS):
        send(alice, pid, "Transfer", Recipient=bob.address, Quantity=str(i + 1))
    batch.evaluate_pending(process_id=pid)
    assert verify.verify_process(process_id=pid).ok
    return pid


def _assignment(pid: str, nonce: int) -> models.Assignment:
    return models.Assignment.objects.select_related("message").get(process_id=pid, nonce=nonce)


def _flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1:]


def shift_timestamp(pid: str) -> None:
    models.Assignment.objects.filter(process_id=pid, nonce=3).update(timestamp=_assignment(pid, 3).timestamp + 3_600_000)


def timestamp_before_previous(pid: str) -> None:
    models.Assignment.objects.filter(process_id=pid, nonce=3).update(timestamp=_assignment(pid, 2).timestamp - 1)


def change_block_height(pid: str) -> None:
    models.Assignment.objects.filter(process_id=pid, nonce=3).update(block_height=_assignment(pid, 3).block_height + 7)


def change_message_reference(pid: str) -> None:
    stray = factories.message_item(factories.user_key(), pid, action="Transfer")
    other = embedded_store().save_item(stray, block=None)
    models.Assignment.objects.filter(process_id=pid, nonce=3).update(message=other)


def raise_a_balance(pid: str) -> None:
    row = models.StateEntry.objects.filter(process_id=pid, key__startswith="balance/").order_by("key").first()
    row.value = "99999999"
    row.save()


def delete_last_results(pid: str) -> None:
    models.Result.objects.filter(process_id=pid, nonce__gte=TRANSFERS).delete()


def delete_a_middle_result(pid: str) -> None:
    models.Result.objects.filter(process_id=pid, nonce=3).delete()


def change_a_stored_tag(pid: str) -> None:
    entry = _assignment(pid, 3).message
    models.EntryTag.objects.filter(entry=entry, name="Quantity").update(value="500")


def change_the_signed_data(pid: str) -> None:
    entry = _assignment(pid, 3).message
    raw = bytes(entry.raw)
    assert raw.count(b"Quantity") == 1
    at = raw.index(b"Quantity") + len(b"Quantity") + 1  # the value's first digit (after its one-byte length)
    entry.raw = raw[:at] + (b"9" if raw[at:at + 1] != b"9" else b"8") + raw[at + 1:]
    entry.save(update_fields=["raw"])


def break_a_signature(pid: str) -> None:
    entry = _assignment(pid, 3).message
    entry.raw = _flip(bytes(entry.raw), 20)  # inside the signature
    entry.save(update_fields=["raw"])


def flip_an_assignment_byte(pid: str) -> None:
    row = _assignment(pid, 3)
    raw = bytes(row.raw)
    models.Assignment.objects.filter(pk=row.pk).update(raw=_flip(raw, len(raw) // 2))


def truncate_an_assignment(pid: str) -> None:
    row = _assignment(pid, 3)
    models.Assignment.objects.filter(pk=row.pk).update(raw=bytes(row.raw)[:40])


TAMPERS: dict[str, tuple[Callable[[str], None], str]] = {
    "timestamp +1 h": (shift_timestamp, "assignment timestamp"),
    "timestamp before the previous slot": (timestamp_before_previous, "assignment timestamp"),
    "block height": (change_block_height, "assignment block height"),
    "message reference": (change_message_reference, "assignment message"),
    "a state row": (raise_a_balance, "state row balance/"),
    "the last results deleted": (delete_last_results, "result missing"),
    "a middle result deleted": (delete_a_middle_result, "result missing"),
    "a stored tag": (change_a_stored_tag, "message tags"),
    "the signed data": (change_the_signed_data, "message signature"),
    "a message signature": (break_a_signature, "message signature"),
    "an assignment byte flipped": (flip_an_assignment_byte, "assignment"),
    "an assignment truncated": (truncate_an_assignment, "assignment damaged"),
}


def test_every_tampering_is_named_and_none_crashes_verify(ledger: str, client) -> None:
    for name, (tamper, kind) in TAMPERS.items():
        with transaction.atomic():  # each tamper is undone before the next
            tamper(ledger)
            report = verify.verify_process(process_id=ledger)
            assert not report.ok and report.divergence is not None, name
            assert report.divergence.what.startswith(kind), (name, report.divergence)
            with pytest.raises(CommandError, match=kind):
                call_command("ao", "verify", "--", ledger)
            if name == "a middle result deleted":
                message = _assignment(ledger, 3).message.id
                response = client.get(f"/ao/cu/result/{message}", {"process-id": ledger})
                assert response.status_code == 503 and "not evaluated yet" in response.json()["error"]
            transaction.set_rollback(True)
    assert verify.verify_process(process_id=ledger).ok  # the record restored verifies again


def test_a_forged_push_accepted_by_a_bent_compute_unit_is_named(alice: Ed25519Key, probe_module: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    sender = spawn(alice, probe_module)
    receiver = spawn(alice, probe_module, [("Name", "receiver")])
    batch.evaluate_pending(process_id=sender)
    batch.evaluate_pending(process_id=receiver)
    # The operator's messenger key signs a message "from" the sender that the sender never sent...
    fake = mu.OutboxMessage(target=receiver, tags=(("Action", "Whoami"),), data=b"pay me")
    forged = mu.build_push(keys.messenger_key(), process_id=sender, module_id=probe_module, nonce=0, index=0,
                           pushed_for="P" * 43, message=fake)
    services.su_schedule(raw=forged.serialize())
    # ... and a compute unit bent to believe whatever its messenger signs records it as the sender's word.
    real_judge = Origins.judge

    def credulous(self: Origins, item, *, nonce: int, timestamp: int) -> Origin | None:  # type: ignore[no-untyped-def]
        found = real_judge(self, item, nonce=nonce, timestamp=timestamp)
        return found or (Origin(sender, 0, 0) if item.owner_address == keys.messenger_key().address else None)

    monkeypatch.setattr(Origins, "judge", credulous)
    batch.evaluate_pending(process_id=receiver)
    assert json.loads(models.Result.objects.get(process_id=receiver, nonce=1).body["Output"])["From"] == sender
    monkeypatch.setattr(Origins, "judge", real_judge)
    report = verify.verify_process(process_id=receiver)
    assert report.divergence is not None and report.divergence.what == "forged push", report.divergence
    with pytest.raises(CommandError, match="forged push"):
        call_command("ao", "verify", "--", receiver)


def test_verify_takes_the_message_count_from_the_log(ledger: str, alice: Ed25519Key) -> None:
    send(alice, ledger, "Balance")  # scheduled, not evaluated: pending, not a divergence
    report = verify.verify_process(process_id=ledger)
    assert report.ok and report.pending == 1 and report.checked == TRANSFERS + 2
    # A result for a slot the log does not have is a divergence.
    last = models.Result.objects.filter(process_id=ledger).order_by("-nonce").first()
    models.Result.objects.create(process_id=ledger, nonce=99, message_id=last.message_id, body=last.body,
                                 gas_used=0, state_hash=last.state_hash)
    report = verify.verify_process(process_id=ledger)
    assert report.divergence is not None and report.divergence.what == "result without a message"


def test_verify_lists_the_processes_whose_outboxes_it_relied_on(alice: Ed25519Key, probe_module: str) -> None:
    sender = spawn(alice, probe_module)
    receiver = spawn(alice, probe_module, [("Name", "receiver")])
    send(alice, sender, "Send", "x", To=receiver, **{"Forward-Action": "Whoami"})
    batch.evaluate_pending(process_id=sender)
    pushes.deliver_pending()
    batch.evaluate_pending(process_id=receiver)
    report = verify.verify_process(process_id=receiver)
    assert report.ok and report.sources == {sender}


def test_a_remote_item_with_zero_tags_written_as_one_byte_is_rebuilt_so_it_verifies(alice: Ed25519Key) -> None:
    """The scheduler's JSON cannot tell b"" from Avro's empty array (0x00); the rebuilt item takes the one its
    signature covers, so `verify --remote` does not call a genuine zero-tag item damaged."""
    from dataclasses import replace

    from ao import remote
    from ao.permaweb import dataitem
    from ao.selectors import item_json

    for raw_tags in (b"", b"\x00"):
        unsigned = dataitem.DataItem(2, bytes(64), alice.owner, b"", b"", (), raw_tags, b"zero tags")
        item = replace(unsigned, signature=alice.sign(dataitem.signature_data(unsigned)))
        rebuilt = remote.item_from_json(item_json(item))
        assert rebuilt.raw_tags == raw_tags and rebuilt.id == item.id and dataitem.verify(rebuilt)
    forged = remote.item_from_json({**item_json(item), "signature": item_json(item)["signature"][::-1]})
    assert not dataitem.verify(forged)
