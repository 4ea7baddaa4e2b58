"""The messenger: outboxes checked with their result, every push recorded, delivered exactly once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from django.utils import timezone

from ao import models, services, tasks
from ao.compute import pushes
from ao.effects import keys
from ao.effects.stores import embedded_store
from ao.permaweb import dataitem
from ao.permaweb.wallet import Ed25519Key
from ao.units import mu, su
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


def _catch_up(process_id: str, nonce: int) -> None:
    """Commit every message before `nonce` as evaluated with an empty outbox (the module is a stand-in)."""
    cursor = models.Evaluation.objects.get(process_id=process_id).next_nonce
    for earlier in range(cursor, nonce):
        factories.record_outbox(process_id, earlier, [])


def _evaluated(process_id: str, alice: Ed25519Key) -> int:
    """Schedule a message on process_id and return its nonce, the next one the compute unit commits."""
    nonce = services.su_schedule(raw=factories.message_item(alice, process_id).serialize()).nonce
    _catch_up(process_id, nonce)
    return nonce


def _built(push: models.Push) -> dataitem.DataItem:
    """The item delivery built for a push (kept in the store, or scheduled on its target's log)."""
    push.refresh_from_db()
    assert push.item_id, "the push was not delivered yet"
    return embedded_store().get_item(push.item_id)


def test_outbox_is_delivered_exactly_once_when_delivery_runs_twice(
    process_id: str, target_id: str, alice: Ed25519Key
) -> None:
    nonce = _evaluated(process_id, alice)
    factories.record_outbox(process_id, nonce, _outbox(target_id))
    assert pushes.deliver_pending().delivered == 2
    assert pushes.deliver_pending().delivered == 0
    log = models.Assignment.objects.filter(process_id=target_id).order_by("nonce")
    assert [a.nonce for a in log] == [0, 1, 2]
    assert set(models.Push.objects.values_list("state", flat=True)) == {"delivered"}


def test_a_push_scheduled_before_a_crash_is_not_scheduled_again(
    process_id: str, target_id: str, alice: Ed25519Key
) -> None:
    nonce = _evaluated(process_id, alice)
    outbox = _outbox(target_id)
    [first, _] = factories.record_outbox(process_id, nonce, outbox)
    # A worker scheduled the item, then died before marking the push (its transaction never committed the mark).
    item = mu.build_push(keys.messenger_key(), process_id=process_id, module_id=factories.MODULE_ID, nonce=nonce,
                         index=0, pushed_for=first.pushed_for, message=outbox[0])
    services.su_schedule(raw=item.serialize())
    assert pushes.deliver_pending().delivered == 2  # both marked delivered; the first one scheduled only once
    assert _built(first).id == item.id
    assert models.Assignment.objects.filter(process_id=target_id).count() == 3


def test_a_claimed_push_waits_for_its_claim_to_run_out(process_id: str, target_id: str, alice: Ed25519Key) -> None:
    nonce = _evaluated(process_id, alice)
    [push] = factories.record_outbox(process_id, nonce, _outbox(target_id, 1))
    models.Push.objects.filter(id=push.id).update(claimed_by="another worker",
                                                  claimed_until=timezone.now() + timedelta(seconds=60))
    assert pushes.deliver_pending().delivered == 0  # another worker holds it
    models.Push.objects.filter(id=push.id).update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert pushes.deliver_pending().delivered == 1  # that worker died: its claim ran out
    assert models.Assignment.objects.filter(process_id=target_id).count() == 2


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
    [push] = factories.record_outbox(process_id, nonce, [forged])
    pushes.deliver_pending()
    item = _built(push)
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
    factories.record_outbox(process_id, nonce, _outbox(target_id, 1))
    pushes.deliver_pending()
    hop = models.Assignment.objects.get(process_id=target_id, nonce=1)
    _catch_up(target_id, 1)
    [second] = factories.record_outbox(target_id, 1, _outbox(process_id, 1))
    pushes.deliver_pending()
    assert ("Pushed-For", root) in _built(second).tags
    assert hop.message.id != root


def test_push_to_a_target_without_a_process_here_is_kept_in_the_store(process_id: str, alice: Ed25519Key) -> None:
    wallet = Ed25519Key.generate().address
    nonce = _evaluated(process_id, alice)
    [push] = factories.record_outbox(process_id, nonce, _outbox(wallet, 1))
    report = pushes.deliver_pending()
    assert (report.stored, report.delivered) == (1, 0)
    assert pushes.deliver_pending().stored == 0
    push.refresh_from_db()
    assert push.state == models.Push.State.STORED and push.delivered_at is not None
    kept = models.Entry.objects.get(id=push.item_id)
    assert kept.target == wallet  # the recipient finds it by GraphQL `recipients`
    assert not models.Assignment.objects.filter(message_id=kept.pk).exists()


def test_deliver_task_run_twice_delivers_once(process_id: str, target_id: str, alice: Ed25519Key) -> None:
    nonce = _evaluated(process_id, alice)
    factories.record_outbox(process_id, nonce, _outbox(target_id, 3))
    assert tasks.deliver_pushes.apply(args=(process_id,)).get() == 3
    assert tasks.deliver_pushes.apply(args=(process_id,)).get() == 0
    assert models.Assignment.objects.filter(process_id=target_id).count() == 4


# -- the outbox is checked with its result --------------------------------------------------------------------


def _message(*, tags: list[tuple[str, str]] | None = None, data: str = "", target: str = "T" * 43) -> dict:
    return {"Target": target, "Tags": [{"name": n, "value": v} for n, v in (tags or [])], "Data": data}


@pytest.mark.parametrize(("message", "reason"), [
    (_message(tags=[(f"X-{i}", "v") for i in range(101)]), "carries at most 100"),
    (_message(tags=[(f"X-{i}", "v" * 380) for i in range(11)]), "4096-byte limit"),
    (_message(data="x" * 200 * 1024), "the scheduler takes at most 102400"),
    (_message(target="not-an-id"), "no valid Target"),
    (_message(tags=[("Action", 5)]), "not {name, value} strings"),  # type: ignore[list-item]
    ({"Target": "T" * 43, "Data": b"bytes"}, "Data must be a string"),
])
def test_an_outbox_message_that_cannot_be_pushed_is_refused_with_its_index(message: dict, reason: str) -> None:
    with pytest.raises(mu.OutboxError, match=reason) as caught:
        mu.validate_outbox([_message(), message])
    assert "outbox message 1 cannot be sent" in str(caught.value)


def test_the_outbox_check_computes_the_exact_size_of_the_pushed_item() -> None:
    for tags, data in [([], ""), ([("Action", "Transfer"), ("X-Note", "é" * 200)], "payload" * 1000)]:
        [message] = mu.validate_outbox([_message(tags=tags, data=data)])
        item = mu.build_push(keys.messenger_key(), process_id="P" * 43, module_id="M" * 43, nonce=7, index=2,
                             pushed_for="R" * 43, message=message)
        raw = item.serialize()
        assert mu.push_size(message, len(item.raw_tags)) == len(raw)


def test_the_largest_outbox_message_the_check_allows_is_taken_by_the_scheduler(node_keys: None, db: None) -> None:
    overhead = mu.push_size(mu.OutboxMessage(target="T" * 43, tags=(), data=b""), 0)
    probe = mu.OutboxMessage(target="T" * 43, tags=(), data=b"")
    tag_bytes = len(mu.build_push(keys.messenger_key(), process_id="P" * 43, module_id="M" * 43, nonce=0, index=0,
                                  pushed_for="R" * 43, message=probe).raw_tags)
    room = mu.MAX_PUSH_BYTES - overhead - tag_bytes
    [fits] = mu.validate_outbox([_message(data="x" * room)])
    with pytest.raises(mu.OutboxError):
        mu.validate_outbox([_message(data="x" * (room + 1))])
    item = mu.build_push(keys.messenger_key(), process_id="P" * 43, module_id="M" * 43, nonce=0, index=0,
                         pushed_for="R" * 43, message=fits)
    assert len(item.serialize()) == mu.MAX_PUSH_BYTES
    su.check_size(item.serialize(), settings.AO["MAX_MESSAGE_BYTES"])  # the intake limit admits it


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.sampled_from(sorted(mu.RESERVED_TAGS)), st.text(max_size=70)),
                          st.text(max_size=70)), max_size=70))
def test_a_push_is_measured_the_same_by_arithmetic_and_by_encoding(tags: list[tuple[str, str]]) -> None:
    from ao.permaweb import tags as tag_codec

    message = mu.OutboxMessage("t" * 43, tuple(tags), b"")
    fast = mu._short_push_tag_bytes(message)
    probe = mu.push_tags(message, process_id="p" * 43, module_id="m" * 43, pushed_for="f" * 43)
    try:
        exact: int | None = tag_codec.encoded_length(probe)
    except tag_codec.TagError:
        exact = None
    if fast is not None:  # the shortcut answers only the common case, and then exactly
        assert fast == exact
    if all(0 < len(n.encode()) < 64 and len(v.encode()) < 64 for n, v in tags) and len(tags) < 40:
        assert fast == exact  # ... which covers ordinary outboxes
