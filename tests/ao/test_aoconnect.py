"""An AO client, @permaweb/aoconnect in legacy mode, spawns, messages, reads and dry-runs against this app.

One node run (tests/interop/aoconnect.mjs) talks to the app served on a real port, with the unit
base URLs as an aoconnect user sets them (MU_URL .../ao/mu/, CU_URL .../ao/cu, GATEWAY_URL
.../ao/gateway/). It validates and locates the scheduler through the gateway's GraphQL (the
Scheduler-Location record `ao init` publishes), spawns a token ledger from the published module,
mints with the spawner's Arweave wallet (so the process owner), reads results from the CU, sends a
message asking for its assignment slot, and dry-runs Balance twice.
"""

from __future__ import annotations

from typing import Any

import pytest
from pytest_django.fixtures import Settings
from pytest_django.live_server_helper import LiveServer

from ao import models, modules, services
from ao.effects import keys
from ao.permaweb.wallet import Wallet
from tests.nodejs import INTEROP_DIR, run_node

pytestmark = [pytest.mark.interop, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SCRIPT = "aoconnect.mjs"
QUANTITY = "1234567"
TICKER = "WIRE"


def _tags(tags: list[dict[str, str]]) -> dict[str, str]:
    return {t["name"]: t["value"] for t in tags}


@pytest.fixture
def session(live_server: LiveServer, settings: Settings, node_keys: None, ledger_wasm: bytes,
            rsa_wallet: Wallet) -> dict[str, Any]:
    """Run the client session once against the live app; return what it saw."""
    for package in ("@permaweb/aoconnect", "@permaweb/ao-scheduler-utils"):
        if not (INTEROP_DIR / "node_modules" / package / "package.json").is_file():
            pytest.fail(f"{package} is not installed: run `npm ci` in {INTEROP_DIR} (scripts/test does)")
    settings.AO = {**settings.AO, "PUBLIC_URL": live_server.url}
    services.node_init()
    module = modules.publish_module(ledger_wasm, name="ledger")
    base = live_server.url
    out = run_node(
        SCRIPT,
        {
            "mu_url": f"{base}/ao/mu/",
            "cu_url": f"{base}/ao/cu",
            "gateway_url": f"{base}/ao/gateway/",
            "jwk": rsa_wallet.to_jwk(),
            "address": rsa_wallet.address,
            "module": module,
            "scheduler": keys.scheduler_key().address,
            "ticker": TICKER,
            "quantity": QUANTITY,
        },
    )
    out["module"] = module
    return out


def test_aoconnect_legacy_session(session: dict[str, Any], live_server: LiveServer, rsa_wallet: Wallet) -> None:
    su_address = keys.scheduler_key().address
    # The scheduler is found through the gateway's GraphQL, at the live SU. The only outside
    # requests are the public AO services the libraries try first (answered 404 by the script).
    assert session["scheduler_valid"] is True
    assert session["located"] == {"url": f"{live_server.url}/ao/su", "address": su_address}
    assert set(session["external_requests"]) == {"su-router.ao-testnet.xyz", "cache.forward.computer"}

    # spawn: a process of ours, owned by the wallet, running the published module.
    pid = session["process_id"]
    process = models.Process.objects.get(id=pid)
    assert (process.owner_address, process.module, process.scheduler) == (
        rsa_wallet.address, session["module"], su_address,
    )

    # scheduler-utils' getProcess reads the spawn through the gateway's GraphQL (Arweave's shape).
    node = session["process_node"]
    assert (node["id"], node["owner"]["address"], node["parent"]) == (pid, rsa_wallet.address, None)
    assert {"Type": "Process", "Module": session["module"], "Scheduler": su_address, "Ticker": TICKER}.items() <= (
        _tags(node["tags"]).items()
    )

    # message + result: the owner's Mint is confirmed to the owner.
    mint = session["mint_result"]
    assert "error" not in mint and not mint.get("Error"), mint
    [confirmation] = mint["Messages"]
    assert confirmation["Target"] == rsa_wallet.address
    tags = _tags(confirmation["Tags"])
    assert {k: tags[k] for k in ("Action", "Quantity", "Recipient", "X-Reference")} == {
        "Action": "Mint-Confirmation", "Quantity": QUANTITY, "Recipient": rsa_wallet.address,
        "X-Reference": session["mint_id"],
    }
    assert models.Assignment.objects.filter(process_id=pid, message__id=session["mint_id"], nonce=1).exists()

    # message with returnAssignmentSlot: aoconnect reads the slot back from the located SU.
    balance_id = session["balance_message"]["id"]
    assert session["balance_message"]["slot"] == "2" == session["last_slot"]
    assert models.Assignment.objects.filter(process_id=pid, message__id=balance_id, nonce=2).exists()
    [reply] = session["balance_result"]["Messages"]
    assert (_tags(reply["Tags"])["Balance"], _tags(reply["Tags"])["X-Reference"]) == (QUANTITY, balance_id)

    # dryrun: Balance by Recipient tag and by the dry-run's Owner both read the minted quantity.
    for key in ("dryrun_by_recipient", "dryrun_by_owner"):
        [reply] = session[key]["Messages"]
        tags = _tags(reply["Tags"])
        assert (tags["Balance"], tags["Account"], tags["Ticker"], reply["Data"]) == (
            QUANTITY, rsa_wallet.address, TICKER, QUANTITY,
        ), key

    # Nothing from the dry-runs was written: the CU's results are the same before and after,
    # the log holds the three signed messages only, and the evaluated state is the last one's.
    before, after = session["results_before_dryrun"], session["results_after_dryrun"]
    assert [e["cursor"] for e in before["edges"]] == ["0", "1", "2"]
    assert after == before
    assert models.Result.objects.filter(process_id=pid).count() == 3
    assert models.Assignment.objects.filter(process_id=pid).count() == 3
    last = models.Result.objects.get(process_id=pid, nonce=2)
    cursor = models.Evaluation.objects.get(process_id=pid)
    assert (cursor.next_nonce, cursor.state_hash) == (3, last.state_hash)
