"""A real Celery worker, on the configured broker (Redis in CI, the filesystem broker by default)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from ao import models, services, tasks
from llamafed.celery import app as celery_app
from ao.permaweb.wallet import Ed25519Key
from ao.units import mu
from tests import factories

ROOT = Path(__file__).resolve().parent.parent
WORKER_WAIT_S = 60


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    host = db.get("HOST") or "127.0.0.1"
    return f"postgres://{db['USER']}@{host}:{db.get('PORT') or 5432}/{db['NAME']}"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_delivers_pushes_sent_through_the_broker(node_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    owner = Ed25519Key.generate()
    source, target = factories.spawn_item(owner), factories.spawn_item(owner, extra=[("Name", "t")])
    services.su_schedule(raw=source.serialize())
    services.su_schedule(raw=target.serialize())
    nonce = services.su_schedule(raw=factories.message_item(owner, source.id).serialize()).nonce
    outbox = [mu.OutboxMessage(target=target.id, tags=(("Action", "Hi"),), data=b"") for _ in range(3)]
    services.mu_record_outbox(process_id=source.id, nonce=nonce, messages=outbox)

    queue = f"test-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CELERY_QUEUE": queue,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "llamafed", "worker", "--pool=solo", "--without-gossip",
         "--without-mingle", "--without-heartbeat", "--loglevel=WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        tasks.deliver_pushes.apply_async(args=(source.id,), queue=queue)
        tasks.deliver_pushes.apply_async(args=(source.id,), queue=queue)  # a second run finds nothing
        deadline = time.monotonic() + WORKER_WAIT_S
        while time.monotonic() < deadline:
            if not models.Push.objects.filter(state=models.Push.State.PENDING).exists():
                break
            time.sleep(0.2)
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0].decode(errors="replace")
    assert not models.Push.objects.filter(state=models.Push.State.PENDING).exists(), output[-3000:]
    assert list(models.Push.objects.values_list("state", flat=True)) == ["delivered"] * 3
    assert models.Assignment.objects.filter(process_id=target.id).count() == 4
