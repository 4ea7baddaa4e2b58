"""Real Celery workers on the configured broker (Redis in CI, the filesystem broker by default)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest
from django.db.models import Count

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
    factories.record_outbox(source.id, nonce, outbox, catch_up=True)
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
    alice: Ed25519Key, probe_module: str, real_broker: str, tmp_path: Path, fast_recovery: None
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

    worker = workers.start_worker(queue, log, env=FAST_RECOVERY)
    try:
        # The batch is uncommitted until its last message: kill while the worker spins in Loop.
        workers.wait_for(lambda: _busy(worker.pid), "the worker to be busy", log)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        workers.stop_worker(worker)
    assert not models.Result.objects.filter(process_id=sender).exists()
    assert not models.Push.objects.exists()

    # The dead worker's task is gone and its lease runs out by itself; the sweeper (at start, and beat) finds the work.
    worker = workers.start_worker(queue, log, env=FAST_RECOVERY)
    beat = workers.start_beat(queue, tmp_path / "beat.log", env=FAST_RECOVERY)
    try:
        workers.wait_for(
            lambda: models.Result.objects.filter(process_id=sender).count() == total
            and models.Result.objects.filter(process_id=receiver).count() == 2,
            "recovery after restart", log,
        )
    finally:
        workers.stop_worker(beat)
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


# -- exactly once at the edges: kills, outages, many kills --------------------------------------------------------

FAST_RECOVERY = {"AO_LEASE_S": "3", "AO_CLAIM_S": "3", "AO_QUEUE_GRACE_S": "3"}
RECOVERY_S = 60  # "within a minute of recovery, with no new traffic"


@pytest.fixture
def fast_recovery(settings: object) -> None:
    """This process uses the same short leases, claims and grace as the workers the test starts."""
    settings.AO = {**settings.AO, "LEASE_S": 3, "CLAIM_S": 3, "QUEUE_GRACE_S": 3}  # type: ignore[attr-defined]


def _kill_child(worker: object) -> int | None:
    """SIGKILL the pool process of a prefork worker (the parent then forks a new one); its pid, or None."""
    pids = workers.children(worker.pid)  # type: ignore[attr-defined]
    if not pids:
        return None
    try:
        os.kill(pids[0], signal.SIGKILL)
    except ProcessLookupError:
        return None
    return pids[0]


def _all_pushed_once(process_ids: list[str], *, from_results: bool = True) -> None:
    """Every result's outbox is recorded once, every push delivered or stored, none twice in a target's log."""
    for pid in process_ids if from_results else ():
        results = list(models.Result.objects.filter(process_id=pid).order_by("nonce"))
        assert [r.nonce for r in results] == list(range(models.Process.objects.get(id=pid).next_nonce))
        expected = sum(len(r.body["Messages"]) for r in results)
        assert models.Push.objects.filter(process_id=pid).count() == expected
    assert not models.Push.objects.exclude(state__in=["delivered", "stored"]).exists()
    delivered = list(models.Push.objects.filter(state="delivered").values_list("item_id", flat=True))
    assert models.Assignment.objects.filter(message__id__in=delivered).count() == len(delivered) == len(set(delivered))


@pytest.mark.heavy
def test_a_child_killed_during_the_last_delivery_loses_no_push(
    alice: Ed25519Key, probe_module: str, real_broker: str, tmp_path: Path, fast_recovery: None
) -> None:
    source, target = spawn(alice, probe_module), spawn(alice, probe_module, [("Name", "target")])
    nonce = models.Assignment.objects.get(message__id=send(alice, source, "Set", "x", Key="k")).nonce
    wallets = [Ed25519Key.generate().address for _ in range(50)]
    outbox = [mu.OutboxMessage(target=wallets[i % 50], tags=(("Action", "Notice"), ("N", str(i))), data=b"")
              for i in range(1500)]
    outbox.append(mu.OutboxMessage(target=target, tags=(("Action", "Last"),), data=b""))
    factories.record_outbox(source, nonce, outbox, catch_up=True)
    log = tmp_path / "worker.log"
    worker = workers.start_worker(real_broker, log, pool="prefork", env=FAST_RECOVERY)
    beat = workers.start_beat(real_broker, tmp_path / "beat.log", env=FAST_RECOVERY)
    try:
        workers.wait_for(lambda: bool(workers.children(worker.pid)), "the pool process", log)
        tasks.deliver_pushes.delay(source)
        # Under way: a chunk has committed (PostgreSQL claims by row locks, so no claim is written to look for).
        workers.wait_for(lambda: models.Push.objects.exclude(state="pending").exists(), "a delivery under way", log)
        assert _kill_child(worker) is not None
        stranded = models.Push.objects.filter(state="pending").count()
        assert stranded > 0
        # No new traffic: the redelivered task, the claims running out and the sweeper finish the job.
        workers.wait_for(lambda: not models.Push.objects.filter(state="pending").exists(), "every push", log,
                         timeout=RECOVERY_S)
    finally:
        workers.stop_worker(beat)
        workers.stop_worker(worker)
    _all_pushed_once([source], from_results=False)
    assert models.Assignment.objects.filter(process_id=target).count() == 2
    print(f"\n{stranded} of {len(outbox)} pushes were pending when the pool process was killed; all delivered once")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _TestRedis:
    """A Redis server of the test's own, on a free port, that the test can stop and start again."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.dir = tmp_path
        self.process: object = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import subprocess

        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        workers.wait_for(lambda: _pings(redis.Redis.from_url(self.url)), "the test Redis")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # type: ignore[attr-defined]
            self.process.wait(timeout=30)  # type: ignore[attr-defined]
            self.process = None


