"""The site under abuse: sign-ups per address, login lockout and unlock (site and admin), password reset, the
Fed's queue bound, and the security headers."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from ao import models
from ao import services as ao_services
from ao.permaweb import dataitem
from tests.web.conftest import settle, war_balance
from web import selectors, services
from web.errors import FedBusy
from web.models import OPEN_STATUSES, Petition, PetitionRequest

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a-Long-enough-passphrase-42"


def _signup(client: Client, username: str) -> object:
    return client.post(reverse("web:signup"), {"username": username, "password1": PASSWORD, "password2": PASSWORD})


def test_sign_ups_are_limited_per_address(settings: object, django_user_model: type,
                                          monkeypatch: pytest.MonkeyPatch, rsa_wallet: object) -> None:
    monkeypatch.setattr(services.Wallet, "generate", staticmethod(lambda: rsa_wallet))
    monkeypatch.setattr(services.CustodialWallet.objects, "create", lambda **kw: None)  # one pooled key, many users
    settings.LIMITS = {**settings.LIMITS, "signup_ip": "2/hour"}
    for name in ("ann", "ben"):
        assert _signup(Client(), name).status_code == 302
    refused = _signup(Client(), "cat")
    assert refused.status_code == 429 and 3500 < int(refused["Retry-After"]) <= 3601
    page = refused.content.decode()
    assert "Too many sign-ups from this address: the limit is 2 per hour; try again in 1 h." in page
    assert not django_user_model.objects.filter(username="cat").exists()
    # A form with errors is not a sign-up: it does not use up the address's places.
    assert Client().post(reverse("web:signup"), {"username": "dan", "password1": "x", "password2": "y"}
                         ).status_code == 200
    assert _signup(Client(REMOTE_ADDR="10.4.4.4"), "eve").status_code == 302


def _login(client: Client, username: str, password: str, url: str = "/login/") -> object:
    return client.post(url, {"username": username, "password": password})


def test_failed_logins_lock_the_account_then_staff_unlock_it(make_user: Callable[[str], AbstractBaseUser],
                                                             settings: object) -> None:
    make_user("alice")
    right = "pw-alice-Long-Enough-1"
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(client, "alice", "wrong").status_code == 200  # the form again, with its error
    locked = _login(client, "alice", "wrong")
    assert locked.status_code == 429
    assert settings.LOGIN_LOCKOUT_S - 5 < int(locked["Retry-After"]) <= settings.LOGIN_LOCKOUT_S + 1
    assert "logging in is locked for 15 min" in locked.content.decode()
    # The right password does not get in while locked, from this address or any other.
    assert _login(client, "alice", right).status_code == 429
    assert _login(Client(REMOTE_ADDR="10.7.7.7"), "alice", right).status_code == 429
    assert "_auth_user_id" not in client.session
    call_command("axes_reset_username", "alice")  # staff unlock (also: deleting the attempt in the admin)
    assert _login(Client(REMOTE_ADDR="10.7.7.7"), "alice", right).status_code == 302
    # An address guessing across many accounts is locked too, for every account, while others are not.
    make_user("bob")
    guesser = Client(REMOTE_ADDR="10.8.8.8")
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(guesser, f"someone-{i}", "guess").status_code == 200
    assert _login(guesser, "someone-else", "guess").status_code == 429
    assert _login(guesser, "bob", "pw-bob-Long-Enough-1").status_code == 429
    assert _login(Client(REMOTE_ADDR="10.9.9.9"), "bob", "pw-bob-Long-Enough-1").status_code == 302
    call_command("axes_reset_ip", "10.8.8.8")
    assert _login(guesser, "bob", "pw-bob-Long-Enough-1").status_code == 302


def test_a_password_check_waits_for_another_one_on_the_same_account_or_address(
        django_user_model: type, settings: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a password check for an account (or from an address) runs in any worker, another one waits for it, and
    is refused with 429 if it would wait too long: concurrent guesses cannot all be checked before django-axes has
    counted the earlier ones (bench/load.py measures the lockout under a real flood: exactly N checked)."""
    from axes.models import AccessAttempt

    from ao import limits

    django_user_model.objects.create_user("alice", password=PASSWORD)
    monkeypatch.setattr(limits, "LOCK_WAIT_S", 0.2)
    with limits.exclusive("login-user", "alice", what="login for this account"):  # another worker is checking
        busy = _login(Client(REMOTE_ADDR="10.3.0.1"), "alice", "wrong")
        assert busy.status_code == 429 and busy["Retry-After"] == "2"
        assert "Another login for this account is being checked right now" in busy.content.decode()
        assert not AccessAttempt.objects.exists()  # refused before any password check
        assert _login(Client(REMOTE_ADDR="10.3.0.2"), "bob", "wrong").status_code == 200  # others go on
    with limits.exclusive("login-ip", "10.3.0.3", what="login from this address"):
        assert _login(Client(REMOTE_ADDR="10.3.0.3"), "carol", "wrong").status_code == 429
    assert _login(Client(REMOTE_ADDR="10.3.0.1"), "alice", "wrong").status_code == 200  # once it is free


