"""Accounts: sign up with a custodial wallet encrypted at rest, the owner-only JWK download, address linking."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from ao.permaweb import dataitem
from ao.permaweb.b64 import b64url_encode
from ao.permaweb.wallet import Ed25519Key, Wallet
from web import crypto, services
from web.errors import LinkRefused, WalletUnavailable
from web.models import CustodialWallet, LinkedAddress

pytestmark = pytest.mark.django_db

PASSWORD = "a-Long-enough-passphrase-42"


def _signup(client: Client, username: str) -> None:
    response = client.post(reverse("web:signup"),
                           {"username": username, "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("web:account")


def test_signup_creates_an_account_with_an_encrypted_custodial_wallet(client: Client,
                                                                     django_user_model: type) -> None:
    _signup(client, "alice")
    user = django_user_model.objects.get(username="alice")
    row = CustodialWallet.objects.get(user=user)
    jwk = services.wallet_export(user=user)
    assert Wallet.from_jwk(jwk).address == row.address
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM web_custodialwallet WHERE id = %s", [row.pk])
        stored = " ".join(str(v) for v in cursor.fetchone())
    for secret_part in ("d", "p", "q", "dp", "dq", "qi"):
        assert jwk[secret_part] not in stored
    assert '"kty"' not in stored  # a quote never occurs in a Fernet token's base64
    # Sealed with a key derived from SECRET_KEY: another secret cannot open it.
    with pytest.raises(crypto.SealError):
        crypto.open_jwk(row.jwk_encrypted, secrets=["another-secret-key-of-at-least-32-characters"])
    # The new account is signed in.
    assert client.get(reverse("web:account")).status_code == 200


def test_signup_refuses_mismatched_passwords_and_creates_nothing(client: Client, django_user_model: type) -> None:
    response = client.post(reverse("web:signup"), {"username": "bob", "password1": PASSWORD, "password2": "other"})
    assert response.status_code == 200
    assert "password fields didn" in response.content.decode().replace("&#x27;", "'")
    assert not django_user_model.objects.filter(username="bob").exists()
    assert not CustodialWallet.objects.exists()


def _password(username: str) -> str:
    return f"pw-{username}-Long-Enough-1"  # what make_user sets


def test_jwk_download_is_the_owners_own_wallet_by_post_only(make_user: Callable[[str], AbstractBaseUser]) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    client = Client()
    client.force_login(bob)
    url = reverse("web:wallet-download")
    assert client.get(url).status_code == 405
    response = client.post(url, {"password": _password("bob")})
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["Content-Disposition"].endswith('.json"')
    assert response["Cache-Control"] == "no-store"
    jwk = json.loads(response.content)
    assert Wallet.from_jwk(jwk).address == bob.custodial_wallet.address != alice.custodial_wallet.address
    bob.custodial_wallet.refresh_from_db()
    assert bob.custodial_wallet.export_count == 1 and alice.custodial_wallet.export_count == 0


def test_jwk_download_needs_login_and_csrf(make_user: Callable[[str], AbstractBaseUser]) -> None:
    alice = make_user("alice")
    anonymous = Client(enforce_csrf_checks=True)
    response = anonymous.post(reverse("web:wallet-download"))
    # The JSON key, quoted: a random token on a page may spell kty.
    assert response.status_code in (302, 403) and b'"kty"' not in response.content
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(reverse("web:wallet-download"))
    assert response.status_code == 403
    assert b'"kty"' not in response.content
    client.get(reverse("web:account"))  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    response = client.post(reverse("web:wallet-download"), {"password": _password("alice")}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200 and json.loads(response.content)["kty"] == "RSA"


def test_jwk_download_asks_for_the_password_again_and_locks_after_failures(
        make_user: Callable[[str], AbstractBaseUser], settings: object) -> None:
    """A signed-in session alone cannot take the key: the password is asked again, and wrong ones count as
    failed logins, so guessing through the download locks the account like the login form does."""
    alice = make_user("alice")
    client = Client()
    client.force_login(alice)
    url = reverse("web:wallet-download")
    for attempt in ({}, {"password": "not-the-password"}):
        response = client.post(url, attempt)
        assert response.status_code == 302 and b'"kty"' not in response.content
        page = client.get(reverse("web:account")).content.decode()
        assert "Enter your password to download the wallet" in page
    alice.custodial_wallet.refresh_from_db()
    assert alice.custodial_wallet.export_count == 0
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        client.post(url, {"password": "still-wrong"})
    locked = client.post(url, {"password": _password("alice")})  # even the right one, while locked
    assert locked.status_code == 429 and int(locked["Retry-After"]) > 0 and b'"kty"' not in locked.content
    assert "logging in is locked for" in locked.content.decode()


def test_a_sealed_wallet_opens_only_for_its_own_row(make_user: Callable[[str], AbstractBaseUser]) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    # Someone with database access swaps the ciphertexts: neither account may sign with the other's key.
    a, b = alice.custodial_wallet, bob.custodial_wallet
    CustodialWallet.objects.filter(pk=a.pk).update(jwk_encrypted=b.jwk_encrypted)
    alice.custodial_wallet.refresh_from_db()
    with pytest.raises(WalletUnavailable, match="does not match"):
        services.wallet_export(user=alice)


def test_rotated_secret_key_still_opens_wallets(make_user: Callable[[str], AbstractBaseUser], settings: object) -> None:
    alice = make_user("alice")
    old = settings.SECRET_KEY
    settings.SECRET_KEY = "a-brand-new-secret-key-with-more-than-32-chars"
    settings.SECRET_KEY_FALLBACKS = [old]
    assert Wallet.from_jwk(services.wallet_export(user=alice)).address == alice.custodial_wallet.address
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(WalletUnavailable):
        services.wallet_export(user=alice)


def test_key_rotation_command_reseals_every_wallet_under_the_new_key(
        make_user: Callable[[str], AbstractBaseUser], settings: object) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    old = settings.SECRET_KEY
    new = "a-brand-new-secret-key-with-more-than-32-chars"
    # Without the old key among the fallbacks the command changes nothing and says which wallet it cannot open.
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = new, []
    before = {r.pk: r.jwk_encrypted for r in CustodialWallet.objects.all()}
    with pytest.raises(CommandError, match="nothing was rotated"):
        call_command("web", "rotate-wallet-keys")
    assert {r.pk: r.jwk_encrypted for r in CustodialWallet.objects.all()} == before
    settings.SECRET_KEY_FALLBACKS = [old]
    out = io.StringIO()
    call_command("web", "rotate-wallet-keys", stdout=out)
    assert "2 wallets re-encrypted under the current key (2 in all)" in out.getvalue()
    # The fallback can go: both wallets open with the new key alone, to their own addresses.
    settings.SECRET_KEY_FALLBACKS = []
    for user in (alice, bob):
        user.custodial_wallet.refresh_from_db()
        assert Wallet.from_jwk(services.wallet_export(user=user)).address == user.custodial_wallet.address
    out = io.StringIO()
    call_command("web", "rotate-wallet-keys", stdout=out)  # nothing left to do
    assert "0 wallets re-encrypted" in out.getvalue()


def test_link_an_address_by_raw_rsa_pss_signature(make_user: Callable[[str], AbstractBaseUser],
                                                  rsa_wallet: Wallet) -> None:
    alice = make_user("alice")
    challenge = services.link_challenge_issue(user=alice)
    message = services.link_message(user=alice, nonce=challenge.nonce)
    link = services.address_link(user=alice, nonce=challenge.nonce, owner=b64url_encode(rsa_wallet.owner),
                                 signature=b64url_encode(rsa_wallet.sign(message)))
    assert (link.address, link.proof) == (rsa_wallet.address, LinkedAddress.Proof.SIGNATURE)
    # The challenge is single-use.
    with pytest.raises(LinkRefused, match="unknown, used or expired"):
        services.address_link(user=alice, nonce=challenge.nonce, owner=b64url_encode(rsa_wallet.owner),
                              signature=b64url_encode(rsa_wallet.sign(message)))


def test_link_an_address_by_signed_data_item_through_the_page(make_user: Callable[[str], AbstractBaseUser]) -> None:
    alice = make_user("alice")
    client = Client()
    client.force_login(alice)
    page = client.get(reverse("web:link-address"))
    nonce = page.context["form"].initial["nonce"]
    key = Ed25519Key.generate()
    item = dataitem.create_data_item(key, services.link_message(user=alice, nonce=nonce))
    response = client.post(reverse("web:link-address"), {"nonce": nonce, "data_item": b64url_encode(item.serialize())})
    assert response.status_code == 302
    assert LinkedAddress.objects.get(user=alice).address == key.address
    assert key.address in client.get(reverse("web:account")).content.decode()


def test_link_refuses_a_signature_over_other_text_and_links_nothing(make_user: Callable[[str], AbstractBaseUser],
                                                                    rsa_wallet: Wallet) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    challenge = services.link_challenge_issue(user=alice)
    # Bob's challenge text signed by the wallet does not prove anything to Alice's challenge.
    other = services.link_message(user=bob, nonce=challenge.nonce)
    with pytest.raises(LinkRefused, match="does not verify"):
        services.address_link(user=alice, nonce=challenge.nonce, owner=b64url_encode(rsa_wallet.owner),
                              signature=b64url_encode(rsa_wallet.sign(other)))
    key = Ed25519Key.generate()
    wrong_data = dataitem.create_data_item(key, b"something else")
    with pytest.raises(LinkRefused, match="not the challenge"):
        services.address_link(user=alice, nonce=challenge.nonce, data_item=wrong_data.serialize())
    assert not LinkedAddress.objects.exists()


def test_login_and_logout(make_user: Callable[[str], AbstractBaseUser], client: Client) -> None:
    make_user("alice")
    response = client.post(reverse("web:login"), {"username": "alice", "password": "pw-alice-Long-Enough-1"})
    assert response.status_code == 302
    assert client.get(reverse("web:account")).status_code == 200
    assert client.post(reverse("web:logout")).status_code == 302
    response = client.get(reverse("web:account"))
    assert response.status_code == 302 and reverse("web:login") in response["Location"]
