"""Permaweb fixtures: an ArLocal gateway on loopback, one per test module that asks for it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.nodejs import INTEROP_DIR

ARLOCAL_ENTRY = INTEROP_DIR / "node_modules" / "arlocal" / "bin" / "index.js"
LOOPBACK_PRELOAD = INTEROP_DIR / "loopback.cjs"
LOOPBACK = "127.0.0.1"
ARLOCAL_START_TIMEOUT_S = 30.0
ARLOCAL_STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.1
LOG_TAIL_CHARS = 3000


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _log_tail(log_path: Path) -> str:
    try:
        return log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "(no log)"


@pytest.fixture(scope="module")
def arlocal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a fresh ArLocal bound to 127.0.0.1 only; fails (never skips) if it cannot start."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; ArLocal tests need it (see README set-up)")
    if not ARLOCAL_ENTRY.is_file():
        pytest.fail(f"ArLocal is missing: run `npm ci` in {INTEROP_DIR}")
    port = free_loopback_port()
    workdir = tmp_path_factory.mktemp("arlocal")
    log_path = workdir / "arlocal.log"
    with log_path.open("wb") as log:
        # --dbpath is joined to the working directory: keep ArLocal's sqlite files in tmp.
        proc = subprocess.Popen(
            [node, "--require", str(LOOPBACK_PRELOAD), str(ARLOCAL_ENTRY), str(port), "--hidelogs", "--dbpath", "db"],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + ARLOCAL_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ArLocal exited with {proc.returncode}:\n{_log_tail(log_path)}")
            try:
                if requests.get(f"{url}/info", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"ArLocal did not answer within {ARLOCAL_START_TIMEOUT_S}s:\n{_log_tail(log_path)}")
            time.sleep(POLL_INTERVAL_S)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=ARLOCAL_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=ARLOCAL_STOP_TIMEOUT_S)
