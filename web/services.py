"""Every write of the site: accounts and their custodial wallets, address links, faucet drips, petitions.

Messages go to this node's messenger (ao.services.mu_submit) signed by the account's custodial wallet, the
operator wallet (faucet), or the client itself (signed API petitions). Each service checks everything first, so
an error sends nothing; the message and its audit row are written in one transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ao import limits
from ao import services as ao_services
from ao.effects import keys
from ao.errors import AoError
from ao.permaweb import dataitem
from ao.permaweb.b64 import B64Error, b64url_decode
from ao.permaweb.wallet import ARWEAVE_SIGNATURE_TYPE, SCHEMES, Wallet, WalletError, address_of
from ao.permaweb.wallet import verify as verify_signature
from ao.units import su
from web import crypto, selectors
from web.errors import (
    FaucetDisabled,
    FedBusy,
    InsufficientBalance,
    InvalidInput,
    LinkRefused,
    NotRunning,
    RateLimited,
    WalletUnavailable,
    WebError,
)
from web.formatting import format_amount
from web.models import (
    MAX_NAME_CHARS,
    MAX_PETITION_CHARS,
    CustodialWallet,
    FaucetDrip,
    LinkChallenge,
    LinkedAddress,
    PetitionRequest,
)

log = logging.getLogger(__name__)

MIN_NAME_CHARS = 2
MIN_PETITION_CHARS = 1
ANCHOR_BYTES = 32
LINK_NONCE_BYTES = 32  # 43 base64url characters
LINK_CHALLENGE_TTL = dt.timedelta(minutes=15)
PETITION_WINDOW = dt.timedelta(hours=1)
MAX_PENDING_PETITIONS = 1


# --- accounts and custodial wallets -------------------------------------------------------------------------


def _secrets() -> list[str]:
    """The current secret key first, then fallbacks (so a rotated key still opens older wallets)."""
    return [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]


def account_create(*, username: str, password: str, email: str = "") -> AbstractBaseUser:
    """A new account with a fresh custodial Arweave wallet, its JWK encrypted at rest."""
    wallet = Wallet.generate()  # ~0.7 s of CPU: before the transaction, not inside it
    sealed = crypto.seal_jwk(wallet.to_jwk(), secrets=_secrets())
    with transaction.atomic():
        user = get_user_model().objects.create_user(username=username, email=email, password=password)
        CustodialWallet.objects.create(user=user, address=wallet.address, jwk_encrypted=sealed)
    log.info("account %s created with custodial wallet %s", username, wallet.address)
    return user


@dataclass(frozen=True)
class Rotation:
    """What a key rotation did."""

    rotated: int
    total: int


def wallets_rotate() -> Rotation:
    """Re-encrypt every custodial wallet under the current SECRET_KEY (each opened with it or a fallback).

    All or nothing: a wallet that no configured key opens stops the rotation and nothing is changed. Each wallet is
    checked to open to its own address before the new ciphertext is written.
    """
    rotated, total = 0, 0
    with transaction.atomic():
        for row in CustodialWallet.objects.select_for_update().order_by("pk"):
            total += 1
            try:
                crypto.open_jwk(row.jwk_encrypted, secrets=[settings.SECRET_KEY])
                continue  # already under the current key
            except crypto.SealError:
                pass
            try:
                fresh = crypto.rotate(row.jwk_encrypted, secrets=_secrets())
            except crypto.SealError as exc:
                raise WalletUnavailable(f"wallet {row.address}: {exc}; nothing was rotated") from exc
            if Wallet.from_jwk(crypto.open_jwk(fresh, secrets=[settings.SECRET_KEY])).address != row.address:
                raise WalletUnavailable(f"wallet {row.address} does not open to its own address; nothing was rotated")
            CustodialWallet.objects.filter(pk=row.pk).update(jwk_encrypted=fresh)
            rotated += 1
    log.info("custodial wallets re-encrypted under the current secret key: %d of %d", rotated, total)
    return Rotation(rotated=rotated, total=total)


def _custodial(user: AbstractBaseUser) -> CustodialWallet:
    wallet = selectors.wallet_of(user)
    if wallet is None:
        raise NotRunning("this account has no custodial wallet (it was created outside the sign-up page)")
    return wallet


def _open_wallet(row: CustodialWallet) -> Wallet:
    """Decrypt a custodial wallet and check it is the one the row names."""
    try:
        wallet = Wallet.from_jwk(crypto.open_jwk(row.jwk_encrypted, secrets=_secrets()))
    except (crypto.SealError, WalletError) as exc:
        raise WalletUnavailable(str(exc)) from exc
    if wallet.address != row.address:  # a ciphertext moved between rows must not sign for another account
        raise WalletUnavailable(f"the stored wallet does not match address {row.address}")
    return wallet


def wallet_export(*, user: AbstractBaseUser) -> dict[str, Any]:
    """The account's own JWK, for download; counts the export."""
    row = _custodial(user)
    jwk = _open_wallet(row).to_jwk()
    CustodialWallet.objects.filter(pk=row.pk).update(exported_at=timezone.now(), export_count=F("export_count") + 1)
    log.info("custodial wallet %s exported by its owner", row.address)
    return jwk