def test_the_admin_login_locks_out_the_same_way(django_user_model: type, settings: object) -> None:
    django_user_model.objects.create_user("root", password=PASSWORD, is_staff=True, is_superuser=True)
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "root", "wrong", url="/admin/login/")
    locked = _login(client, "root", PASSWORD, url="/admin/login/")
    assert locked.status_code == 429 and int(locked["Retry-After"]) > 0
    assert client.get("/admin/").status_code == 302  # still not signed in
    call_command("axes_reset")
    assert _login(client, "root", PASSWORD, url="/admin/login/").status_code == 302
    assert client.get("/admin/").status_code == 200


def test_a_lockout_ends_by_itself_after_the_cool_off(make_user: Callable[[str], AbstractBaseUser],
                                                     settings: object) -> None:
    from axes.models import AccessAttempt

    make_user("alice")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "alice", "wrong")
    assert _login(client, "alice", "pw-alice-Long-Enough-1").status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - dt.timedelta(seconds=1))
    assert _login(client, "alice", "pw-alice-Long-Enough-1").status_code == 302


def test_password_reset_by_email_sets_a_new_password(django_user_model: type, settings: object) -> None:
    django_user_model.objects.create_user("alice", email="alice@example.org", password=PASSWORD)
    client = Client()
    assert "Reset it by email" in client.get(reverse("web:login")).content.decode()
    response = client.post(reverse("web:password-reset"), {"email": "alice@example.org"})
    assert response.status_code == 302 and response["Location"] == reverse("web:password-reset-sent")
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["alice@example.org"]
    link = re.search(r"http://testserver(/password-reset/\S+/)", mail.outbox[0].body).group(1)
    form = client.get(link, follow=True)
    assert form.status_code == 200 and "Choose a new password" in form.content.decode()
    new = "another-Long-passphrase-77"
    done = client.post(form.redirect_chain[-1][0], {"new_password1": new, "new_password2": new})
    assert done.status_code == 302 and done["Location"] == reverse("web:password-reset-done")
    assert _login(Client(), "alice", new).status_code == 302
    assert _login(Client(REMOTE_ADDR="10.2.2.2"), "alice", PASSWORD).status_code == 200  # the old one is gone
    # The link works once.
    assert "used already or has expired" in client.get(link, follow=True).content.decode()
    # Unknown addresses get the same answer and no mail; requests are limited per address.
    settings.LIMITS = {**settings.LIMITS, "password_reset_ip": "3/hour"}  # one request was made above
    assert client.post(reverse("web:password-reset"), {"email": "nobody@example.org"}).status_code == 302
    assert len(mail.outbox) == 1
    assert client.post(reverse("web:password-reset"), {"email": "alice@example.org"}).status_code == 302
    refused = client.post(reverse("web:password-reset"), {"email": "alice@example.org"})
    assert refused.status_code == 429 and "password-reset requests from this address" in refused.content.decode()
    assert len(mail.outbox) == 2


# --- the Fed's queue bound ----------------------------------------------------------------------------------


def _backlog(waiting: int, seconds_each: int) -> None:
    """A Fed that decided five petitions, `seconds_each` apiece, and has `waiting` received but not decided."""
    start = timezone.now() - dt.timedelta(hours=1)
    for i in range(5):
        received = start + dt.timedelta(seconds=i * seconds_each)
        Petition.objects.create(id=f"decided-{i}".ljust(43, "x"), petitioner="p" * 43, status="decided",
                                received_at=received, decided_at=received,
                                finished_at=received + dt.timedelta(seconds=seconds_each))
    for i in range(waiting):
        Petition.objects.create(id=f"waiting-{i}".ljust(43, "x"), petitioner="p" * 43, status="received",
                                received_at=timezone.now())


def test_a_petition_that_would_wait_too_long_is_refused_before_any_war_moves(funded: AbstractBaseUser,
                                                                              settings: object) -> None:
    settings.FED_MAX_WAIT_S = 600
    _backlog(waiting=9, seconds_each=60)  # (9 + 1) x 60 s = 600 s: just within the bound
    queue = selectors.fed_queue()
    assert (queue.waiting, queue.seconds_per_decision, queue.measured) == (9, 60.0, True)
    Petition.objects.create(id="waiting-9".ljust(43, "x"), petitioner="p" * 43, status="deliberating",
                            received_at=timezone.now())
    address = funded.custodial_wallet.address
    balance, scheduled = war_balance(address), models.Assignment.objects.count()
    with pytest.raises(FedBusy) as refused:
        services.petition_submit(user=funded, text="I mend fishing nets for my village.", sender_name="Alice")
    assert ("the Fed has 10 petitions waiting and decides one in about 1 min, so a new one would wait about "
            "11 min for its decision") in str(refused.value)
    assert "try again in about 1 min" in str(refused.value) and refused.value.retry_after == 61
    # The page and the API say the same, with 503 and Retry-After; nothing was sent, no wAR moved.
    client = Client()
    client.force_login(funded)
    page = client.post(reverse("web:petition-new"), {"text": "I mend nets.", "sender_name": "Alice"})
    assert page.status_code == 503 and page["Retry-After"] == "61" and "would wait about" in page.content.decode()
    api = client.post(reverse("web-api:petitions"), data=json.dumps({"text": "I mend nets.", "sender_name": "Alice"}),
                      content_type="application/json")
    assert api.status_code == 503 and api["Retry-After"] == "61" and "would wait about" in api.json()["detail"]
    settle()
    assert models.Assignment.objects.count() == scheduled and not PetitionRequest.objects.exists()
    assert war_balance(address) == balance
    # Once the backlog shrinks, petitions are taken again.
    Petition.objects.filter(status="received").update(status="decided", decided_at=timezone.now())
    assert services.petition_submit(user=funded, text="I mend fishing nets.", sender_name="Alice").message_id


