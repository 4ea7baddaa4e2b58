"""Encryption at rest of custodial JWKs: Fernet keys derived by HKDF-SHA256 from the site's secrets. No Django.

Each secret (the current one first, then fallbacks) yields one Fernet key; MultiFernet encrypts with the
first and decrypts with any, so SECRET_KEY can be rotated by moving the old key to SECRET_KEY_FALLBACKS
and re-sealing (`rotate`). The derivation is bound to a fixed salt and purpose string, so the key is not
reusable for anything else the secret protects (sessions, signing).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FERNET_KEY_BYTES = 32
HKDF_SALT = b"llamafed/custodial-wallet/salt/v1"
HKDF_INFO = b"llamafed custodial wallet JWK encryption v1"


class SealError(ValueError):
    """A sealed JWK that no configured secret opens, or that is not a JWK."""


def fernet_key(secret: str) -> bytes:
    """The url-safe base64 Fernet key derived from one secret."""
    raw = HKDF(algorithm=hashes.SHA256(), length=FERNET_KEY_BYTES, salt=HKDF_SALT, info=HKDF_INFO).derive(
        secret.encode("utf-8")
    )
    return base64.urlsafe_b64encode(raw)


def _cipher(secrets: Sequence[str]) -> MultiFernet:
    if not secrets:
        raise SealError("no secret to derive the wallet encryption key from")
    return MultiFernet([Fernet(fernet_key(s)) for s in secrets])


def seal_jwk(jwk: dict[str, Any], *, secrets: Sequence[str]) -> str:
    """Encrypt a JWK with the first secret's key; returns the Fernet token as text."""
    plaintext = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return _cipher(secrets).encrypt(plaintext).decode("ascii")


def open_jwk(token: str, *, secrets: Sequence[str]) -> dict[str, Any]:
    """Decrypt a sealed JWK with any of the secrets' keys."""
    try:
        plaintext = _cipher(secrets).decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeEncodeError) as exc:
        raise SealError("the wallet cannot be decrypted with the configured secret keys") from exc
    value = json.loads(plaintext)
    if not isinstance(value, dict):
        raise SealError("the sealed value is not a JWK object")
    return value


def rotate(token: str, *, secrets: Sequence[str]) -> str:
    """Re-encrypt a sealed JWK under the first secret's key."""
    try:
        return _cipher(secrets).rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken as exc:
        raise SealError("the wallet cannot be decrypted with the configured secret keys") from exc
