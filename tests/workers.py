"""Real Celery workers for tests, on the configured broker and the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 90
POLL_S = 0.1


def database_url() -> str:
    """The URL of the database this test uses (the test database)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    host = db.get("HOST") or "127.0.0.1"
    return f"postgres://{db['USER']}@{host}:{db.get('PORT') or 5432}/{db['NAME']}"


def new_queue() -> str:
    """A queue name no other run uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


def _environ(queue: str, env: dict[str, str] | None) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_QUEUE": queue,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        **(env or {}),
    }


def start_worker(queue: str, log_path: Path, *, pool: str = "solo",
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A worker consuming `queue` (solo pool, or prefork with one child as scripts/run starts it), logging to
    log_path."""
    environ = _environ(queue, env)
    command = [sys.executable, "-m", "celery", "-A", "llamafed", "worker", f"--pool={pool}", "--without-gossip",
               "--without-mingle", "--without-heartbeat", "--loglevel=INFO"]
    if pool == "prefork":
        command.append("--concurrency=1")
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)


def start_beat(queue: str, log_path: Path, *, sweep_s: int = 2,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Celery beat sending the sweeper (and the projection) to `queue` every `sweep_s` seconds."""
    environ = {**_environ(queue, env), "AO_SWEEP_S": str(sweep_s)}
    command = [sys.executable, "-m", "celery", "-A", "llamafed", "beat", "--loglevel=INFO",
               f"--schedule={log_path.with_suffix('.schedule')}"]
    with log_path.open("ab") as log:
        return subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)


def children(pid: int) -> list[int]:
    """The pool processes of a prefork worker (the children of its main process)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Stop a worker politely, then firmly."""
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=30)


def wait_for(predicate: Callable[[], bool], what: str, log_path: Path | None = None, timeout: float = WAIT_S) -> None:
    """Poll until predicate() holds; fail with the worker's log tail if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(POLL_S)
    tail = log_path.read_text(errors="replace")[-4000:] if log_path and log_path.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")