def _pings(client: object) -> bool:
    try:
        return bool(client.ping())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not up yet
        return False


@pytest.fixture
def own_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """The app publishes to a Redis of the test's own (fresh connection pools, restored afterwards)."""
    import shutil

    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is needed (Debian's redis-server package)")
    server = _TestRedis(tmp_path)
    server.start()
    queue = workers.new_queue()
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    monkeypatch.setitem(celery_app.conf, "task_default_queue", queue)
    monkeypatch.setitem(celery_app.conf, "broker_url", server.url)
    monkeypatch.setitem(celery_app.conf, "broker_transport_options", {})
    monkeypatch.setattr(celery_app, "_pool", None)
    monkeypatch.setattr(celery_app.amqp, "_producer_pool", None)
    server.queue = queue  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.mark.heavy
def test_a_redis_outage_leaves_nothing_unevaluated_or_undelivered(
    alice: Ed25519Key, probe_module: str, own_redis: _TestRedis, tmp_path: Path, fast_recovery: None
) -> None:
    env = {**FAST_RECOVERY, "CELERY_BROKER_URL": own_redis.url}
    queue = own_redis.queue  # type: ignore[attr-defined]
    sender, receiver = spawn(alice, probe_module), spawn(alice, probe_module, [("Name", "receiver")])
    log = tmp_path / "worker.log"
    worker = workers.start_worker(queue, log, pool="prefork", env=env)
    beat = workers.start_beat(queue, tmp_path / "beat.log", env=env)
    try:
        for i in range(4):
            send(alice, sender, "Send", f"before {i}", To=receiver)
        workers.wait_for(lambda: models.Result.objects.filter(process_id=sender).count() == 5, "first messages", log)
        own_redis.stop()
        for i in range(4):  # these publishes fail: the broker is away
            send(alice, sender, "Send", f"during {i}", To=receiver)
        import time

        time.sleep(10)
        own_redis.start()  # no new traffic after this
        total = models.Process.objects.get(id=sender).next_nonce
        workers.wait_for(
            lambda: models.Result.objects.filter(process_id=sender).count() == total
            and not models.Push.objects.filter(state="pending").exists()
            and models.Result.objects.filter(process_id=receiver).count() == 9,
            "recovery after the outage", log, timeout=RECOVERY_S,
        )
    finally:
        workers.stop_worker(beat)
        workers.stop_worker(worker)
    _all_pushed_once([sender, receiver])
    assert verify.verify_process(process_id=sender).ok and verify.verify_process(process_id=receiver).ok


@pytest.mark.heavy
def test_twenty_child_and_twenty_parent_kills_lose_nothing_and_repeat_nothing(
    node_keys: None, ledger_module: str, probe_module: str, real_broker: str, tmp_path: Path, fast_recovery: None
) -> None:
    import random
    import time

    rng = random.Random(20)
    owner = Ed25519Key.generate()
    wallets = [Ed25519Key.generate() for _ in range(20)]
    ledger = spawn(owner, ledger_module, [("Ticker", "KILL")])
    inbox = spawn(owner, probe_module, [("Name", "inbox")])  # a process that receives Credit-Notices
    mints = [factories.message_item(owner, ledger, action="Mint", extra=[("Quantity", "1000000"),
                                                                       ("Recipient", w.address)]).serialize()
             for w in wallets]
    services.su_schedule_batch(raws=mints)
    rounds, per_round = 40, 50
    log, beat_log = tmp_path / "worker.log", tmp_path / "beat.log"
    worker = workers.start_worker(real_broker, log, pool="prefork", env=FAST_RECOVERY)
    beat = workers.start_beat(real_broker, beat_log, env=FAST_RECOVERY)
    kills = {"child": 0, "parent": 0}
    orphans: list[int] = []
    try:
        for round_ in range(rounds):
            raws = []
            for _ in range(per_round):
                sender = rng.choice(wallets)
                recipient = inbox if rng.random() < 0.1 else rng.choice(wallets).address
                raws.append(factories.message_item(sender, ledger, action="Transfer", extra=[
                    ("Recipient", recipient), ("Quantity", str(rng.randint(1, 50)))]).serialize())
            services.su_schedule_batch(raws=raws)
            time.sleep(rng.uniform(0.2, 1.5))
            if round_ % 2 == 0:
                current = worker
                workers.wait_for(lambda: bool(workers.children(current.pid)), "a pool process", log)
                if _kill_child(worker) is not None:
                    kills["child"] += 1
            else:
                orphans += workers.children(worker.pid)  # a killed parent's pool process finishes and exits
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)
                kills["parent"] += 1
                worker = workers.start_worker(real_broker, log, pool="prefork", env=FAST_RECOVERY)
        total = models.Process.objects.get(id=ledger).next_nonce
        workers.wait_for(
            lambda: models.Result.objects.filter(process_id=ledger).count() == total
            and not models.Push.objects.filter(state="pending").exists()
            and models.Result.objects.filter(process_id=inbox).count()
            == models.Process.objects.get(id=inbox).next_nonce,
            "everything after the kills", log, timeout=300,
        )
    finally:
        workers.stop_worker(beat)
        workers.stop_worker(worker)
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    _all_pushed_once([ledger, inbox])
    balances = {e.key: int(json.loads(e.value)) for e in models.StateEntry.objects.filter(
        process_id=ledger, key__startswith="balance/")}
    supply = int(json.loads(models.StateEntry.objects.get(process_id=ledger, key="supply").value))
    assert supply == sum(balances.values()) == 20 * 1_000_000
    report = verify.verify_process(process_id=ledger)
    assert report.ok, report.divergence
    assert verify.verify_process(process_id=inbox).ok
    assert kills == {"child": rounds // 2, "parent": rounds // 2}
    pushes_by_state = dict(models.Push.objects.values_list("state").annotate(n=Count("id")))
    print(f"\nkills {kills}; {total} ledger messages, each with one result; pushes {pushes_by_state}; "
          f"{models.Result.objects.filter(process_id=inbox).count() - 1} Credit-Notices in the inbox's log, each once; "
          f"supply {supply} = sum of {len(balances)} balances; verify OK")



def _queued(queue: str) -> int:
    """Messages waiting in a broker queue."""
    with celery_app.connection_for_write() as conn:
        return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)


def test_a_stream_of_two_thousand_transfers_queues_a_few_tasks_not_thousands(
    alice: Ed25519Key, ledger_module: str, real_broker: str
) -> None:
    ledger = spawn(alice, ledger_module)
    send(alice, ledger, "Mint", Quantity="100000")
    recipients = [Ed25519Key.generate().address for _ in range(20)]
    raws = [factories.message_item(alice, ledger, action="Transfer", extra=[
        ("Recipient", recipients[i % 20]), ("Quantity", "1")]).serialize() for i in range(2000)]
    for raw in raws[:200]:
        services.su_schedule(raw=raw)  # one at a time, as users send them
    for start in range(200, 2000, 50):
        services.su_schedule_batch(raws=raws[start:start + 50])  # and in the messenger's batches
    try:
        queued = _queued(real_broker)
        assert 1 <= queued <= 2, queued  # one evaluation of the ledger (and the spawn's request, if apart)
        print(f"\n2000 transfers scheduled; {queued} task(s) queued for the ledger")
    finally:
        with celery_app.connection_for_write() as conn:
            conn.default_channel.queue_purge(real_broker)
