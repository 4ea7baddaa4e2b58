"""The compute unit's AO-shaped endpoints: result, results, dry-run."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from ao import models
from ao.permaweb.wallet import Ed25519Key
from tests.ao.test_cu import send, spawn, tags_of

pytestmark = pytest.mark.django_db
CU = "/ao/cu/"


def test_result_evaluates_on_demand(client: Client, alice: Ed25519Key, ledger_module: str) -> None:
    pid = spawn(alice, ledger_module, [("Ticker", "WAR")])
    mid = send(alice, pid, "Mint", Quantity="7")
    body = client.get(f"{CU}result/{mid}?process-id={pid}").json()
    [reply] = body["Messages"]
    assert tags_of(reply)["Action"] == "Mint-Confirmation"
    assert body["GasUsed"] > 0
    assert "Error" not in body


def test_results_pages_in_both_directions(client: Client, alice: Ed25519Key, ledger_module: str) -> None:
    pid = spawn(alice, ledger_module)
    for _ in range(4):
        send(alice, pid, "Total-Supply")
    client.get(f"{CU}result/{models.Assignment.objects.get(process_id=pid, nonce=4).message.id}?process-id={pid}")
    page = client.get(f"{CU}results/{pid}?limit=2").json()
    assert [e["cursor"] for e in page["edges"]] == ["0", "1"] and page["pageInfo"]["hasNextPage"]
    rest = client.get(f"{CU}results/{pid}?limit=10&from=1").json()
    assert [e["cursor"] for e in rest["edges"]] == ["2", "3", "4"] and not rest["pageInfo"]["hasNextPage"]
    desc = client.get(f"{CU}results/{pid}?sort=DESC&limit=2").json()
    assert [e["cursor"] for e in desc["edges"]] == ["4", "3"]
    assert client.get(f"{CU}results/{pid}?sort=SIDEWAYS").status_code == 400


def test_dry_run_answers_and_changes_nothing(client: Client, alice: Ed25519Key, ledger_module: str) -> None:
    pid = spawn(alice, ledger_module, [("Ticker", "LLAMA")])
    send(alice, pid, "Mint", Quantity="42")
    client.get(f"{CU}result/{send(alice, pid, 'Total-Supply')}?process-id={pid}")
    before = (list(models.StateEntry.objects.filter(process_id=pid).values_list("key", "value")),
              models.Result.objects.count(), models.Evaluation.objects.get(process_id=pid).state_hash)
    msg = {"Target": pid, "Owner": alice.address, "Tags": [{"name": "Action", "value": "Balance"}]}
    body = client.post(f"{CU}dry-run?process-id={pid}", data=json.dumps(msg), content_type="application/json").json()
    assert tags_of(body["Messages"][0])["Balance"] == "42"
    transfer = {"Owner": alice.address, "Tags": [{"name": "Action", "value": "Transfer"},
                {"name": "Recipient", "value": Ed25519Key.generate().address}, {"name": "Quantity", "value": "40"}]}
    body = client.post(f"{CU}dry-run?process-id={pid}", data=json.dumps(transfer), content_type="application/json").json()
    assert tags_of(body["Messages"][0])["Action"] == "Debit-Notice"
    after = (list(models.StateEntry.objects.filter(process_id=pid).values_list("key", "value")),
             models.Result.objects.count(), models.Evaluation.objects.get(process_id=pid).state_hash)
    assert after == before


def test_cu_errors_are_clear(client: Client, alice: Ed25519Key, ledger_module: str) -> None:
    pid = spawn(alice, ledger_module)
    assert "process-id" in client.get(f"{CU}result/{'A' * 43}").json()["error"]
    assert client.get(f"{CU}result/{'A' * 43}?process-id={pid}").status_code == 404
    assert client.post(f"{CU}dry-run?process-id={pid}", data="[]", content_type="application/json").status_code == 400
    bad_tags = json.dumps({"Tags": "Action=Balance"})
    response = client.post(f"{CU}dry-run?process-id={pid}", data=bad_tags, content_type="application/json")
    assert response.status_code == 400 and "Tags must be" in response.json()["error"]
