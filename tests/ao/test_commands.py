"""manage.py ao verify / evaluate / module."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from ao import models
from ao.compute import batch
from ao.permaweb.wallet import Ed25519Key
from tests.ao.test_cu import send, spawn
from tests.conftest import PROBE_SOURCE

pytestmark = pytest.mark.django_db


def test_verify_reports_a_match(alice: Ed25519Key, ledger_module: str) -> None:
    pid = spawn(alice, ledger_module)
    for _ in range(3):
        send(alice, pid, "Mint", Quantity="2")
    out = io.StringIO()
    call_command("ao", "evaluate", "--", pid, stdout=out)  # ids may start with "-"
    assert f"{pid}: evaluated 4" in out.getvalue()
    out = io.StringIO()
    call_command("ao", "verify", "--", pid, stdout=out)
    assert f"OK {pid}: 4 messages replayed" in out.getvalue()


def test_verify_reports_the_first_divergence_with_its_nonce(alice: Ed25519Key, ledger_module: str) -> None:
    pid = spawn(alice, ledger_module)
    for _ in range(3):
        send(alice, pid, "Mint", Quantity="2")
    batch.evaluate_pending(process_id=pid)
    tampered = models.Result.objects.get(process_id=pid, nonce=2)
    tampered.body = {**tampered.body, "Output": "forged"}
    tampered.save()
    with pytest.raises(CommandError, match="at nonce 2 \\(result\\) after 2 matching messages"):
        call_command("ao", "verify", "--", pid)


def test_verify_catches_a_broken_hash_chain(alice: Ed25519Key, ledger_module: str) -> None:
    pid = spawn(alice, ledger_module)
    send(alice, pid, "Mint", Quantity="2")
    batch.evaluate_pending(process_id=pid)
    models.Assignment.objects.filter(process_id=pid, nonce=1).update(hash_chain="X" * 43)
    with pytest.raises(CommandError, match="nonce 1 \\(assignment hash chain\\)"):
        call_command("ao", "verify", "--", pid)


def test_module_command_builds_and_publishes(node_keys: None, probe_wasm: bytes) -> None:
    out = io.StringIO()
    call_command("ao", "module", str(PROBE_SOURCE), "--name", "probe", "--tag", "Author=tests", stdout=out)
    module_id = out.getvalue().strip()
    tags = dict(models.EntryTag.objects.filter(entry__id=module_id).values_list("name", "value"))
    assert (tags["Type"], tags["Name"], tags["Author"]) == ("Module", "probe", "tests")
    assert tags["Module-Format"] == "wasm32-wasip2-component"
    with pytest.raises(CommandError, match="must be K=V"):
        call_command("ao", "module", str(PROBE_SOURCE), "--tag", "novalue")


def test_ids_starting_with_a_dash_reach_the_command_after_double_dash(node_keys: None) -> None:
    with pytest.raises(CommandError, match="no process"):
        call_command("ao", "verify", "--", "-" + "A" * 42)
    with pytest.raises(CommandError, match="not in this node's store"):
        call_command("weave", "attest", "--process=-" + "A" * 42, "--", "-" + "B" * 42)