# --- linking an address the user controls -------------------------------------------------------------------


def link_message(*, user: AbstractBaseUser, nonce: str) -> bytes:
    """The exact bytes to sign to link an address to this account."""
    return f"Llama Fed: link my address to account {user.get_username()}\nnonce: {nonce}\n".encode()


def link_challenge_issue(*, user: AbstractBaseUser) -> LinkChallenge:
    """A fresh one-time nonce for the account to sign (the account's expired ones are dropped)."""
    now = timezone.now()
    LinkChallenge.objects.filter(user=user, used_at=None, created_at__lt=now - LINK_CHALLENGE_TTL).delete()
    return LinkChallenge.objects.create(
        user=user, nonce=secrets.token_urlsafe(LINK_NONCE_BYTES), created_at=now
    )


def _proven_owner(message: bytes, *, data_item: bytes | None, owner: str, signature: str) -> tuple[bytes, str]:
    """The owner key that signed the challenge, from a data item whose data is the challenge, or a raw signature."""
    if data_item:
        try:
            item = dataitem.parse(data_item)
        except dataitem.DataItemError as exc:
            raise LinkRefused(f"not an ANS-104 data item: {exc}") from exc
        if item.data != message:
            raise LinkRefused("the data item's data is not the challenge text shown on this page")
        if not dataitem.verify(item):
            raise LinkRefused("the data item's signature does not verify")
        return item.owner, LinkedAddress.Proof.DATA_ITEM
    try:
        owner_bytes, signature_bytes = b64url_decode(owner.strip()), b64url_decode(signature.strip())
    except B64Error as exc:
        raise LinkRefused(f"owner and signature must be base64url: {exc}") from exc
    scheme = SCHEMES[ARWEAVE_SIGNATURE_TYPE]
    if len(owner_bytes) != scheme.owner_length:
        raise LinkRefused(f"the owner must be the wallet's {scheme.owner_length}-byte RSA modulus (the JWK's n)")
    if not verify_signature(ARWEAVE_SIGNATURE_TYPE, owner_bytes, message, signature_bytes):
        raise LinkRefused("the signature does not verify (RSA-PSS with SHA-256 over the challenge text)")
    return owner_bytes, LinkedAddress.Proof.SIGNATURE


def address_link(
    *, user: AbstractBaseUser, nonce: str, data_item: bytes | None = None, owner: str = "", signature: str = ""
) -> LinkedAddress:
    """Link the address that signed this account's challenge (a data item, or an RSA-PSS signature with its key)."""
    challenge = LinkChallenge.objects.filter(user=user, nonce=nonce, used_at=None).first()
    if challenge is None or challenge.created_at < timezone.now() - LINK_CHALLENGE_TTL:
        raise LinkRefused("this challenge is unknown, used or expired: load the page again for a new one")
    owner_bytes, proof = _proven_owner(
        link_message(user=user, nonce=nonce), data_item=data_item, owner=owner, signature=signature
    )
    address = address_of(owner_bytes)
    if CustodialWallet.objects.filter(address=address).exists():
        raise LinkRefused("this address is a custodial wallet of this site; it is already an account's")
    with transaction.atomic():
        if not LinkChallenge.objects.filter(pk=challenge.pk, used_at=None).update(used_at=timezone.now()):
            raise LinkRefused("this challenge was used already: load the page again for a new one")
        existing = LinkedAddress.objects.select_for_update().filter(address=address).first()
        if existing is not None:
            if existing.user_id != user.pk:
                raise LinkRefused("this address is linked to another account")
            return existing
        return LinkedAddress.objects.create(user=user, address=address, proof=proof, nonce=nonce)


# --- faucet -------------------------------------------------------------------------------------------------


def petition_tags_base() -> dict[str, str]:
    """The AO message tags every petition Transfer carries before its own (for a wallet signing in the browser)."""
    return dict(_message_tags("Transfer", []))


