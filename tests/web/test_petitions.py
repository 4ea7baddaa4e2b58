"""Petitions: validated before anything is sent, signed by the custodial wallet, rate limited, and delivered to
the wAR ledger as a Transfer to the Fed."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from ao import models
from ao.effects import keys
from ao.permaweb import dataitem
from ao.permaweb.wallet import Ed25519Key
from ao.units import su
from tests.web.conftest import settle, tags_of, war_balance
from web import projection, selectors, services
from web.errors import InsufficientBalance, InvalidInput, NotRunning, RateLimited
from web.models import Petition, PetitionRequest

pytestmark = pytest.mark.django_db

OFFERING = 25_000_000_000
TEXT = "I teach llama husbandry to kids in my village every weekend."


def _scheduled() -> int:
    return models.Assignment.objects.count()


@pytest.mark.parametrize(("text", "name", "field"), [
    ("", "Alice", "text"),
    ("   ", "Alice", "text"),
    ("x" * 251, "Alice", "text"),
    (TEXT, "A", "sender_name"),
    (TEXT, " " * 5, "sender_name"),
    (TEXT, "n" * 21, "sender_name"),
], ids=["empty", "blank", "too-long", "name-short", "name-blank", "name-long"])
def test_invalid_petitions_are_refused_and_nothing_is_sent(funded: AbstractBaseUser, text: str, name: str,
                                                           field: str) -> None:
    before = _scheduled()
    with pytest.raises(InvalidInput) as refused:
        services.petition_submit(user=funded, text=text, sender_name=name)
    assert field in refused.value.fields and "characters" in refused.value.fields[field]
    assert _scheduled() == before
    assert not PetitionRequest.objects.exists()


def test_a_petition_reaches_the_war_ledger_as_a_transfer_to_the_fed(funded: AbstractBaseUser,
                                                                    stand_in_fed: str) -> None:
    address = funded.custodial_wallet.address
    sent = services.petition_submit(user=funded, text=f"  {TEXT}  ", sender_name=" Alice ")
    assert (sent.text, sent.sender_name, int(sent.offering)) == (TEXT, "Alice", OFFERING)
    settle()
    war = selectors.token_process_id("wAR")
    result = models.Result.objects.get(process_id=war, message_id=sent.message_id)
    debit, credit = result.body["Messages"]
    assert (debit["Target"], tags_of(debit)["Action"]) == (address, "Debit-Notice")
    assert (credit["Target"], tags_of(credit)["Action"]) == (stand_in_fed, "Credit-Notice")
    assert tags_of(credit)["X-Petition"] == TEXT and tags_of(credit)["X-Sender-Name"] == "Alice"
    assert tags_of(credit)["Sender"] == address and tags_of(credit)["Quantity"] == str(OFFERING)
    assert war_balance(address) == 100_000_000_000 - OFFERING
    # The stand-in Fed got the pushed Credit-Notice, whose Pushed-For is the petition id.
    pushed = models.Assignment.objects.filter(process_id=stand_in_fed).select_related("message").last()
    assert dataitem.parse(bytes(pushed.message.raw)).tag("Pushed-For") == sent.message_id
    # The projection of the wAR ledger shows it as submitted.
    projection.project_fed(fed_process_id=stand_in_fed)
    petition = Petition.objects.get(id=sent.message_id)
    assert (petition.status, petition.petitioner, petition.text) == ("submitted", address, TEXT)


def test_one_open_petition_at_a_time_then_an_hourly_limit(funded: AbstractBaseUser, settings: object) -> None:
    first = services.petition_submit(user=funded, text=TEXT, sender_name="Alice")
    settle()  # the stand-in Fed never decides: the petition stays open
    before = _scheduled()
    with pytest.raises(RateLimited, match="still being decided"):
        services.petition_submit(user=funded, text=TEXT, sender_name="Alice")
    assert _scheduled() == before and PetitionRequest.objects.count() == 1
    # Half an hour later an undecided petition no longer blocks; the hourly limit still counts it.
    PetitionRequest.objects.filter(pk=first.pk).update(created_at=timezone.now() - dt.timedelta(minutes=31))
    settings.PETITIONS_PER_HOUR = 1
    with pytest.raises(RateLimited, match="at most 1 petitions per hour"):
        services.petition_submit(user=funded, text=TEXT, sender_name="Alice")
    assert _scheduled() == before
    settings.PETITIONS_PER_HOUR = 2
    second = services.petition_submit(user=funded, text="Another one.", sender_name="Alice")
    assert _scheduled() == before + 1 and second.message_id != first.message_id


def test_a_petition_without_enough_war_is_refused(make_user: Callable[[str], AbstractBaseUser],
                                                  stand_in_fed: str) -> None:
    bob = make_user("bob")
    before = _scheduled()
    with pytest.raises(InsufficientBalance, match="faucet"):
        services.petition_submit(user=bob, text=TEXT, sender_name="Bob")
    assert _scheduled() == before


def test_without_a_fed_the_form_says_it_is_not_running(make_user: Callable[[str], AbstractBaseUser],
                                                       ledgers: dict[str, str]) -> None:
    alice = make_user("alice")
    with pytest.raises(NotRunning, match="not running yet"):
        services.petition_submit(user=alice, text=TEXT, sender_name="Alice")
    client = Client()
    client.force_login(alice)
    assert "The Fed is not running yet" in client.get(reverse("web:petition-new")).content.decode()


def test_the_form_sends_and_redirects_to_the_status_page(funded: AbstractBaseUser) -> None:
    client = Client()
    client.force_login(funded)
    response = client.post(reverse("web:petition-new"), {"text": TEXT, "sender_name": "Alice"})
    sent = PetitionRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("web:petition", kwargs={"petition_id": sent.message_id})
    page = client.get(response["Location"]).content.decode()
    assert TEXT in page and "your offering in wAR is on its way to the Fed" in page


def test_the_form_shows_field_errors(funded: AbstractBaseUser) -> None:
    client = Client()
    client.force_login(funded)
    response = client.post(reverse("web:petition-new"), {"text": "   ", "sender_name": "A"})
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "text" in errors and "sender_name" in errors
    assert not PetitionRequest.objects.exists()


def _signed_petition(key: Ed25519Key, war: str, fed: str, *, quantity: int = OFFERING,
                     text: str = TEXT) -> dataitem.DataItem:
    return dataitem.create_data_item(
        key, b"",
        tags=[("Data-Protocol", su.DATA_PROTOCOL), ("Variant", su.VARIANT), ("Type", "Message"),
              ("Action", "Transfer"), ("Recipient", fed), ("Quantity", str(quantity)), ("X-Petition", text),
              ("X-Sender-Name", "Carol")],
        target=war, anchor=os.urandom(32),
    )


def _fund(address: str, war: str) -> None:
    mint = dataitem.create_data_item(
        keys.operator_wallet(), b"",
        tags=[("Data-Protocol", su.DATA_PROTOCOL), ("Variant", su.VARIANT), ("Type", "Message"), ("Action", "Mint"),
              ("Quantity", str(OFFERING)), ("Recipient", address)],
        target=war, anchor=os.urandom(32),
    )
    services.ao_services.mu_submit(raw=mint.serialize())
    settle()


def test_a_client_signed_petition_is_forwarded_as_is(stand_in_fed: str, ledgers: dict[str, str]) -> None:
    carol = Ed25519Key.generate()
    _fund(carol.address, ledgers["wAR"])
    item = _signed_petition(carol, ledgers["wAR"], stand_in_fed)
    response = Client().post(reverse("web-api:petition-signed"), data=item.serialize(),
                             content_type="application/octet-stream")
    assert response.status_code == 202, response.content
    assert response.json()["id"] == item.id and response.json()["petitioner"] == carol.address
    assert bytes(models.Entry.objects.get(id=item.id).raw) == item.serialize()
    settle()
    result = models.Result.objects.get(process_id=ledgers["wAR"], message_id=item.id)
    assert [tags_of(m)["Action"] for m in result.body["Messages"]] == ["Debit-Notice", "Credit-Notice"]


def test_a_signed_item_that_is_not_a_petition_is_refused(stand_in_fed: str, ledgers: dict[str, str]) -> None:
    carol = Ed25519Key.generate()
    _fund(carol.address, ledgers["wAR"])
    before = _scheduled()
    wrong = _signed_petition(carol, ledgers["wAR"], stand_in_fed, quantity=OFFERING + 1)
    response = Client().post(reverse("web-api:petition-signed"), data=wrong.serialize(),
                             content_type="application/octet-stream")
    assert response.status_code == 400 and "Quantity must be the offering" in response.json()["detail"]
    good = bytearray(_signed_petition(carol, ledgers["wAR"], stand_in_fed).serialize())
    good[10] ^= 0x01  # a byte of the signature
    tampered = bytes(good)
    response = Client().post(reverse("web-api:petition-signed"), data=tampered,
                             content_type="application/octet-stream")
    # The site checks the signature itself and hands the messenger only what verified (one check, not two).
    assert response.status_code == 400 and "signature does not verify" in response.json()["detail"]
    assert _scheduled() == before
