"""The compute unit cannot be bent: poison outboxes are their message's error, faults never record, fuel is a
function of the log, limits never exceed the module's, leases and compare-and-set keep history single."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError
from django.utils import timezone

from ao import dispatch, models, services, verify
from ao.compute import batch, context, health, lease, message, sweep
from ao.compute.context import process_context
from ao.compute.origins import Origins
from ao.effects import compute as runtimes
from ao.effects.process_state import BatchState
from ao.effects.stores import embedded_store
from ao.errors import HostFault
from ao.permaweb import transaction as l1
from ao.permaweb.wallet import Ed25519Key, Wallet
from tests import factories
from tests.ao.test_cu import send, spawn, state, tags_of
from tests.conftest import PROBE_COMPUTE_LIMIT

pytestmark = pytest.mark.django_db


def balances(pid: str) -> dict[str, str]:
    return {k: v for k, v in state(pid).items() if k.startswith("balance/")}


def result_of(pid: str, message_id: str) -> models.Result:
    return models.Result.objects.get(process_id=pid, message_id=message_id)


# -- poison input is that message's own error ------------------------------------------------------------------


@pytest.mark.parametrize("x_tags", [
    {f"X-{i}": "v" for i in range(98)},  # the notices would carry more than ANS-104's 128 tags
    {f"X-{i}": "v" * 380 for i in range(10)},  # taken in (4,019 tag bytes); the notices' would pass 4096
], ids=["98-short-x-tags", "over-4096-tag-bytes"])
def test_a_transfer_whose_notices_cannot_be_pushed_fails_alone(
    alice: Ed25519Key, ledger_module: str, x_tags: dict[str, str]
) -> None:
    pid = spawn(alice, ledger_module)
    bob, carol = Ed25519Key.generate(), Ed25519Key.generate()
    send(alice, pid, "Mint", Quantity="10")
    send(alice, pid, "Transfer", Recipient=bob.address, Quantity="4")
    batch.evaluate_pending(process_id=pid)
    before = balances(pid)
    poison = send(alice, pid, "Transfer", Recipient=carol.address, Quantity="1", **x_tags)
    after = send(bob, pid, "Transfer", Recipient=carol.address, Quantity="2")
    batch.evaluate_pending(process_id=pid)
    failed = result_of(pid, poison)
    assert "outbox message" in failed.error and "cannot be sent" in failed.error
    assert failed.body["Messages"] == []
    assert balances(pid) == {**before, f"balance/{bob.address}": '"2"', f"balance/{carol.address}": '"2"'}
    ok = result_of(pid, after)
    assert ok.error == "" and [tags_of(m)["Action"] for m in ok.body["Messages"]] == ["Debit-Notice", "Credit-Notice"]
    assert not models.Push.objects.filter(process_id=pid, nonce=failed.nonce).exists()
    assert verify.verify_process(process_id=pid).ok


def test_an_outbox_message_over_the_scheduler_limit_fails_its_message_alone(
    alice: Ed25519Key, probe_module: str
) -> None:
    pid = spawn(alice, probe_module)
    big = send(alice, pid, "Send-Big", To=alice.address, Size=str(200 * 1024))
    after = send(alice, pid, "Set", "fine", Key="k")
    batch.evaluate_pending(process_id=pid)
    assert "the scheduler takes at most 102400" in result_of(pid, big).error
    assert result_of(pid, after).error == "" and json.loads(state(pid)["k"]) == "fine"
    assert not models.Push.objects.filter(process_id=pid).exists()


def test_a_spawn_that_can_never_run_gives_every_message_its_error(alice: Ed25519Key, ledger_module: str) -> None:
    pid = spawn(alice, ledger_module, [("Memory-Limit", "lots")])
    later = send(alice, pid, "Mint", Quantity="1")
    assert batch.evaluate_pending(process_id=pid) == 2
    assert "this process cannot run" in result_of(pid, later).error and "Memory-Limit" in result_of(pid, later).error
    assert health.process_health(pid).state == "current"  # type: ignore[union-attr]


# -- limits -----------------------------------------------------------------------------------------------------


def test_a_spawn_can_lower_the_modules_limits_but_never_raise_them(alice: Ed25519Key, probe_module: str) -> None:
    greedy = spawn(alice, probe_module, [("Compute-Limit", "9000000000000"), ("Memory-Limit", "16-gb")])
    modest = spawn(alice, probe_module, [("Compute-Limit", "1000000"), ("Memory-Limit", "64-mb")])
    assert (process_context(greedy).fuel, process_context(greedy).memory_limit) == (PROBE_COMPUTE_LIMIT, 1024**3)
    assert (process_context(modest).fuel, process_context(modest).memory_limit) == (1_000_000, 64 * 1024**2)


# -- fuel is a function of the log ------------------------------------------------------------------------------


WORK = "500"


def _fresh_worker() -> None:
    """What a restarted worker has: a runtime with no warm instances."""
    runtimes._local.components = runtimes.fresh_component_runtime()


def _redo_from(pid: str, nonce: int) -> list[models.Result]:
    """Forget the results from `nonce` on (as if never evaluated) and evaluate them again on a fresh worker."""
    gone = list(models.Result.objects.filter(process_id=pid, nonce__gte=nonce).order_by("nonce"))
    previous = models.Result.objects.get(process_id=pid, nonce=nonce - 1)
    for result in reversed(gone):  # the state as it was before `nonce`
        for key, old in (result.undo or {}).items():
            if old is None:
                models.StateEntry.objects.filter(process_id=pid, key=key).delete()
            else:
                models.StateEntry.objects.update_or_create(process_id=pid, key=key, defaults={"value": old})
    models.Result.objects.filter(process_id=pid, nonce__gte=nonce).delete()
    window_start = nonce - nonce % process_context(pid).window
    models.Evaluation.objects.filter(process_id=pid).update(next_nonce=nonce, state_hash=previous.state_hash,
                                                            window_start=window_start)
    _fresh_worker()
    batch.evaluate_pending(process_id=pid)
    return gone


def _same(a: models.Result, b: models.Result) -> bool:
    return (a.body, a.error, a.gas_used, a.state_hash) == (b.body, b.error, b.gas_used, b.state_hash)


def test_near_the_compute_limit_a_fresh_and_a_warm_worker_record_the_same(alice: Ed25519Key, probe_module: str) -> None:
    def run(pid: str) -> list[str]:
        ids = [send(alice, pid, "Set", "a", Key="k"), send(alice, pid, "Set", "b", Key="k"),
               send(alice, pid, "Work", N=WORK)]
        batch.evaluate_pending(process_id=pid)
        return ids

    # Calibrate: the Work message costs more on a cold instance than where the window rule runs it.
    calibration = spawn(alice, probe_module)
    ids = run(calibration)
    recorded = list(models.Result.objects.filter(process_id=calibration).order_by("nonce"))
    most = max(r.gas_used for r in recorded)
    assignment = models.Assignment.objects.select_related("message").get(process_id=calibration, message__id=ids[-1])
    pctx = process_context(calibration)
    cold = message.evaluate_message(runtimes.fresh_component_runtime(), pctx, BatchState(calibration), assignment,
                                    "0" * 64, origins=Origins(calibration, pctx.trusted_pushers), instance_key=None,
                                    fresh=True).gas_used
    assert cold - most > 50_000, (cold, most)
    limit = (most + cold) // 2  # enough for every message where the rule runs it, too little on a cold instance

    pid = spawn(alice, probe_module, [("Compute-Limit", str(limit))])
    ids = run(pid)
    warm = result_of(pid, ids[-1])
    assert warm.error == ""
    [again] = [r for r in _redo_from(pid, warm.nonce) if r.nonce == warm.nonce]
    assert _same(result_of(pid, ids[-1]), again)
    report = verify.verify_process(process_id=pid)  # a replay from genesis compares GasUsed too
    assert report.ok and report.checked == 4, report.divergence


def test_a_fresh_worker_mid_window_rebuilds_the_instance_from_the_recorded_undo(
    alice: Ed25519Key, probe_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context, "INSTANCE_WINDOW", 16)  # short windows, so the test crosses one quickly
    pid = spawn(alice, probe_module)
    window = process_context(pid).window
    for i in range(window + 10):  # into the second window, overwriting the same keys
        if i % 3:
            send(alice, pid, "Set", f"v{i}", Key=f"k{i % 4}")
        else:
            send(alice, pid, "Work", N="50")
    batch.evaluate_pending(process_id=pid)
    before = {r.nonce: r for r in models.Result.objects.filter(process_id=pid)}
    final_state = state(pid)
    for redone in _redo_from(pid, window + 6):
        assert _same(models.Result.objects.get(process_id=pid, nonce=redone.nonce), before[redone.nonce])
    assert state(pid) == final_state
    assert verify.verify_process(process_id=pid).ok


# -- faults stall; they are never recorded ----------------------------------------------------------------------


def test_a_message_past_the_wall_clock_limit_is_a_fault_not_a_result(
    alice: Ed25519Key, probe_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = spawn(alice, probe_module, [("Compute-Limit", "2000000000")])
    batch.evaluate_pending(process_id=pid)
    loop = send(alice, pid, "Loop")
    monkeypatch.setattr(message, "MESSAGE_WALL_S", 0.05)  # this node is far too slow for the message
    with pytest.raises(HostFault, match="wall-clock safety limit"):
        batch.evaluate_pending(process_id=pid)
    assert not models.Result.objects.filter(process_id=pid, message_id=loop).exists()
    assert "looping" not in json.dumps(state(pid))
    monkeypatch.undo()
    batch.evaluate_pending(process_id=pid)  # a machine fast enough records the deterministic outcome
    assert "out of fuel" in result_of(pid, loop).error
    assert verify.verify_process(process_id=pid).ok


def test_a_database_error_while_reading_state_is_a_fault(
    alice: Ed25519Key, ledger_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = spawn(alice, ledger_module)
    batch.evaluate_pending(process_id=pid)
    mint = send(alice, pid, "Mint", Quantity="5")

    def broken(self: BatchState, key: str) -> str | None:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(BatchState, "before_message", broken)
    with pytest.raises(HostFault, match="server closed the connection"):
        batch.evaluate_pending(process_id=pid)
    assert not models.Result.objects.filter(process_id=pid, message_id=mint).exists()
    monkeypatch.undo()
    batch.evaluate_pending(process_id=pid)
    assert result_of(pid, mint).error == "" and json.loads(state(pid)["supply"]) == "5"


def test_admitted_data_this_node_does_not_hold_is_a_fault_until_it_arrives(
    alice: Ed25519Key, probe_module: str, rsa_wallet: Wallet
) -> None:
    data = b"weights that arrive late" * 100
    tx = l1.sign(l1.build(data=data), rsa_wallet)
    pid = spawn(alice, probe_module, [("Extension", "WeaveDrive")])
    services.su_attest(process_id=pid, tx_id=tx.id)  # attested on the log; the bytes are elsewhere
    mid = send(alice, pid, "Weave-Read", Path=f"/data/{tx.id}", Offset="0", Length="7")
    with pytest.raises(HostFault, match="does not hold it"):
        batch.evaluate_pending(process_id=pid)
    assert not models.Result.objects.filter(process_id=pid, message_id=mid).exists()
    embedded_store().put_transaction(tx.to_header(include_data=False), data)
    batch.evaluate_pending(process_id=pid)
    assert json.loads(result_of(pid, mid).body["Output"])["hex"] == data[:7].hex()


def test_a_gap_in_the_log_stalls_the_process_visibly(alice: Ed25519Key, ledger_module: str) -> None:
    pid = spawn(alice, ledger_module)
    first = send(alice, pid, "Mint", Quantity="1")
    send(alice, pid, "Mint", Quantity="1")
    models.Assignment.objects.filter(process_id=pid, nonce=1).delete()
    for _ in range(health.STALL_AFTER):
        with pytest.raises(HostFault, match="gap at nonce 1"):
            batch.evaluate_pending(process_id=pid)
    assert models.Result.objects.filter(process_id=pid).count() == 1  # the spawn, before the gap
    assert not models.Result.objects.filter(message_id=first).exists()
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 process"):
        call_command("ao", "status", "--", pid, stdout=out)
    assert "stalled" in out.getvalue() and "gap at nonce 1" in out.getvalue()


def test_a_worker_respects_the_backoff_and_the_sweeper_retries_after_it(alice: Ed25519Key, ledger_module: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pid = spawn(alice, ledger_module)
    batch.evaluate_pending(process_id=pid)
    send(alice, pid, "Mint", Quantity="1")
    monkeypatch.setattr(BatchState, "before_message", lambda self, key: (_ for _ in ()).throw(OperationalError("x")))
    assert batch.evaluate_process(process_id=pid).fault
    monkeypatch.undo()
    assert batch.evaluate_process(process_id=pid).backing_off  # a task arriving early waits for the retry time
    models.Evaluation.objects.filter(process_id=pid).update(retry_at=timezone.now() - timedelta(seconds=1))
    assert pid in sweep.sweep(grace_s=0).evaluations
    assert batch.evaluate_process(process_id=pid).evaluated == 1


# -- leases and compare-and-set ---------------------------------------------------------------------------------


def test_a_held_lease_keeps_other_workers_out_until_it_expires(process_id: str) -> None:
    assert lease.claim(process_id, "worker-a")
    assert not lease.claim(process_id, "worker-b")
    assert batch.evaluate_process(process_id=process_id).busy
    models.Evaluation.objects.filter(process_id=process_id).update(lease_expires_at=timezone.now())
    assert lease.claim(process_id, "worker-b")  # worker-a died: its lease ran out


def test_a_batch_whose_lease_was_taken_is_discarded(
    alice: Ed25519Key, ledger_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = spawn(alice, ledger_module)
    batch.evaluate_pending(process_id=pid)
    mint = send(alice, pid, "Mint", Quantity="3")
    real = message.evaluate_message

    def stolen(*args: object, **kwargs: object) -> message.Evaluated:
        # While this worker evaluates, its lease runs out and another worker takes the process.
        models.Evaluation.objects.filter(process_id=pid).update(lease_holder="another-worker")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(batch, "evaluate_message", stolen)
    report = batch.evaluate_process(process_id=pid)
    assert report.evaluated == 0 and not report.fault
    assert not models.Result.objects.filter(message_id=mint).exists() and json.loads(state(pid)["supply"]) == "0"
    monkeypatch.undo()
    models.Evaluation.objects.filter(process_id=pid).update(lease_holder="", lease_expires_at=None)
    assert batch.evaluate_pending(process_id=pid) == 1
    assert json.loads(state(pid)["supply"]) == "3"


# -- work requests are coalesced; the sweeper finds what the broker lost ---------------------------------------


def test_a_stream_of_messages_queues_one_evaluation(
    alice: Ed25519Key, ledger_module: str, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks
) -> None:
    sent: list[tuple[str, tuple[object, ...]]] = []
    monkeypatch.setattr(dispatch, "enqueue", lambda name, *args: sent.append((name, args)))
    with django_capture_on_commit_callbacks(execute=True):
        pid = spawn(alice, ledger_module)
        for _ in range(50):
            send(alice, pid, "Mint", Quantity="1")
        services.su_schedule_batch(raws=[factories.message_item(alice, pid, action="Mint", extra=[("Quantity", "1")])
                                         .serialize() for _ in range(20)])
    assert sent == [(dispatch.EVALUATE_TASK, (pid,))]
    assert batch.evaluate_process(process_id=pid).evaluated == 71  # the task clears the mark first
    assert sent[1:] == [(dispatch.DELIVER_TASK, (pid,))]  # the notices of every batch: one delivery queued
    send(alice, pid, "Mint", Quantity="1")
    assert sent[2:] == [(dispatch.EVALUATE_TASK, (pid,))]  # a new message queues a new run


def test_the_sweeper_requeues_evaluation_and_delivery_the_broker_lost(alice: Ed25519Key, probe_module: str) -> None:
    sender, receiver = spawn(alice, probe_module), spawn(alice, probe_module, [("Name", "receiver")])
    batch.evaluate_pending(process_id=receiver)
    send(alice, sender, "Send", "hi", To=receiver)
    batch.evaluate_pending(process_id=sender)
    send(alice, sender, "Set", "later", Key="k")
    # The evaluation task and the delivery task were lost (a broker outage): their marks grow old.
    long_ago = timezone.now() - timedelta(minutes=5)
    models.Evaluation.objects.filter(process_id=sender).update(queued_at=long_ago, delivery_queued_at=long_ago)
    models.Push.objects.update(created_at=long_ago)
    found = sweep.sweep()
    assert sender in found.evaluations and sender in found.deliveries
    assert sweep.sweep().evaluations == ()  # asked for once: the fresh marks wait for the grace again
