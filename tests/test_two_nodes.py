"""An independent verifier: this node, with its own empty database and data dir, verifies a process of another
node (its own database, data dir and port on 127.0.0.1) from that node's public endpoints alone."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.core.management import CommandError, call_command

from ao import models
from tests.workers import ROOT, wait_for

pytestmark = [pytest.mark.heavy, pytest.mark.django_db]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    (data_dir / "static").mkdir(parents=True, exist_ok=True)
    return {**env, "LLAMAFED_DATA_DIR": str(data_dir), "CELERY_TASK_ALWAYS_EAGER": "1",
            "DJANGO_SECRET_KEY": "node-a-secret-key-for-the-two-node-test-0123456789"}


@pytest.fixture
def node_a(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """Node A, set up with ledger transfers and a Fed decision on the tiny model, served on its own port."""
    env = _node_env(tmp_path / "node-a")
    done = subprocess.run([sys.executable, "-m", "tests.support.node_a", "setup"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ids = json.loads(done.stdout.strip().splitlines()[-1])
    port = _free_port()
    log = tmp_path / "node-a.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "llamafed.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "2",
             "--timeout", "120"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{url}/ao/su/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(up, "node A serving", log)
        yield url, ids, env
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_node_b_verifies_node_a_from_its_public_endpoints_and_sees_tampering(node_a) -> None:  # type: ignore[no-untyped-def]
    url, ids, env = node_a
    assert not models.Process.objects.exists()  # node B's own database holds nothing of node A
    out = io.StringIO()
    call_command("ao", "verify", "--remote", url, "--", ids["fed"], stdout=out, stderr=io.StringIO())
    lines = out.getvalue().splitlines()
    verified = {line.split()[1].rstrip(":") for line in lines if line.startswith("OK ")}
    # The Fed, and the processes whose messages it accepted (wAR's Credit-Notice, LLAMA's confirmation).
    assert {ids["fed"], ids["war"], ids["llama"]} <= verified, out.getvalue()
    fed_line = next(line for line in lines if line.startswith(f"OK {ids['fed']}"))
    assert "LLM engine llama-cpp-python" in fed_line
    assert not models.Process.objects.exists()  # verifying wrote no process of A's into B's log

    # Node A's compute unit now serves a changed result for one of the Fed's decisions.
    served = requests.get(f"{url}/ao/cu/results/{ids['fed']}", params={"limit": 1000}, timeout=30).json()["edges"]
    decided = next(int(e["cursor"]) for e in served
                   if any(t["value"] == "Petition-Decision" for m in e["node"]["Messages"] for t in m["Tags"]))
    done = subprocess.run([sys.executable, "-m", "tests.support.node_a", "tamper", ids["fed"], str(decided)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    with pytest.raises(CommandError, match=rf"DIVERGED {ids['fed']} at nonce {decided} \(result"):
        call_command("ao", "verify", "--remote", url, "--shallow", "--", ids["fed"], stdout=io.StringIO(),
                     stderr=io.StringIO())
