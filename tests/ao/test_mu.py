"""The messenger: exactly-once delivery of outbox messages, identity from (process, nonce, index)."""

from __future__ import annotations

import pytest

from ao import models, services, tasks
from ao.effects import keys
from ao.errors import InvalidMessage
from ao.permaweb import dataitem
from ao.permaweb.wallet import Ed25519Key
from ao.units import mu
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def target_id(alice: Ed25519Key) -> str:
    """A second process, the outbox's destination."""
    item = factories.spawn_item(alice, extra=[("Name", "target")])
    services.su_schedule(raw=item.serialize())
    return item.id


def _outbox(target: str, n: int = 2) -> list[mu.OutboxMessage]:
    return [
        mu.OutboxMessage.from_json(
            {"Target": target, "Tags": [{"name": "Action", "value": "Credit-Notice"}, {"name": "N", "value": str(i)}],
             "Data": f"hello {i}"}
        )
        for i in range(n)
    ]


def _evaluated(process_id: str, alice: Ed25519Key) -> int:
    """Schedule a message on process_id and return its nonce (standing in for an evaluated one)."""
    return services.su_schedule(raw=factories.message_item(alice, process_id).serialize()).nonce


def test_outbox_is_delivered_exactly_once_when_recorded_and_delivered_twice(
    process_id: str, target_id: str, alice: Ed25519Key
) -> None:
    nonce = _evaluated(process_id, alice)
    services.mu_record_outbox(process_id=process_id, nonce=nonce, messages=_outbox(target_id))
    services.mu_record_outbox(process_id=process_id, nonce=nonce, messages=_outbox(target_id))
    assert models.Push.objects.count() == 2
    assert services.mu_deliver_pending() == 2
    assert services.mu_deliver_pending() == 0
    log = models.Assignment.objects.filter(process_id=target_id).order_by("nonce")
    assert [a.nonce for a in log] == [0, 1, 2]
    assert set(models.Push.objects.values_list("state", flat=True)) == {"delivered"}


def test_a_push_scheduled_before_a_crash_is_not_scheduled_again(
    process_id: str, target_id: str, alice: Ed25519Key
) -> None:
    nonce = _evaluated(process_id, alice)
    [push, _] = services.mu_record_outbox(process_id=process_id, nonce=nonce, messages=_outbox(target_id))
    # The worker scheduled the item, then died before marking the push delivered.
    services.su_schedule(raw=bytes(push.raw))
    assert services.mu_deliver_pending() == 2  # both now marked delivered; the first only once scheduled
    push.refresh_from_db()
    assert push.state == models.Push.State.DELIVERED
    assert models.Assignment.objects.filter(process_id=target_id).count() == 3


def test_rebuilt_push_has_the_same_id(process_id: str, target_id: str) -> None:
    message = _outbox(target_id, 1)[0]
    build = lambda: mu.build_push(  # noqa: E731
        keys.messenger_key(), process_id=process_id, module_id=factories.MODULE_ID, nonce=3, index=0,
        pushed_for=process_id, message=message,
    )
    assert build().id == build().id
    other = mu.build_push(
        keys.messenger_key(), process_id=process_id, module_id=factories.MODULE_ID, nonce=3, index=1,
        pushed_for=process_id, message=message,
    )
    assert other.id != build().id


def test_pushed_message_carries_origin_tags_and_drops_forged_ones(
    process_id: str, target_id: str, alice: Ed25519Key
) -> None:
    nonce = _evaluated(process_id, alice)
    forged = mu.OutboxMessage.from_json(
        {"Target": target_id, "Tags": [{"name": "From-Process", "value": "F" * 43}, {"name": "Action", "value": "X"}]}
    )
    [push] = services.mu_record_outbox(process_id=process_id, nonce=nonce, messages=[forged])
    item = dataitem.parse(bytes(push.raw))
    tags = item.tags
    assert ("From-Process", process_id) in tags
    assert ("From-Process", "F" * 43) not in tags
    assert ("From-Module", factories.MODULE_ID) in tags
    source = models.Assignment.objects.get(process_id=process_id, nonce=nonce).message.id
    assert ("Pushed-For", source) in tags
    assert item.owner_address == keys.messenger_key().address
    assert item.target_b64 == target_id


def test_pushed_for_follows_a_chain_to_its_root(process_id: str, target_id: str, alice: Ed25519Key) -> None:
    nonce = _evaluated(process_id, alice)
    root = models.Assignment.objects.get(process_id=process_id, nonce=nonce).message.id
    services.mu_record_outbox(process_id=process_id, nonce=nonce, messages=_outbox(target_id, 1))
    services.mu_deliver_pending()
    hop = models.Assignment.objects.get(process_id=target_id, nonce=1)
    [second] = services.mu_record_outbox(process_id=target_id, nonce=1, messages=_outbox(process_id, 1))
    assert ("Pushed-For", root) in dataitem.parse(bytes(second.raw)).tags
    assert hop.message.id != root


def test_push_to_an_unknown_process_fails_after_bounded_attempts(process_id: str, alice: Ed25519Key) -> None:
    nonce = _evaluated(process_id, alice)
    [push] = services.mu_record_outbox(process_id=process_id, nonce=nonce, messages=_outbox("U" * 43, 1))
    for _ in range(services.MAX_PUSH_ATTEMPTS):
        assert services.mu_deliver_pending() == 0
    push.refresh_from_db()
    assert push.state == models.Push.State.FAILED
    assert push.attempts == services.MAX_PUSH_ATTEMPTS
    assert "no process" in push.error


def test_outbox_message_without_valid_target_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="no valid Target"):
        mu.OutboxMessage.from_json({"Target": "short", "Tags": []})


def test_deliver_task_run_twice_delivers_once(process_id: str, target_id: str, alice: Ed25519Key) -> None:
    nonce = _evaluated(process_id, alice)
    services.mu_record_outbox(process_id=process_id, nonce=nonce, messages=_outbox(target_id, 3))
    assert tasks.deliver_pushes.apply(args=(process_id,)).get() == 3
    assert tasks.deliver_pushes.apply(args=(process_id,)).get() == 0
    assert models.Assignment.objects.filter(process_id=target_id).count() == 4
