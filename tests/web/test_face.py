"""The site's face: what a petitioner learns before writing, balances that refresh by themselves, the own-wallet
page, branded error pages and the API docs served without a CDN."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from tests.web.conftest import settle
from web import selectors, services
from web.errors import RateLimited

pytestmark = pytest.mark.django_db


def _client(user: AbstractBaseUser) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_form_states_the_rule_the_offering_and_the_expected_wait_before_writing(
        funded: AbstractBaseUser) -> None:
    page = _client(funded).get(reverse("web:petition-new")).content.decode()
    start = page.index("Before you write")
    rules = page[start:page.index("<form", start)]
    assert "One petition per address" in rules and "You can send one now" in rules
    assert "The offering: 0.025 wAR" in rules and "refunded in full" in rules
    # No decision yet: the default time per decision, for the petition itself.
    assert f"Expected decision: about {int(selectors.DEFAULT_DECISION_S)} s" in rules
    assert 'name="text"' in page and "Sign the petition with it" in page


def test_a_second_petition_shows_when_the_address_may_petition_again(
        funded: AbstractBaseUser, monkeypatch: pytest.MonkeyPatch) -> None:
    params = dataclasses.replace(selectors.fed_params(), cooldown_ms=23 * 3600 * 1000)
    ends = timezone.now() + dt.timedelta(hours=21, minutes=13, seconds=30)
    monkeypatch.setattr(selectors, "fed_params", lambda process_id=None: params)
    monkeypatch.setattr(selectors, "cooldown_ends", lambda p, address, **_: ends)
    page = _client(funded).get(reverse("web:petition-new")).content.decode()
    assert "One petition per address every 23 h" in page
    assert re.search(r"You can petition again in <strong id=\"next-petition\">21 h 14 min</strong>", page)
    assert 'name="text"' not in page  # the form opens again when they may petition
    with pytest.raises(RateLimited, match="you can petition again in 21 h 14 min"):
        services.petition_submit(user=funded, text="Again.", sender_name="Alice")


def test_the_balance_refreshes_by_itself_after_the_faucet(make_user: Callable[[str], AbstractBaseUser],
                                                          stand_in_fed: str) -> None:
    user = make_user("bea")
    client = _client(user)
    assert "hx-get" not in client.get(reverse("web:account")).content.decode()  # nothing on its way: no polling
    client.post(reverse("web:faucet"))
    page = client.get(reverse("web:account")).content.decode()
    assert f'hx-get="{reverse("web:account-balances")}"' in page and "Demo wAR is on its way" in page
    assert "the next one comes back" in page and "(in 24 h)" in page  # when the used drip refills (rounded up)
    pending = client.get(reverse("web:account-balances"), HTTP_HX_REQUEST="true")
    assert pending.status_code == 200 and "hx-trigger" in pending.content.decode()
    settle()
    done = client.get(reverse("web:account-balances"), HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and "hx-trigger" not in done.content.decode()  # htmx stops polling
    assert "<dd>0.1</dd>" in done.content.decode()


def test_the_own_wallet_page_carries_what_the_wallet_signs(client: Client, stand_in_fed: str,
                                                           ledgers: dict[str, str]) -> None:
    page = client.get(reverse("web:petition-wallet")).content.decode()  # no account needed
    assert "Connect wallet" in page and 'src="/static/web/wallet.js"' in page
    assert f'data-war="{ledgers["wAR"]}"' in page and f'data-fed="{stand_in_fed}"' in page
    assert 'data-offering="25000000000"' in page and f'data-api-url="{reverse("web-api:petition-signed")}"' in page
    tags = re.search(r'<script id="petition-tags" type="application/json">(.*?)</script>', page).group(1)
    assert '"Action": "Transfer"' in tags and '"Data-Protocol": "ao"' in tags


def test_error_pages_are_the_sites_own(client: Client, rf: RequestFactory) -> None:
    missing = client.get("/no/such/page/")
    assert missing.status_code == 404 and "Not found" in missing.content.decode()
    assert 'src="/static/web/logo.svg"' in missing.content.decode()
    strict = Client(enforce_csrf_checks=True)
    refused = strict.post(reverse("web:login"), {"username": "a", "password": "b"})
    assert refused.status_code == 403 and "This form expired" in refused.content.decode()
    assert "Nothing was sent or changed" in refused.content.decode()
    from django.views.defaults import server_error

    broken = server_error(rf.get("/"))
    assert broken.status_code == 500 and "Something went wrong on our side" in broken.content.decode()


def test_the_api_docs_are_a_page_served_from_this_site_alone(client: Client) -> None:
    docs = client.get(reverse("api-docs"))
    html = docs.content.decode()
    assert docs.status_code == 200 and docs["Content-Type"].startswith("text/html")
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "https://" not in html and "<script>" not in html  # no CDN, no inline script (the CSP forbids it)
    script = client.get(reverse("api-docs"), {"script": ""})
    assert script.status_code == 200 and reverse("schema") in script.content.decode()
    assert "'unsafe-inline'" not in docs["Content-Security-Policy"]
    assert 'href="/api/docs/"' in client.get("/").content.decode()  # the footer links the page, not the YAML
