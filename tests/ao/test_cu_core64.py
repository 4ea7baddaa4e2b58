"""memory64 through the compute unit: a core module grows past 4 GiB under a 16 GiB Memory-Limit."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from ao import models, modules, verify
from ao.compute import batch
from ao.effects import core_processes
from ao.permaweb.wallet import Ed25519Key
from tests.ao.test_cu import send, spawn

pytestmark = pytest.mark.django_db
WAT = Path(__file__).resolve().parents[2] / "ao" / "effects" / "testdata" / "grow64.wat"
PAGE = 64 * 1024
ABOVE_4_GIB = 4 * 1024**3 + 12345


@pytest.fixture
def grow64_module(node_keys: None) -> str:
    """The grow64 test module, compiled from WAT and published as a core64 module."""
    return modules.publish_module(
        wasmtime.wat2wasm(WAT.read_text()), name="grow64", module_format=modules.CORE64_FORMAT,
        extra_tags=[("Memory-Limit", "16-gb")],
    )


def output(pid: str, mid: str) -> models.Result:
    batch.evaluate_pending(process_id=pid)
    return models.Result.objects.get(process_id=pid, message_id=mid)


def test_core_process_grows_past_4_gib_and_reads_the_byte_back(alice: Ed25519Key, grow64_module: str) -> None:
    pid = spawn(alice, grow64_module, [("Memory-Limit", "16-gb")])
    grow = send(alice, pid, "Grow", f"grow {ABOVE_4_GIB // PAGE + 1}")
    write = send(alice, pid, "Write", f"write {ABOVE_4_GIB} 77")
    assert output(pid, grow).error == ""
    assert output(pid, write).body["Output"] == "ok"
    checkpoint = models.Checkpoint.objects.filter(process_id=pid).first()
    assert checkpoint is not None and checkpoint.memory_size > 4 * 1024**3
    assert checkpoint.size < 1024 * 1024  # sparse: a few pages, not 4 GiB
    # A restarted worker has no live instance: it restores the checkpoint.
    core_processes.live_cores().clear()
    read = send(alice, pid, "Read", f"read {ABOVE_4_GIB}")
    assert output(pid, read).body["Output"] == "77"
    report = verify.verify_process(process_id=pid)
    assert report.ok, report.divergence


def test_core_process_under_1_gib_fails_cleanly_and_keeps_state(alice: Ed25519Key, grow64_module: str) -> None:
    pid = spawn(alice, grow64_module, [("Memory-Limit", "1-gb")])
    write = send(alice, pid, "Write", "write 60000 5")
    grow = send(alice, pid, "Grow", f"grow {ABOVE_4_GIB // PAGE + 1}")
    read = send(alice, pid, "Read", "read 60000")
    assert output(pid, write).body["Output"] == "ok"
    failed = output(pid, grow)
    assert "grow failed" in failed.error
    assert failed.body["Error"] == failed.error
    assert output(pid, read).body["Output"] == "5"
    handled = send(alice, pid, "Handled", "handled")
    count = int(output(pid, handled).body["Output"])
    # Every message bumps a counter in memory first: only the ones without an error left a trace.
    assert count == models.Result.objects.filter(process_id=pid, error="").count()
    assert models.Result.objects.filter(process_id=pid).count() == count + 2  # the spawn and the failed grow


def test_core_process_out_of_fuel_is_recorded(alice: Ed25519Key, grow64_module: str) -> None:
    pid = spawn(alice, grow64_module, [("Compute-Limit", "1000000")])
    loop = send(alice, pid, "Loop", "loop 60000 9")
    read = send(alice, pid, "Read", "read 60000")
    assert "out of fuel" in output(pid, loop).error
    assert output(pid, read).body["Output"] == "0"
