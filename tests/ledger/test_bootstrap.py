"""The bootstrap spawns wAR and LLAMA with Reality's parameters, once."""

from __future__ import annotations

import json

import pytest

from ao import models
from ao.compute import batch
from ao.effects import keys
from ledger import services
from ledger.models import Token
from ledger.tokens import BASE

pytestmark = pytest.mark.django_db


def test_bootstrap_spawns_war_and_llama_once(node_keys: None, ledger_wasm: bytes) -> None:
    first = services.ledger_bootstrap()
    again = services.ledger_bootstrap()
    assert [t.ticker for t in first] == ["wAR", "LLAMA"]
    assert [t.process_id for t in again] == [t.process_id for t in first]
    assert Token.objects.count() == 2 and models.Process.objects.count() == 2
    llama = Token.objects.get(ticker="LLAMA")
    batch.evaluate_pending(process_id=llama.process_id)
    config = json.loads(models.StateEntry.objects.get(process_id=llama.process_id, key="config").value)
    assert config["Max-Supply"] == str(11_111_111 * BASE)
    assert config["Denomination"] == "12"
    assert config["Owner"] == keys.operator_wallet().address
