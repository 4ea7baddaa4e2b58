"""The token ledger's aos semantics beyond mint/transfer/burn: Info, Balances, Grant, authority."""

from __future__ import annotations

import json

import pytest

from ao import models
from ao.compute import batch, pushes
from ao.permaweb.wallet import Ed25519Key
from tests.ao.test_cu import send, spawn, tags_of

pytestmark = pytest.mark.django_db


def reply(pid: str, mid: str) -> list[dict]:
    batch.evaluate_pending(process_id=pid)
    return models.Result.objects.get(process_id=pid, message_id=mid).body["Messages"]


def test_info_and_total_supply(alice: Ed25519Key, ledger_module: str) -> None:
    pid = spawn(alice, ledger_module, [("Name", "Llama Coin"), ("Ticker", "LLAMA"), ("Max-Supply", "100")])
    send(alice, pid, "Mint", Quantity="30")
    [info] = reply(pid, send(alice, pid, "Info"))
    tags = tags_of(info)
    assert (tags["Name"], tags["Ticker"], tags["Denomination"], tags["Max-Supply"]) == ("Llama Coin", "LLAMA", "12", "100")
    assert tags["Total-Supply"] == "30"
    [over] = reply(pid, send(alice, pid, "Mint", Quantity="71"))
    assert tags_of(over)["Action"] == "Mint-Error" and "max supply" in tags_of(over)["Error"]


def test_balances_pages_by_cursor(alice: Ed25519Key, ledger_module: str) -> None:
    pid = spawn(alice, ledger_module)
    holders = sorted(Ed25519Key.generate().address for _ in range(3))
    for i, holder in enumerate(holders):
        send(alice, pid, "Mint", Quantity=str(i + 1), Recipient=holder)
    [page] = reply(pid, send(alice, pid, "Balances"))
    assert json.loads(page["Data"]) == {h: str(i + 1) for i, h in enumerate(holders)}
    [rest] = reply(pid, send(alice, pid, "Balances", Cursor=holders[0]))
    assert list(json.loads(rest["Data"])) == holders[1:]


def test_grant_only_from_an_allowed_process(alice: Ed25519Key, ledger_module: str, probe_module: str) -> None:
    llama = spawn(alice, ledger_module, [("Ticker", "LLAMA"), ("Max-Supply", "1000")])
    fed = spawn(alice, probe_module, [("Name", "fed")])
    user = Ed25519Key.generate().address
    # A user cannot grant, and cannot make itself an authority.
    [refused] = reply(llama, send(alice, llama, "Grant", Recipient=user, Quantity="5"))
    assert tags_of(refused)["Action"] == "Grant-Error"
    bob = Ed25519Key.generate()
    [not_owner] = reply(llama, send(bob, llama, "Allow-Grant", Authority=bob.address))
    assert "only the token's owner" in tags_of(not_owner)["Error"]
    # The owner allows the fed process; a Grant from it (pushed by the messenger) mints.
    [ok] = reply(llama, send(alice, llama, "Allow-Grant", Authority=fed))
    assert tags_of(ok)["Action"] == "Allow-Grant-Confirmation"
    grant = {"Forward-Action": "Grant", "Fwd-Recipient": user, "Fwd-Quantity": "20", "Fwd-X-Petition": "p1"}
    send(alice, fed, "Send", "", To=llama, **grant)
    batch.evaluate_pending(process_id=fed)
    pushes.deliver_pending()
    batch.evaluate_pending(process_id=llama)
    granted = models.Result.objects.filter(process_id=llama).order_by("-nonce").first()
    assert granted is not None and granted.error == ""
    notice, confirmation = granted.body["Messages"]
    assert (notice["Target"], tags_of(notice)["Action"], tags_of(notice)["Quantity"]) == (user, "Grant-Notice", "20")
    assert tags_of(notice)["X-Petition"] == "p1" and tags_of(notice)["Granter"] == fed
    assert (confirmation["Target"], tags_of(confirmation)["Action"]) == (fed, "Grant-Confirmation")
    balance = models.StateEntry.objects.get(process_id=llama, key=f"balance/{user}").value
    assert json.loads(balance) == "20"
