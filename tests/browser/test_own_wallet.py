"""A petition signed in the page by the petitioner's own Arweave wallet, as Wander's injected API does it.

The page meets a stand-in for `window.arweaveWallet` (connect, getActiveAddress, signDataItem) injected before any
script of the site runs; the stand-in signs for real with arbundles (tests/interop/dataitem.mjs, an RSA JWK), so
the bytes the site receives are a real ANS-104 item from the reference implementation. The site's own script
(web/static/web/wallet.js) builds the Transfer, has it signed, posts it to the signed-petition API, and the
petition is decided by the tiny-model Fed."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from ao import services as ao_services
from ao.effects import keys
from ao.permaweb import dataitem
from ao.permaweb.b64 import b64url_decode, b64url_encode
from ao.permaweb.wallet import Wallet
from ao.units import su
from tests import workers
from tests.browser.conftest import in_browser, session, shoot
from tests.nodejs import run_node
from web import selectors
from web.models import Petition, PetitionRequest

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PETITION = "I repair bicycles for free on Saturdays for the kids of my street."
OFFERING = 25_000_000_000

# Wander's injected API, as far as the site uses it; signing is done by arbundles through exposed functions.
STAND_IN = """
window.arweaveWallet = {
  walletName: "stand-in",
  async connect(permissions, appInfo) {
    window.__standInPermissions = permissions;
    return undefined;
  },
  async getActiveAddress() {
    if (!window.__standInPermissions || !window.__standInPermissions.includes("ACCESS_ADDRESS"))
      throw new Error("ACCESS_ADDRESS was not granted");
    return await window.__standInAddress();
  },
  async signDataItem(item) {
    if (!window.__standInPermissions.includes("SIGN_TRANSACTION")) throw new Error("SIGN_TRANSACTION was not granted");
    const data = typeof item.data === "string" ? item.data : new TextDecoder().decode(item.data);
    const signed = await window.__standInSign(JSON.stringify({data, tags: item.tags || [], target: item.target,
                                                               anchor: item.anchor}));
    return Uint8Array.from(atob(signed), (c) => c.charCodeAt(0)).buffer;
  },
};
"""


def _fund(address: str, worker: Path) -> None:
    """The operator mints the offering's worth of wAR to the wallet's address (as a bridge would)."""
    war = selectors.token_process_id(selectors.WAR)
    mint = dataitem.create_data_item(
        keys.operator_wallet(), b"",
        tags=[("Data-Protocol", su.DATA_PROTOCOL), ("Variant", su.VARIANT), ("Type", "Message"), ("Action", "Mint"),
              ("Quantity", str(4 * OFFERING)), ("Recipient", address)],
        target=war, anchor=os.urandom(32),
    )
    ao_services.mu_submit(raw=mint.serialize())
    workers.wait_for(lambda: selectors.balance(war, address) >= OFFERING, "the Mint to be evaluated", worker)


def test_a_petition_signed_in_the_page_by_ones_own_wallet_is_decided(
    live_server: Any, fed_on_tiny_model: str, worker: Path
) -> None:
    wallet = Wallet.generate()
    _fund(wallet.address, worker)
    signed: list[dict[str, Any]] = []

    def sign(request: str) -> str:
        asked = json.loads(request)
        case = {"op": "sign", "jwk": wallet.to_jwk(), "data_b64": b64url_encode(asked["data"].encode()),
                "tags": [[t["name"], t["value"]] for t in asked["tags"]], "target": asked.get("target"),
                "anchor": asked.get("anchor")}
        result = run_node("dataitem.mjs", {"cases": [case]})["results"][0]
        assert "error" not in result, result
        signed.append(result)
        return base64.b64encode(b64url_decode(result["raw_b64"])).decode()

    def drive(browser: Any) -> str:
        from playwright.sync_api import expect

        context, page, dialogs = session(browser)
        context.add_init_script(STAND_IN)
        context.expose_function("__standInAddress", lambda: wallet.address)
        context.expose_function("__standInSign", sign)
        page.goto(f"{live_server.url}/")
        page.get_by_role("link", name="Petition with it").click()
        expect(page.get_by_role("heading", name="Petition with your own wallet")).to_be_visible()
        expect(page.locator("section.rules")).to_contain_text("Expected decision: about")
        send = page.get_by_role("button", name="Sign and send my petition")
        expect(send).to_be_disabled()  # nothing to sign with before the wallet connects
        page.get_by_role("button", name="Connect wallet").click()
        expect(page.locator("#wallet-address")).to_have_text(wallet.address)
        expect(page.locator("#wallet-war")).to_have_text("0.1 wAR")
        expect(send).to_be_enabled()
        page.get_by_label("Your petition").fill(PETITION)
        page.get_by_label("Your name").fill("Rosa")
        shoot(page, "petition-own-wallet")
        send.click()
        expect(page).to_have_url(re.compile(r"/petitions/[A-Za-z0-9_-]{43}/$"))
        expect(page.locator("#petition-status")).to_contain_text("Final: decided")
        shoot(page, "petition-own-wallet-decided")
        context.close()
        assert dialogs == []
        return page.url.rstrip("/").rsplit("/", 1)[1]

    petition_id = in_browser(drive)
    # The site received arbundles' bytes: the item it forwarded is the one the stand-in signed, from this wallet.
    assert [s["id"] for s in signed] == [petition_id]
    request = PetitionRequest.objects.get(message_id=petition_id)
    assert request.source == PetitionRequest.Source.SIGNED and request.petitioner == wallet.address
    assert request.user is None  # no account: the signature is the petitioner's
    from ao import models as ao_models

    forwarded = bytes(ao_models.Entry.objects.get(id=petition_id).raw)
    assert forwarded == b64url_decode(signed[0]["raw_b64"])
    petition = Petition.objects.get(id=petition_id)
    assert petition.status == "decided" and petition.petitioner == wallet.address and petition.text == PETITION
