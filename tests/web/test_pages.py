"""Pages: every one renders, user text is escaped everywhere, forms need CSRF, the status region polls until final."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.test import Client
from django.urls import reverse

from ao.permaweb.wallet import Ed25519Key
from tests.web.conftest import FedLog, new_id, out
from web import projection
from web.models import PetitionRequest

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
IMG = '<img src=x onerror="alert(2)">'
LLAMA = 10**12


@pytest.fixture
def hostile(fed_log: FedLog) -> str:
    """A decided petition whose text, name and reasons are markup."""
    return fed_log.petition(sender=Ed25519Key.generate().address, text=SCRIPT, name="<b>Mallory</b>",
                            votes=[("Ada", 5, IMG), ("Bo", 4, SCRIPT)], amount=20 * LLAMA)


def test_user_text_is_escaped_on_the_status_and_decision_pages(client: Client, hostile: str) -> None:
    for name in ("web:petition", "web:petition-status", "web:decision"):
        response = client.get(reverse(name, kwargs={"petition_id": hostile}))
        page = response.content.decode()
        assert response.status_code in (200, 286), name
        assert SCRIPT not in page and "<b>Mallory</b>" not in page and IMG not in page, name
        assert ESCAPED in page, name
    decision = client.get(reverse("web:decision", kwargs={"petition_id": hostile})).content.decode()
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in decision and "&lt;b&gt;Mallory&lt;/b&gt;" in decision
    assert "Granted: 20 LLAMA" in decision


def test_grants_feed_escapes_and_pages(client: Client, fed_log: FedLog, hostile: str) -> None:
    for i in range(21):
        fed_log.petition(sender=Ed25519Key.generate().address, text=f"Petition number {i}", name="Nia",
                         votes=[("Ada", 1, "ok")], amount=LLAMA)
    first = client.get(reverse("web:grants")).content.decode()
    assert "Page 1 of 2" in first and "Petition number 20" in first  # newest first
    second = client.get(reverse("web:grants"), {"page": 2}).content.decode()
    assert "Petition number 0" in second and SCRIPT not in second


def test_the_status_region_polls_until_the_petition_is_final(client: Client, fed_log: FedLog) -> None:
    sender = Ed25519Key.generate().address
    pid = new_id()
    fed_log.step("Credit-Notice", {"Sender": sender, "Quantity": "25000000000", "X-Petition": "Plant trees",
                                   "X-Sender-Name": "Ann"},
                 [out(sender, **{"Action": "Petition-Received", "Petition-Id": pid})])
    page = client.get(reverse("web:petition", kwargs={"petition_id": pid})).content.decode()
    assert 'hx-trigger="every 2s"' in page and 'aria-live="polite"' in page
    assert "Governor 1" in page and "Reading and grading your petition" in page
    fed_log.step("Deliberate", {"Petition-Id": pid, "Governor": "0"}, [
        out(sender, '{"grade": 0, "reason": "Too vague."}',
            **{"Action": "Petition-Vote", "Petition-Id": pid, "Governor": "Ada", "Grade": "0"}),
        out(sender, '{"grades": [0], "amount": "0"}',
            **{"Action": "Petition-Decision", "Petition-Id": pid, "Grade": "0", "Amount": "0"}),
    ])
    fragment = client.get(reverse("web:petition-status", kwargs={"petition_id": pid}), HTTP_HX_REQUEST="true")
    assert fragment.status_code == 286  # htmx stops polling
    assert "Too vague." in fragment.content.decode() and "Denied" in fragment.content.decode()
    page = client.get(reverse("web:petition", kwargs={"petition_id": pid})).content.decode()
    assert "hx-trigger" not in page


def test_an_unknown_petition_is_404(client: Client, fed_log: FedLog) -> None:
    assert client.get(reverse("web:petition", kwargs={"petition_id": new_id()})).status_code == 404


def test_a_sent_petition_shows_before_the_log_knows_it(make_user: Callable[[str], AbstractBaseUser],
                                                       client: Client) -> None:
    alice = make_user("alice")
    request = PetitionRequest.objects.create(message_id=new_id(), user=alice, petitioner=alice.custodial_wallet.address,
                                             sender_name="Alice", text="Hello Fed", offering=25_000_000_000,
                                             source="web")
    page = client.get(reverse("web:petition", kwargs={"petition_id": request.message_id})).content.decode()
    assert "Hello Fed" in page and "your offering in wAR is on its way to the Fed" in page


def test_public_pages_render(client: Client, fed_log: FedLog) -> None:
    fed_log.petition(sender=Ed25519Key.generate().address, text="Roads", name="Rex",
                     votes=[("Ada", 3, "Good.")], amount=10 * LLAMA)
    for name in ("web:home", "web:grants", "web:supply", "web:balances", "web:login", "web:signup"):
        response = client.get(reverse(name))
        assert response.status_code == 200, name
        page = response.content.decode()
        assert '<main id="main"' in page and 'aria-label="Main"' in page, name
        assert "https://" not in page.split("<footer")[0], f"{name} loads nothing from elsewhere"
    supply = client.get(reverse("web:supply")).content.decode()
    assert "<svg" in supply and "<polyline" in supply and "10 LLAMA" in supply
    assert "htmx-2.min.js" in client.get(reverse("web:home")).content.decode()


def test_balances_lookup_validates_the_address(client: Client, fed_log: FedLog) -> None:
    response = client.get(reverse("web:balances"), {"address": "not-an-address"})
    assert "43 characters" in response.content.decode()
    address = Ed25519Key.generate().address
    response = client.get(reverse("web:balances"), {"address": address})
    assert address in response.content.decode()


@pytest.mark.parametrize("name", ["web:faucet", "web:wallet-download", "web:petition-new", "web:logout"])
def test_forms_are_refused_without_a_csrf_token(make_user: Callable[[str], AbstractBaseUser], name: str) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("alice"))
    response = client.post(reverse(name), {"text": "Hi", "sender_name": "Alice"})
    assert response.status_code == 403
    assert not PetitionRequest.objects.exists()


def test_signup_is_refused_without_a_csrf_token(django_user_model: type) -> None:
    response = Client(enforce_csrf_checks=True).post(
        reverse("web:signup"), {"username": "eve", "password1": "x-Long-pass-123", "password2": "x-Long-pass-123"})
    assert response.status_code == 403
    assert not django_user_model.objects.filter(username="eve").exists()


def test_account_pages_need_login(client: Client) -> None:
    for name in ("web:account", "web:petition-new", "web:link-address"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and response["Location"].startswith(reverse("web:login")), name


def test_the_admin_shows_read_models_read_only(admin_client: Client, fed_log: FedLog) -> None:
    pid = fed_log.petition(sender=Ed25519Key.generate().address, text=SCRIPT, name="Zed",
                           votes=[("Ada", 2, "Meh.")], amount=LLAMA)
    projection.project_fed(fed_process_id=fed_log.pid)
    changelist = admin_client.get("/admin/web/petition/")
    assert changelist.status_code == 200 and pid in changelist.content.decode()
    assert admin_client.get("/admin/web/petition/add/").status_code == 403
    change = admin_client.get(f"/admin/web/petition/{pid}/change/")
    assert change.status_code == 200 and 'name="_save"' not in change.content.decode()
    assert ESCAPED in change.content.decode() and SCRIPT not in change.content.decode()
    assert admin_client.get("/admin/web/custodialwallet/").status_code == 200