def test_before_any_decision_the_queue_uses_a_default_time(stand_in_fed: str) -> None:
    queue = selectors.fed_queue()
    assert (queue.waiting, queue.seconds_per_decision, queue.measured) == (0, selectors.DEFAULT_DECISION_S, False)


def test_every_petition_status_is_open_or_final() -> None:
    assert not set(OPEN_STATUSES) & set(selectors.FINAL_STATUSES)
    assert set(OPEN_STATUSES) | set(selectors.FINAL_STATUSES) == set(Petition.Status.values)


def test_sent_petitions_wait_until_the_ledger_answers_and_a_refused_one_is_final(funded: AbstractBaseUser) -> None:
    address = funded.custodial_wallet.address

    def waiting() -> int:
        return selectors.fed_queue().waiting

    def answer(request: PetitionRequest) -> str:
        request.refresh_from_db()
        return request.ledger_answer

    # Sent, not evaluated by wAR yet: it waits, and blocks the account's next petition.
    first = services.petition_submit(user=funded, text="I mend fishing nets for my village.", sender_name="Alice")
    assert (answer(first), waiting()) == ("", 1)
    assert selectors.open_requests([first]) == [first]
    # Credited to the Fed: now the log's petition, counted once (not as sent and again as in the log).
    settle()
    assert (answer(first), Petition.objects.get(id=first.message_id).status, waiting()) == ("credited", "submitted", 1)
    assert selectors.open_requests([first]) == [first]
    Petition.objects.filter(id=first.message_id).update(status="decided", decided_at=timezone.now())
    assert (waiting(), selectors.open_requests([first])) == (0, [])
    # Refused by wAR: the account's own transfer, earlier in the log, empties its balance before the petition is
    # evaluated (the site checked the balance the ledger had evaluated so far). Final: not waiting, not blocking.
    wallet = services._open_wallet(selectors.wallet_of(funded))
    drain = dataitem.create_data_item(wallet, b"", tags=[
        ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Message"), ("Action", "Transfer"),
        ("Recipient", "r" * 43), ("Quantity", str(war_balance(address)))], target=selectors.token_process_id("wAR"),
        anchor=os.urandom(32))
    ao_services.mu_submit(raw=drain.serialize())
    second = services.petition_submit(user=funded, text="I mend fishing nets again.", sender_name="Alice")
    assert (answer(second), waiting()) == ("", 1)
    settle()
    assert (answer(second), war_balance(address), waiting()) == ("refused", 0, 0)
    assert not Petition.objects.filter(id=second.message_id).exists()
    assert selectors.open_requests([first, second]) == []
    assert selectors.petition_status(second.message_id).transfer_error


# --- security headers ---------------------------------------------------------------------------------------


def test_pages_carry_a_content_security_policy_without_inline_script(client: Client, stand_in_fed: str) -> None:
    response = client.get(reverse("web:home"))
    policy = response["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "object-src 'none'", "frame-ancestors 'none'"):
        assert directive in policy
    assert "unsafe-inline" not in policy
    html = response.content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script would be blocked by the policy"
    assert not re.search(r"\son[a-z]+=", html) and " style=" not in html
    assert response["X-Frame-Options"] == "DENY" and response["X-Content-Type-Options"] == "nosniff"


def test_behind_tls_the_settings_turn_on_hsts_secure_cookies_and_the_redirect() -> None:
    env = {**os.environ, "DJANGO_HTTPS": "1", "DJANGO_PROXY_SSL_HEADER": "X-Forwarded-Proto"}
    code = ("from django.conf import settings as s; import json; print(json.dumps([s.SECURE_HSTS_SECONDS, "
            "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_PROXY_SSL_HEADER]))")
    out = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], cwd=ROOT, env={
        **env, "DJANGO_SETTINGS_MODULE": "llamafed.settings"}, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [31536000, True, True, True, ["HTTP_X_FORWARDED_PROTO", "https"]]
    plain = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], cwd=ROOT, env={
        **os.environ, "DJANGO_HTTPS": "0", "DJANGO_SETTINGS_MODULE": "llamafed.settings"}, capture_output=True,
        text=True, check=True)
    assert json.loads(plain.stdout) == [0, False, False, False, None]


def test_an_https_request_gets_hsts(client: Client, settings: object, stand_in_fed: str) -> None:
    settings.SECURE_HSTS_SECONDS = 31536000
    response = client.get(reverse("web:home"), secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000"
