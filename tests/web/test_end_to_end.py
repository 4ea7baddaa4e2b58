"""The whole path on the real Fed (tiny model): sign up, faucet, petition through the form, governors inside
evaluation, the live status page, the decision record, balances, and a rebuild that reproduces the read models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from ao import weave
from policy import services as fed_services
from tests.policy.test_fed import TEST_PARAMS
from tests.support.tiny_gguf import tiny_gguf_path
from tests.web.conftest import settle
from tests.web.test_projection import snapshot
from web import services
from web.errors import RateLimited
from web.models import Grant, Petition, PetitionRequest

pytestmark = pytest.mark.django_db

LLAMA = 10**12


@pytest.fixture
def fed(tmp_path: Path, node_keys: None, ledger_wasm: bytes) -> str:
    """The real Fed on the tiny model, spawned and evaluated."""
    model_tx = weave.weave_upload(path=tiny_gguf_path(tmp_path), tags=[], name="tiny")
    process_id = fed_services.fed_bootstrap(model_tx=model_tx, overrides=TEST_PARAMS).process_id
    settle()
    return process_id


def test_a_petition_from_the_form_to_the_grant(fed: str, make_user: Callable[[str], AbstractBaseUser]) -> None:
    alice = make_user("alice")
    client = Client()
    client.force_login(alice)
    client.post(reverse("web:faucet"))
    settle()
    response = client.post(reverse("web:petition-new"),
                           {"text": "I repair bicycles for free for kids in my street.", "sender_name": "Alice"})
    assert response.status_code == 302
    petition_id = PetitionRequest.objects.get().message_id
    status_url = reverse("web:petition-status", kwargs={"petition_id": petition_id})
    assert "your offering in wAR is on its way to the Fed" in client.get(status_url).content.decode()
    settle()  # wAR transfer, Credit-Notice, both governors, the decision, the grant

    fragment = client.get(status_url, HTTP_HX_REQUEST="true")
    assert fragment.status_code == 286
    page = fragment.content.decode()
    petition = Petition.objects.get(id=petition_id)
    assert petition.status == "decided" and petition.votes.count() == 2
    amount = (petition.grade + 1) * LLAMA  # TEST_PARAMS' schedule
    assert int(petition.amount) == amount and f"Granted {amount // LLAMA} LLAMA" in page
    assert "Governor 1 of 2 (Ada)" in page and "Governor 2 of 2 (Bo)" in page
    assert Grant.objects.get(petition=petition).status == "granted"

    decision = client.get(reverse("web:decision", kwargs={"petition_id": petition_id})).content.decode()
    for vote in petition.votes.all():
        assert vote.governor in decision
    api = client.get(reverse("web-api:balances", kwargs={"address": alice.custodial_wallet.address})).json()
    assert api["LLAMA"] == str(amount) and api["wAR"] == str(100_000_000_000 - 25_000_000_000)
    assert client.get(reverse("web-api:supply")).json()["supply"] == str(amount)

    # The Fed takes one petition per address per cooldown: the site says so instead of sending a doomed one.
    with pytest.raises(RateLimited, match=r"one petition per address every 23 h .* you can petition again in 2[23] h"):
        services.petition_submit(user=alice, text="Another petition.", sender_name="Alice")
    assert PetitionRequest.objects.count() == 1

    before = snapshot()
    call_command("web", "rebuild")
    assert snapshot() == before
