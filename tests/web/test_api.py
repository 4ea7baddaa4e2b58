"""The JSON API: its OpenAPI schema, petitions and decisions, balances, supply, the faucet, and throttling."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml
from django.contrib.auth.base_user import AbstractBaseUser
from django.test import Client
from django.urls import reverse

from ao.permaweb.wallet import Ed25519Key
from tests.web.conftest import FedLog, settle
from web import services
from web.models import FaucetDrip, PetitionRequest

pytestmark = pytest.mark.django_db

LLAMA = 10**12
TEXT = "I run a free bike repair stand on Saturdays."


def test_the_schema_lists_the_petition_endpoints(client: Client) -> None:
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    paths = schema["paths"]
    for path in ("/api/petitions/", "/api/petitions/signed/", "/api/petitions/{petition_id}/", "/api/grants/",
                 "/api/balances/{address}/", "/api/supply/", "/api/faucet/"):
        assert path in paths, path
    assert "post" in paths["/api/petitions/"] and "get" in paths["/api/petitions/"]
    assert "application/octet-stream" in paths["/api/petitions/signed/"]["post"]["requestBody"]["content"]


def test_petitions_and_decisions_are_listed_and_read(client: Client, fed_log: FedLog) -> None:
    sender = Ed25519Key.generate().address
    pid = fed_log.petition(sender=sender, text=TEXT, name="Sam", votes=[("Ada", 4, "Useful."), ("Bo", 3, "Kind.")],
                           amount=10 * LLAMA)
    listed = client.get(reverse("web-api:petitions")).json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == pid
    assert listed["results"][0]["amount"] == str(10 * LLAMA)  # amounts are strings of base units
    one = client.get(reverse("web-api:petition", kwargs={"petition_id": pid})).json()
    assert (one["status"], one["final"], one["text"]) == ("decided", True, TEXT)
    assert [(v["governor"], v["grade"], v["reason"]) for v in one["petition"]["votes"]] == [
        ("Ada", 4, "Useful."), ("Bo", 3, "Kind.")]
    assert one["petition"]["grant"]["status"] == "granted" and one["petition"]["decision"]["grades"] == [4, 3]
    grants = client.get(reverse("web-api:grants")).json()
    assert [(g["petition"], g["amount"]) for g in grants["results"]] == [(pid, str(10 * LLAMA))]
    assert client.get(reverse("web-api:petitions"), {"petitioner": "x" * 43}).json()["count"] == 0


def test_balances_and_supply(client: Client, make_user: Callable[[str], AbstractBaseUser],
                             ledgers: dict[str, str]) -> None:
    alice = make_user("alice")
    services.faucet_drip(user=alice)
    settle()
    address = alice.custodial_wallet.address
    found = client.get(reverse("web-api:balances", kwargs={"address": address})).json()
    assert found == {"address": address, "wAR": "100000000000", "LLAMA": "0"}
    assert client.get(reverse("web-api:balances", kwargs={"address": "short"})).status_code == 400
    supply = client.get(reverse("web-api:supply")).json()
    assert supply == {"supply": "0", "max_supply": str(11_111_111 * LLAMA), "granted": "0", "grants": 0}


def test_submitting_needs_a_session(client: Client, stand_in_fed: str) -> None:
    response = client.post(reverse("web-api:petitions"), {"text": TEXT, "sender_name": "Sam"},
                           content_type="application/json")
    assert response.status_code == 403
    assert not PetitionRequest.objects.exists()


def test_session_writes_need_the_csrf_token(make_user: Callable[[str], AbstractBaseUser],
                                           ledgers: dict[str, str]) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("alice"))
    response = client.post(reverse("web-api:faucet"))
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert not FaucetDrip.objects.exists()


def test_a_session_petition_and_its_errors(make_user: Callable[[str], AbstractBaseUser], stand_in_fed: str) -> None:
    alice = make_user("alice")
    services.faucet_drip(user=alice)
    settle()
    client = Client()
    client.force_login(alice)
    bad = client.post(reverse("web-api:petitions"), {"text": "", "sender_name": "S"}, content_type="application/json")
    assert bad.status_code == 400 and set(bad.json()["errors"]) == {"text", "sender_name"}
    sent = client.post(reverse("web-api:petitions"), {"text": TEXT, "sender_name": "Sam"},
                       content_type="application/json")
    assert sent.status_code == 201
    body = sent.json()
    assert body["source"] == "api" and body["status_url"] == f"/api/petitions/{body['id']}/"
    status = client.get(body["status_url"]).json()
    assert (status["status"], status["final"]) == ("sent", False)
    again = client.post(reverse("web-api:petitions"), {"text": TEXT, "sender_name": "Sam"},
                        content_type="application/json")
    assert again.status_code == 429 and "still being decided" in again.json()["detail"]


def test_the_faucet_limit_answers_429_with_a_message(make_user: Callable[[str], AbstractBaseUser],
                                                     ledgers: dict[str, str], settings: object) -> None:
    settings.FAUCET_PER_ACCOUNT = 1
    client = Client()
    client.force_login(make_user("alice"))
    first = client.post(reverse("web-api:faucet"))
    assert first.status_code == 201 and first.json()["amount"] == "100000000000"
    second = client.post(reverse("web-api:faucet"))
    assert second.status_code == 429
    assert "1 drips per 24 h" in second.json()["detail"] and int(second["Retry-After"]) > 0
    assert FaucetDrip.objects.count() == 1


def test_request_rates_are_throttled_per_client(make_user: Callable[[str], AbstractBaseUser],
                                                ledgers: dict[str, str], settings: object) -> None:
    settings.LIMITS = {**settings.LIMITS, "petition_client": "2/hour", "faucet_ip": "1/hour"}
    client = Client()
    for _ in range(2):
        assert client.post(reverse("web-api:petition-signed"), data=b"junk",
                           content_type="application/octet-stream").status_code in (400, 503)
    throttled = client.post(reverse("web-api:petition-signed"), data=b"junk",
                            content_type="application/octet-stream")
    assert throttled.status_code == 429
    assert throttled.json()["detail"].startswith(
        "Too many petition submissions from this client: the limit is 2 per hour; try again in")
    assert 3500 < int(throttled["Retry-After"]) <= 3601
    user_client = Client()
    user_client.force_login(make_user("alice"))
    assert user_client.post(reverse("web-api:faucet")).status_code == 201
    throttled = user_client.post(reverse("web-api:faucet"))
    assert throttled.status_code == 429 and "Too many faucet requests from this address" in throttled.json()["detail"]
    assert FaucetDrip.objects.count() == 1
    # Reading is never throttled.
    assert client.get(reverse("web-api:petitions")).status_code == 200
