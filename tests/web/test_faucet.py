"""The faucet: the operator mints demo wAR to an account, within a per-account limit, with an audit row."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.test import Client
from django.urls import reverse

from ao import models
from tests.web.conftest import settle, tags_of, war_balance
from web import services
from web.errors import FaucetDisabled, NotRunning, RateLimited
from web.models import FaucetDrip

pytestmark = pytest.mark.django_db

DRIP = 100_000_000_000


def test_a_drip_mints_war_to_the_account(make_user: Callable[[str], AbstractBaseUser],
                                         ledgers: dict[str, str]) -> None:
    alice = make_user("alice")
    drip = services.faucet_drip(user=alice)
    settle()
    address = alice.custodial_wallet.address
    assert war_balance(address) == DRIP
    result = models.Result.objects.get(process_id=ledgers["wAR"], message_id=drip.message_id)
    [confirmation] = result.body["Messages"]
    assert tags_of(confirmation)["Action"] == "Mint-Confirmation" and tags_of(confirmation)["Recipient"] == address
    assert (drip.address, int(drip.amount)) == (address, DRIP)


def test_over_the_limit_the_faucet_refuses_and_sends_nothing(make_user: Callable[[str], AbstractBaseUser],
                                                             ledgers: dict[str, str], settings: object) -> None:
    settings.FAUCET_PER_ACCOUNT = 2
    alice, bob = make_user("alice"), make_user("bob")
    services.faucet_drip(user=alice)
    services.faucet_drip(user=alice)
    scheduled = models.Assignment.objects.filter(process_id=ledgers["wAR"]).count()
    with pytest.raises(RateLimited, match="2 drips per 24 h") as refused:
        services.faucet_drip(user=alice)
    assert refused.value.retry_after and refused.value.retry_after > 0
    assert models.Assignment.objects.filter(process_id=ledgers["wAR"]).count() == scheduled
    assert FaucetDrip.objects.filter(user=alice).count() == 2
    services.faucet_drip(user=bob)  # the limit is per account
    settle()
    assert war_balance(alice.custodial_wallet.address) == 2 * DRIP


def test_a_disabled_faucet_refuses(make_user: Callable[[str], AbstractBaseUser], ledgers: dict[str, str],
                                   settings: object) -> None:
    settings.FAUCET_ENABLED = False
    alice = make_user("alice")
    with pytest.raises(FaucetDisabled, match="turned off"):
        services.faucet_drip(user=alice)
    assert not FaucetDrip.objects.exists()


def test_the_faucet_needs_the_war_ledger(make_user: Callable[[str], AbstractBaseUser]) -> None:
    alice = make_user("alice")
    with pytest.raises(NotRunning, match="wAR is not running on this node"):
        services.faucet_drip(user=alice)
    assert not FaucetDrip.objects.exists()


def test_the_faucet_button_reports_the_refusal(make_user: Callable[[str], AbstractBaseUser],
                                               ledgers: dict[str, str], settings: object) -> None:
    settings.FAUCET_PER_ACCOUNT = 1
    client = Client()
    client.force_login(make_user("alice"))
    assert client.post(reverse("web:faucet")).status_code == 302
    refused = client.post(reverse("web:faucet"))
    assert refused.status_code == 429 and 86000 < int(refused["Retry-After"]) <= 86401
    page = refused.content.decode()
    assert "1 drips per 24 h" in page and "Nothing was sent or changed" in page
    assert FaucetDrip.objects.count() == 1


def test_the_faucet_counts_per_address_across_accounts(make_user: Callable[[str], AbstractBaseUser],
                                                       ledgers: dict[str, str], settings: object) -> None:
    """New accounts from one address cannot each take the faucet's wAR: the address has its own limit."""
    settings.LIMITS = {**settings.LIMITS, "faucet_ip": "2/hour"}
    for name in ("alice", "bob"):
        client = Client()
        client.force_login(make_user(name))
        assert client.post(reverse("web:faucet")).status_code == 302
    client = Client()
    client.force_login(make_user("carol"))
    refused = client.post(reverse("web:faucet"))
    assert refused.status_code == 429 and 3500 < int(refused["Retry-After"]) <= 3601
    assert "Too many faucet requests from this address: the limit is 2 per hour" in refused.content.decode()
    assert FaucetDrip.objects.count() == 2
    # Another address is not affected.
    other = Client(REMOTE_ADDR="10.0.0.7")
    other.force_login(make_user("dave"))
    assert other.post(reverse("web:faucet")).status_code == 302
    assert FaucetDrip.objects.count() == 3