def _message_tags(action: str, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [("Data-Protocol", su.DATA_PROTOCOL), ("Variant", su.VARIANT), ("Type", "Message"), ("Action", action),
            *extra]


def _submit(item: dataitem.DataItem) -> None:
    """Hand a signed item (verified, or signed here) to this node's messenger; its refusals become the site's
    errors."""
    try:
        ao_services.mu_submit_verified(item=item)
    except AoError as exc:
        error = WebError(f"this node refused the message: {exc}")
        error.status = exc.status
        raise error from exc


def faucet_drip(*, user: AbstractBaseUser) -> FaucetDrip:
    """The operator wallet (wAR's owner) mints demo wAR to the account's address, within the per-account limit."""
    if not settings.FAUCET_ENABLED:
        raise FaucetDisabled("the faucet is turned off on this site")
    war = selectors.token_process_id(selectors.WAR)
    if war is None:
        raise NotRunning("wAR is not running on this node yet; try again once the node is bootstrapped")
    row = _custodial(user)
    amount = settings.FAUCET_AMOUNT
    item = dataitem.create_data_item(
        keys.operator_wallet(), b"",
        tags=_message_tags("Mint", [("Quantity", str(amount)), ("Recipient", row.address)]),
        target=war, anchor=os.urandom(ANCHOR_BYTES),
    )
    window = dt.timedelta(seconds=settings.FAUCET_WINDOW)
    with transaction.atomic():
        CustodialWallet.objects.select_for_update().filter(pk=row.pk).first()  # one drip at a time per account
        recent = list(
            FaucetDrip.objects.filter(user=user, created_at__gte=timezone.now() - window).order_by("created_at")
        )
        if len(recent) >= settings.FAUCET_PER_ACCOUNT:
            wait = int((recent[0].created_at + window - timezone.now()).total_seconds()) + 1
            raise RateLimited(
                f"the faucet gives each account {settings.FAUCET_PER_ACCOUNT} drips per "
                f"{limits.describe_seconds(window.total_seconds())}; the next one is possible in "
                f"{limits.describe_seconds(wait)}",
                retry_after=wait,
            )
        _submit(item)
        drip = FaucetDrip.objects.create(user=user, address=row.address, amount=amount, message_id=item.id)
    log.info("faucet: %s wAR to %s (%s)", format_amount(amount), row.address, item.id)
    return drip


# --- petitions ----------------------------------------------------------------------------------------------


def petition_validate(*, text: str, sender_name: str) -> tuple[str, str]:
    """The petition's text and name trimmed, or InvalidInput naming each field that breaks the Fed's rules."""
    text, sender_name = (text or "").strip(), (sender_name or "").strip()
    errors = {}
    if not MIN_PETITION_CHARS <= len(text) <= MAX_PETITION_CHARS:
        errors["text"] = f"Write your petition in 1 to {MAX_PETITION_CHARS} characters (it has {len(text)})."
    if not MIN_NAME_CHARS <= len(sender_name) <= MAX_NAME_CHARS:
        errors["sender_name"] = (
            f"Your name must be {MIN_NAME_CHARS} to {MAX_NAME_CHARS} characters (it has {len(sender_name)})."
        )
    if errors:
        raise InvalidInput(" ".join(errors.values()), errors)
    return text, sender_name


def _running_fed() -> selectors.FedParams:
    params = selectors.fed_params()
    if params is None or params.war is None:
        raise NotRunning("the Fed is not running yet; petitions open once it is bootstrapped")
    return params


def _check_queue() -> None:
    """Refuse a petition the Fed could not decide within FED_MAX_WAIT_S, saying how long it would wait."""
    queue = selectors.fed_queue()
    wait = queue.expected_wait_s
    if wait <= settings.FED_MAX_WAIT_S:
        return
    later = wait - settings.FED_MAX_WAIT_S
    raise FedBusy(
        f"the Fed has {queue.waiting} petitions waiting and decides one in about "
        f"{limits.describe_seconds(queue.seconds_per_decision)}, so a new one would wait about "
        f"{limits.describe_seconds(wait)} for its decision (this site takes petitions that wait at most "
        f"{limits.describe_seconds(settings.FED_MAX_WAIT_S)}); nothing was sent — try again in about "
        f"{limits.describe_seconds(later)}",
        retry_after=int(later) + 1,
    )


def _check_petition_limits(*, user: AbstractBaseUser | None, petitioner: str, params: selectors.FedParams,
                           state: selectors.PetitionerState) -> None:
    """Refuse a petition the account or address may not send now, or that the Fed's queue could not take, saying
    when it may."""
    recent = list(selectors.recent_requests(since=PETITION_WINDOW, user=user, petitioner=petitioner))
    if len(selectors.open_requests(recent)) >= MAX_PENDING_PETITIONS:
        raise RateLimited("your previous petition is still being decided; wait for its decision before sending another")
    sent = len(recent)
    if sent >= settings.PETITIONS_PER_HOUR:
        raise RateLimited(f"at most {settings.PETITIONS_PER_HOUR} petitions per hour; try again later",
                          retry_after=int(PETITION_WINDOW.total_seconds()))
    ends = selectors.cooldown_ends(params, petitioner, last=state.last)
    if ends is not None:
        wait = (ends - timezone.now()).total_seconds()
        raise RateLimited(
            f"the Fed takes one petition per address every {limits.describe_seconds(params.cooldown_ms / 1000)} "
            f"(it would refund this one): you can petition again in {limits.describe_seconds(wait)}, at "
            f"{ends:%H:%M} UTC on {ends:%d %b}; nothing was sent",
            retry_after=int(wait) + 1,
        )
    _check_queue()


def petition_submit(
    *, user: AbstractBaseUser, text: str, sender_name: str, source: str = PetitionRequest.Source.WEB
) -> PetitionRequest:
    """The custodial wallet transfers the offering in wAR to the Fed with the petition (its id: the petition id)."""
    text, sender_name = petition_validate(text=text, sender_name=sender_name)
    params = _running_fed()
    row = _custodial(user)
    state = selectors.petitioner_state(params, row.address)
    have = state.balance
    if have < params.offering:
        raise InsufficientBalance(
            f"a petition carries {format_amount(params.offering)} wAR and your balance is {format_amount(have)} wAR; "
            f"get demo wAR from the faucet on your account page"
        )
    wallet = _open_wallet(row)
    item = dataitem.create_data_item(
        wallet, b"",
        tags=_message_tags("Transfer", [("Recipient", params.process_id), ("Quantity", str(params.offering)),
                                        ("X-Petition", text), ("X-Sender-Name", sender_name)]),
        target=params.war, anchor=os.urandom(ANCHOR_BYTES),
    )
    with transaction.atomic():
        CustodialWallet.objects.select_for_update().filter(pk=row.pk).first()  # one submission at a time per account
        _check_petition_limits(user=user, petitioner=row.address, params=params, state=state)
        _submit(item)
        request = PetitionRequest.objects.create(
            message_id=item.id, user=user, petitioner=row.address, sender_name=sender_name, text=text,
            offering=params.offering, source=source,
        )
    log.info("petition %s sent by %s", item.id, row.address)
    return request


def petition_submit_signed(*, raw: bytes) -> PetitionRequest:
    """Forward, as is, a client-signed wAR Transfer of the offering to the Fed that carries a valid petition."""
    # An address linked to an account counts as that account's (its limits, its page).
    params = _running_fed()
    try:
        item = dataitem.parse(raw, max_size=settings.AO["MAX_MESSAGE_BYTES"])
    except dataitem.DataItemError as exc:
        raise InvalidInput(f"not an ANS-104 data item: {exc}") from exc
    if not dataitem.verify(item):
        raise InvalidInput("the data item's signature does not verify")
    problems = []
    if item.target_b64 != params.war:
        problems.append(f"its target must be the wAR process {params.war}")
    if item.tag("Action") != "Transfer":
        problems.append("it must carry Action=Transfer")
    if item.tag("Recipient") != params.process_id:
        problems.append(f"its Recipient must be the Fed {params.process_id}")
    if item.tag("Quantity") != str(params.offering):
        problems.append(f"its Quantity must be the offering, {params.offering}")
    if problems:
        raise InvalidInput("this item is not a petition: " + "; ".join(problems))
    text, sender_name = petition_validate(text=item.tag("X-Petition") or "",
                                          sender_name=item.tag("X-Sender-Name") or "")
    petitioner = item.owner_address
    user = selectors.linked_user(petitioner)
    state = selectors.petitioner_state(params, petitioner)
    have = state.balance
    if have < params.offering:
        raise InsufficientBalance(
            f"{petitioner} holds {format_amount(have)} wAR; a petition carries {format_amount(params.offering)} wAR"
        )
    with transaction.atomic():
        _check_petition_limits(user=user, petitioner=petitioner, params=params, state=state)
        _submit(item)
        request = PetitionRequest.objects.create(
            message_id=item.id, user=user, petitioner=petitioner, sender_name=sender_name, text=text,
            offering=params.offering, source=PetitionRequest.Source.SIGNED,
        )
    log.info("signed petition %s forwarded for %s", item.id, petitioner)
    return request
