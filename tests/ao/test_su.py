"""The scheduler unit: ordered, signed, hash-chained logs; every refusal writes nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from django.db import connection, transaction

from ao import dispatch, models, services
from ao.effects import keys
from ao.errors import (
    BadSignature,
    DuplicateMessage,
    InvalidMessage,
    MessageTooLarge,
    UnknownProcess,
    WrongScheduler,
)
from ao.permaweb import dataitem
from ao.permaweb.wallet import Ed25519Key
from ao.units import su
from tests import factories

pytestmark = pytest.mark.django_db


def _counts() -> tuple[int, int, int, int]:
    return (
        models.Entry.objects.count(),
        models.EntryTag.objects.count(),
        models.Assignment.objects.count(),
        models.Process.objects.count(),
    )


def test_spawn_is_nonce_zero_and_first_message_nonce_one(alice: Ed25519Key) -> None:
    spawn = factories.spawn_item(alice)
    first = services.su_schedule(raw=spawn.serialize())
    second = services.su_schedule(raw=factories.message_item(alice, spawn.id).serialize())
    assert (first.nonce, second.nonce) == (0, 1)
    assert first.process_id == second.process_id == spawn.id
    assert models.Process.objects.get(id=spawn.id).next_nonce == 2


def test_assignments_are_signed_items_with_ao_tags(process_id: str, alice: Ed25519Key) -> None:
    msg = factories.message_item(alice, process_id)
    assignment = services.su_schedule(raw=msg.serialize())
    item = dataitem.parse(bytes(assignment.raw))
    assert dataitem.verify(item)
    assert item.owner_address == keys.scheduler_key().address
    tags = dict(item.tags)
    assert tags["Process"] == process_id
    assert tags["Message"] == msg.id
    assert tags["Nonce"] == "1"
    assert tags["Epoch"] == "0"
    assert tags["Hash-Chain"] == assignment.hash_chain
    assert int(tags["Timestamp"]) == assignment.timestamp
    assert int(tags["Block-Height"]) == assignment.block_height
    assert item.id == assignment.id


def test_hash_chain_follows_ao_formula(process_id: str, alice: Ed25519Key) -> None:
    for _ in range(3):
        services.su_schedule(raw=factories.message_item(alice, process_id).serialize())
    log = list(models.Assignment.objects.filter(process_id=process_id).order_by("nonce"))
    assert log[0].hash_chain == su.first_hash_chain(process_id)
    for prev, cur in zip(log, log[1:]):
        assert cur.hash_chain == su.next_hash_chain(prev.id, prev.hash_chain)
    assert su.verify_chain(process_id, [(a.id, a.hash_chain) for a in log]) is None
    tampered = [(a.id, a.hash_chain) for a in log]
    tampered[2] = (tampered[2][0], tampered[1][1])
    assert su.verify_chain(process_id, tampered) == 2


def test_timestamps_never_go_backwards(process_id: str, alice: Ed25519Key) -> None:
    models.Process.objects.filter(id=process_id).update(last_timestamp=10**15)
    assignment = services.su_schedule(raw=factories.message_item(alice, process_id).serialize())
    assert assignment.timestamp == 10**15


def _resign_with_wrong_signature(item: dataitem.DataItem) -> bytes:
    other = Ed25519Key.generate()
    forged = dataitem.create_data_item(other, item.data, tags=item.tags, target=item.target_b64 or None)
    raw = bytearray(item.serialize())
    # Keep alice's owner but put another key's signature in place.
    raw[2 : 2 + 64] = forged.signature
    return bytes(raw)


REFUSALS: list[tuple[str, type[Exception], str, Callable[[Ed25519Key, str], bytes]]] = [
    (
        "bad signature",
        BadSignature,
        "signature does not verify",
        lambda k, pid: _resign_with_wrong_signature(factories.message_item(k, pid)),
    ),
    (
        "missing Data-Protocol",
        InvalidMessage,
        "missing tag Data-Protocol",
        lambda k, pid: dataitem.create_data_item(
            k, b"", tags=[("Type", "Message"), ("Action", "Ping")], target=pid
        ).serialize(),
    ),
    (
        "wrong Data-Protocol",
        InvalidMessage,
        "Data-Protocol is 'xx'",
        lambda k, pid: dataitem.create_data_item(
            k, b"", tags=[("Data-Protocol", "xx"), ("Type", "Message")], target=pid
        ).serialize(),
    ),
    (
        "missing Type",
        InvalidMessage,
        "missing tag Type",
        lambda k, pid: dataitem.create_data_item(k, b"", tags=[("Data-Protocol", "ao")], target=pid).serialize(),
    ),
    (
        "process without Module",
        InvalidMessage,
        "needs tag Module",
        lambda k, pid: dataitem.create_data_item(
            k, b"", tags=factories.ao_tags("Process", [("Scheduler", keys.scheduler_key().address)])
        ).serialize(),
    ),
    (
        "process without Scheduler",
        InvalidMessage,
        "needs tag Scheduler",
        lambda k, pid: dataitem.create_data_item(
            k, b"", tags=factories.ao_tags("Process", [("Module", factories.MODULE_ID)])
        ).serialize(),
    ),
    (
        "over 100 KiB",
        MessageTooLarge,
        "accepts at most 102400",
        lambda k, pid: factories.message_item(k, pid, data=b"x" * (100 * 1024)).serialize(),
    ),
    (
        "not a data item",
        InvalidMessage,
        "not a valid ANS-104 data item",
        lambda k, pid: b"\x01\x00garbage",
    ),
    (
        "unknown process",
        UnknownProcess,
        "no process",
        lambda k, pid: factories.message_item(k, "P" * 43).serialize(),
    ),
    (
        "message without target",
        InvalidMessage,
        "needs a Target",
        lambda k, pid: dataitem.create_data_item(k, b"", tags=factories.ao_tags("Message")).serialize(),
    ),
    (
        "spawn for another scheduler",
        WrongScheduler,
        "names scheduler",
        lambda k, pid: dataitem.create_data_item(
            k, b"", tags=factories.ao_tags("Process", [("Module", factories.MODULE_ID), ("Scheduler", "S" * 43)])
        ).serialize(),
    ),
]


@pytest.mark.parametrize(("case", "error", "text", "build"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusal_has_clear_error_and_stores_nothing(
    process_id: str,
    alice: Ed25519Key,
    case: str,
    error: type[Exception],
    text: str,
    build: Callable[[Ed25519Key, str], bytes],
) -> None:
    raw = build(alice, process_id)
    before = _counts()
    head = models.Process.objects.values("next_nonce", "last_hash_chain").get(id=process_id)
    with pytest.raises(error, match=text):
        services.su_schedule(raw=raw)
    assert _counts() == before
    assert models.Process.objects.values("next_nonce", "last_hash_chain").get(id=process_id) == head


def test_duplicate_id_is_refused_and_stores_nothing(process_id: str, alice: Ed25519Key) -> None:
    raw = factories.message_item(alice, process_id).serialize()
    services.su_schedule(raw=raw)
    before = _counts()
    with pytest.raises(DuplicateMessage, match="already"):
        services.su_schedule(raw=raw)
    assert _counts() == before


def test_duplicate_spawn_is_refused(alice: Ed25519Key) -> None:
    raw = factories.spawn_item(alice).serialize()
    services.su_schedule(raw=raw)
    before = _counts()
    with pytest.raises(DuplicateMessage):
        services.su_schedule(raw=raw)
    assert _counts() == before


def test_rsa_signed_messages_are_scheduled(process_id: str, rsa_wallet: object) -> None:
    item = factories.message_item(rsa_wallet, process_id)  # type: ignore[arg-type]
    assignment = services.su_schedule(raw=item.serialize())
    assert assignment.message.owner_address == rsa_wallet.address  # type: ignore[attr-defined]


THREADS = 4
PER_THREAD = 8


@pytest.mark.django_db(transaction=True)
def test_concurrent_submissions_leave_no_gap_and_no_repeat(node_keys: None) -> None:
    owner = Ed25519Key.generate()
    spawn = factories.spawn_item(owner)
    services.su_schedule(raw=spawn.serialize())
    items = [[factories.message_item(owner, spawn.id).serialize() for _ in range(PER_THREAD)] for _ in range(THREADS)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def submit(batch: list[bytes]) -> None:
        try:
            barrier.wait()
            for raw in batch:
                services.su_schedule(raw=raw)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(batch,)) for batch in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    log = list(models.Assignment.objects.filter(process_id=spawn.id).order_by("nonce"))
    assert [a.nonce for a in log] == list(range(THREADS * PER_THREAD + 1))
    assert len({a.message_id for a in log}) == len(log)
    assert su.verify_chain(spawn.id, [(a.id, a.hash_chain) for a in log]) is None
    timestamps = [a.timestamp for a in log]
    assert timestamps == sorted(timestamps)


def test_batch_schedules_in_order_and_answers_item_by_item(process_id: str, alice: Ed25519Key) -> None:
    spawn = factories.spawn_item(alice, extra=[("Name", "born-in-batch")])
    first = factories.message_item(alice, process_id)
    already = factories.message_item(alice, process_id)
    services.su_schedule(raw=already.serialize())
    raws = [
        first.serialize(),
        spawn.serialize(),
        factories.message_item(alice, spawn.id).serialize(),  # to the process spawned just above
        first.serialize(),  # twice in one batch
        already.serialize(),  # scheduled before
        factories.message_item(alice, "U" * 43).serialize(),  # unknown process
        _resign_with_wrong_signature(factories.message_item(alice, process_id)),
        factories.message_item(alice, process_id).serialize(),
    ]
    out = services.su_schedule_batch(raws=raws)
    kinds = [type(o).__name__ if isinstance(o, Exception) else o.nonce for o in out]
    assert kinds == [2, 0, 1, "DuplicateMessage", "DuplicateMessage", "UnknownProcess", "BadSignature", 3]
    log = list(models.Assignment.objects.filter(process_id=process_id).order_by("nonce"))
    assert [a.nonce for a in log] == [0, 1, 2, 3]
    assert su.verify_chain(process_id, [(a.id, a.hash_chain) for a in log]) is None
    assert models.Process.objects.get(id=process_id).next_nonce == 4
    assert models.Process.objects.get(id=spawn.id).next_nonce == 2


def test_batch_falls_back_to_one_by_one_when_a_concurrent_writer_wins(
    process_id: str, alice: Ed25519Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import IntegrityError

    def lost_race(*_: object) -> None:
        raise IntegrityError("duplicate key (simulated concurrent insert)")

    monkeypatch.setattr(services, "_bulk_assign", lost_race)
    raws = [factories.message_item(alice, process_id).serialize() for _ in range(3)]
    out = services.su_schedule_batch(raws=raws)
    assert [o.nonce for o in out] == [1, 2, 3]  # type: ignore[union-attr]


@pytest.mark.django_db(transaction=True)
def test_scheduling_while_a_worker_commits_cannot_deadlock(node_keys: None) -> None:
    """A worker holds the cursor and inserts a result (an FK check on the process) while a message is scheduled.

    The scheduler locks the process head and then waits for the cursor row; its lock must let the worker's
    result insert through, or PostgreSQL finds a deadlock and one of the two fails.
    """
    if connection.vendor != "postgresql":
        pytest.skip("row-lock modes are PostgreSQL's; SQLite serialises writers")
    owner = Ed25519Key.generate()
    spawn = factories.spawn_item(owner)
    services.su_schedule(raw=spawn.serialize())
    message = factories.message_item(owner, spawn.id).serialize()
    dispatch.evaluation_started(spawn.id)  # as a running worker does: the next message asks for evaluation again
    cursor_held, insert_now = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with transaction.atomic():
                models.Evaluation.objects.filter(process_id=spawn.id).update(state_hash="held")
                cursor_held.set()
                assert insert_now.wait(30)
                models.Result.objects.create(process_id=spawn.id, nonce=0, message_id=spawn.id, body={},
                                             gas_used=0, state_hash="s")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    def scheduler() -> None:
        try:
            assert cursor_held.wait(30)
            services.su_schedule(raw=message)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker), threading.Thread(target=scheduler)]
    for t in threads:
        t.start()
    try:
        with connection.cursor() as cur:
            for _ in range(3000):  # until the scheduler waits for the cursor row (it holds the process head by then)
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock'")
                if cur.fetchone()[0]:
                    break
                time.sleep(0.01)
            else:
                pytest.fail("the scheduler never waited for the worker's cursor row")
    finally:
        insert_now.set()
        for t in threads:
            t.join()
    assert errors == []
    assert models.Assignment.objects.filter(process_id=spawn.id).count() == 2
    assert models.Result.objects.filter(process_id=spawn.id).count() == 1
