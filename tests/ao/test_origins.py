"""No key alone can make a process say something: a push is its source's word only as an outbox entry of the
source's recorded result, accepted once, and only from a messenger the receiving process named at its spawn."""

from __future__ import annotations

import json

import pytest

from ao import models, services, verify
from ao.compute import batch, health, pushes
from ao.effects import keys
from ao.errors import HostFault
from ao.permaweb import dataitem
from ao.permaweb.wallet import Ed25519Key
from ao.units import mu, su
from tests import factories
from tests.ao.test_cu import send, spawn

pytestmark = pytest.mark.django_db


def whoami(pid: str, nonce: int) -> dict:
    """What the probe saw as From of the message at `nonce` (its Whoami handler prints it)."""
    batch.evaluate_pending(process_id=pid)
    return json.loads(models.Result.objects.get(process_id=pid, nonce=nonce).body["Output"])


def genuine_pair(alice: Ed25519Key, probe_module: str, extra: list[tuple[str, str]] | None = None
                 ) -> tuple[str, str, mu.OutboxMessage, int]:
    """A sender and a receiver; the sender's message 1 sends one Whoami to the receiver, delivered and evaluated."""
    sender = spawn(alice, probe_module)
    receiver = spawn(alice, probe_module, [("Name", "receiver"), *(extra or [])])
    send(alice, sender, "Send", "payload", To=receiver, **{"Forward-Action": "Whoami"})
    batch.evaluate_pending(process_id=sender)
    batch.evaluate_pending(process_id=receiver)
    pushes.deliver_pending()
    [outbox] = models.Result.objects.get(process_id=sender, nonce=1).body["Messages"]
    return sender, receiver, mu.OutboxMessage.from_json(outbox), 1


def forge(signer: Ed25519Key, *, source: str, nonce: int, index: int, message: mu.OutboxMessage,
          pushed_for: str, module: str, anchor: bytes | None = None) -> dataitem.DataItem:
    """An item as the messenger would build it for (source, nonce, index), signed by `signer`."""
    item = mu.build_push(signer, process_id=source, module_id=module, nonce=nonce, index=index,
                         pushed_for=pushed_for, message=message)
    if anchor is None:
        return item
    return dataitem.create_data_item(signer, item.data, tags=list(item.tags), target=item.target_b64, anchor=anchor)


def test_the_genuine_push_is_the_senders_word(alice: Ed25519Key, probe_module: str) -> None:
    sender, receiver, _, nonce = genuine_pair(alice, probe_module)
    out = whoami(receiver, 1)
    assert out["From"] == sender and out["Forwarded-By"] == keys.messenger_key().address
    recorded = models.Result.objects.get(process_id=receiver, nonce=1)
    assert recorded.origin == f"{sender}/{nonce}/0"
    assert models.Result.objects.get(process_id=sender, nonce=nonce).pushed_for == models.Assignment.objects.get(
        process_id=sender, nonce=nonce).message.id
    assert verify.verify_process(process_id=receiver).ok


def test_pushes_forged_with_the_messenger_key_are_the_messengers_own(alice: Ed25519Key, probe_module: str) -> None:
    sender, receiver, genuine, nonce = genuine_pair(alice, probe_module)
    messenger = keys.messenger_key()
    module = models.Process.objects.get(id=sender).module
    root = models.Result.objects.get(process_id=sender, nonce=nonce).pushed_for
    said = mu.OutboxMessage(target=receiver, tags=(("Action", "Whoami"), ("Amount", "1000000")), data=b"forged")
    forgeries = {
        "words the sender never said": forge(messenger, source=sender, nonce=nonce, index=0, message=said,
                                             pushed_for=root, module=module),
        "a random anchor": forge(messenger, source=sender, nonce=nonce, index=0, message=genuine, pushed_for=root,
                                 module=module, anchor=b"r" * 32),
        "an outbox entry that does not exist": forge(messenger, source=sender, nonce=nonce, index=1,
                                                     message=genuine, pushed_for=root, module=module),
        "a message the sender has not received": forge(messenger, source=sender, nonce=99, index=0,
                                                        message=genuine, pushed_for=root, module=module),
        "another Pushed-For (a second petition from one payment)": forge(
            messenger, source=sender, nonce=nonce, index=0, message=genuine, pushed_for="P" * 43, module=module),
        "a message of the spawn (no outbox)": forge(messenger, source=sender, nonce=0, index=0, message=genuine,
                                                    pushed_for=root, module=module),
    }
    first = models.Assignment.objects.filter(process_id=receiver).count()
    for item in forgeries.values():
        services.su_schedule(raw=item.serialize())
    for offset, what in enumerate(forgeries):
        out = whoami(receiver, first + offset)
        assert out["From"] == messenger.address and out["Forwarded-By"] is None, what
        assert models.Result.objects.get(process_id=receiver, nonce=first + offset).origin == "", what
    assert verify.verify_process(process_id=receiver).ok


