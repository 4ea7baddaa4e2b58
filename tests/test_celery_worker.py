"""Real Celery workers on the configured broker (Redis in CI, the filesystem broker by default)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from ao import models, services, tasks, verify
from ao.permaweb.wallet import Ed25519Key
from ao.units import mu
from llamafed.celery import app as celery_app
from tests import factories, workers
from tests.ao.test_cu import send, spawn

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def real_broker(monkeypatch: pytest.MonkeyPatch) -> str:
    """Send tasks to a fresh queue on the broker instead of running them inline; return its name."""
    queue = workers.new_queue()
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    monkeypatch.setitem(celery_app.conf, "task_default_queue", queue)
    return queue


def test_worker_delivers_pushes_sent_through_the_broker(node_keys: None, real_broker: str, tmp_path: Path) -> None:
    owner = Ed25519Key.generate()
    source, target = factories.spawn_item(owner), factories.spawn_item(owner, extra=[("Name", "t")])
    services.su_schedule(raw=source.serialize())
    services.su_schedule(raw=target.serialize())
    nonce = services.su_schedule(raw=factories.message_item(owner, source.id).serialize()).nonce
    outbox = [mu.OutboxMessage(target=target.id, tags=(("Action", "Hi"),), data=b"") for _ in range(3)]
    factories.record_outbox(source.id, nonce, outbox)
    log = tmp_path / "worker.log"
    worker = workers.start_worker(real_broker, log)
    try:
        tasks.deliver_pushes.delay(source.id)
        tasks.deliver_pushes.delay(source.id)  # a second run finds nothing
        workers.wait_for(lambda: not models.Push.objects.filter(state="pending").exists(), "delivery", log)
    finally:
        workers.stop_worker(worker)
    assert list(models.Push.objects.values_list("state", flat=True)) == ["delivered"] * 3
    assert models.Assignment.objects.filter(process_id=target.id).count() == 4


SETS_BEFORE = 40
SETS_AFTER = 40
SLOW_FUEL = 40_000_000_000  # several seconds of interpreter work before the fuel runs out


def test_worker_killed_mid_batch_loses_nothing_and_repeats_nothing(
    alice: Ed25519Key, probe_module: str, real_broker: str, tmp_path: Path
) -> None:
    sender = spawn(alice, probe_module, [("Compute-Limit", str(SLOW_FUEL))])
    receiver = spawn(alice, probe_module, [("Name", "receiver")])
    queue, log = real_broker, tmp_path / "worker.log"
    for i in range(SETS_BEFORE):
        send(alice, sender, "Set", str(i), Key=f"k{i}")
    send(alice, sender, "Send", "once", To=receiver, **{"Forward-Action": "Set"})
    send(alice, sender, "Loop")  # the worker is killed while it spins here
    for i in range(SETS_BEFORE, SETS_BEFORE + SETS_AFTER):
        send(alice, sender, "Set", str(i), Key=f"k{i}")
    total = models.Process.objects.get(id=sender).next_nonce

    worker = workers.start_worker(queue, log)
    try:
        # The batch is uncommitted until its last message: kill while the worker spins in Loop.
        workers.wait_for(lambda: _busy(worker.pid), "the worker to be busy", log)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        workers.stop_worker(worker)
    assert not models.Result.objects.filter(process_id=sender).exists()
    assert not models.Push.objects.exists()

    worker = workers.start_worker(queue, log)  # on start it looks for unfinished work by itself
    try:
        workers.wait_for(
            lambda: models.Result.objects.filter(process_id=sender).count() == total
            and models.Result.objects.filter(process_id=receiver).count() == 2,
            "recovery after restart", log,
        )
    finally:
        workers.stop_worker(worker)
    nonces = list(models.Result.objects.filter(process_id=sender).values_list("nonce", flat=True))
    assert nonces == list(range(total))
    stored = {e.key: json.loads(e.value) for e in models.StateEntry.objects.filter(process_id=sender)}
    assert all(stored[f"k{i}"] == str(i) for i in range(SETS_BEFORE + SETS_AFTER))
    assert "out of fuel" in models.Result.objects.get(process_id=sender, nonce=SETS_BEFORE + 2).error
    assert models.Push.objects.count() == 1
    assert models.Assignment.objects.filter(process_id=receiver).count() == 2
    assert verify.verify_process(process_id=sender).ok


def _busy(pid: int) -> bool:
    """True once the worker has burnt a second of CPU time (it is inside the spinning message)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK") > BUSY_CPU_S


BUSY_CPU_S = 2.5