def test_the_same_outbox_entry_is_accepted_once(alice: Ed25519Key, probe_module: str) -> None:
    # The receiver trusts two messengers; the second signs the very push the first delivered: a replay.
    other = Ed25519Key.generate()
    sender, receiver, genuine, nonce = genuine_pair(alice, probe_module, [("Authority", other.address)])
    assert whoami(receiver, 1)["From"] == sender
    module = models.Process.objects.get(id=sender).module
    root = models.Result.objects.get(process_id=sender, nonce=nonce).pushed_for
    replay = forge(other, source=sender, nonce=nonce, index=0, message=genuine, pushed_for=root, module=module)
    services.su_schedule(raw=replay.serialize())
    out = whoami(receiver, 2)
    assert out["From"] == other.address, "a second copy of one outbox entry must not count as the sender's"
    assert models.Result.objects.get(process_id=receiver, nonce=2).origin == ""
    assert verify.verify_process(process_id=receiver).ok


def test_a_push_naming_a_message_not_evaluated_yet_waits_for_it(alice: Ed25519Key, probe_module: str) -> None:
    sender, receiver, genuine, _ = genuine_pair(alice, probe_module)
    whoami(receiver, 1)
    # Scheduled on the sender, not evaluated: its outbox will be exactly this (the probe's Send is deterministic).
    later = send(alice, sender, "Send", "payload", To=receiver, **{"Forward-Action": "Whoami"})
    module = models.Process.objects.get(id=sender).module
    early = forge(keys.messenger_key(), source=sender, nonce=2, index=0, message=genuine, pushed_for=later,
                  module=module)
    services.su_schedule(raw=early.serialize())
    with pytest.raises(HostFault, match="not evaluated yet"):
        batch.evaluate_pending(process_id=receiver)
    assert not models.Result.objects.filter(process_id=receiver, nonce=2).exists()
    assert health.process_health(receiver).fault
    # Once the sender has evaluated it, the answer is what the log says: the push is exactly that outbox entry.
    batch.evaluate_pending(process_id=sender)
    assert whoami(receiver, 2)["From"] == sender
    pushes.deliver_pending()  # the messenger's own copy is the same item: the scheduler drops it as a duplicate
    assert models.Assignment.objects.filter(process_id=receiver).count() == 3
    assert verify.verify_process(process_id=receiver).ok


def test_a_process_that_names_no_authority_hears_pushes_as_the_messenger(alice: Ed25519Key, probe_module: str
                                                                         ) -> None:
    sender = spawn(alice, probe_module)
    tags = [("Data-Protocol", su.DATA_PROTOCOL), ("Variant", su.VARIANT), ("Type", "Process"),
            ("Module", probe_module), ("Scheduler", keys.scheduler_key().address)]
    spawn_item = dataitem.create_data_item(alice, b"", tags=tags, anchor=b"n" * 32)
    receiver = services.su_schedule(raw=spawn_item.serialize()).process_id
    send(alice, sender, "Send", "payload", To=receiver, **{"Forward-Action": "Whoami"})
    batch.evaluate_pending(process_id=sender)
    pushes.deliver_pending()
    assert whoami(receiver, 1)["From"] == keys.messenger_key().address


def test_spawns_on_this_node_name_its_messenger(alice: Ed25519Key, probe_module: str) -> None:
    item = factories.spawn_item(alice, module=probe_module)
    assert ("Authority", keys.messenger_key().address) in list(item.tags)
