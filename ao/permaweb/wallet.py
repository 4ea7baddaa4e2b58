"""Wallets and signatures: Arweave RSA-4096 JWKs and Ed25519 keys, as ANS-104 signers.

ANS-104 signature type 1 is Arweave (RSA-PSS/SHA-256, 512-byte owner = modulus n);
type 2 is Ed25519 (64-byte signature, 32-byte owner = public key). Verification of
RSA-PSS accepts any salt length, since signers differ (arweave-js on Node and
arbundles use the maximum, 478 bytes; WebCrypto and arweave-python-client use 32).
Ed25519 signs and verifies with libsodium (PyNaCl): twice as fast as OpenSSL's here (bench/transfers.py
signs every assignment and push and verifies every item), and RFC 8032 signatures are the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from .b64 import B64Error, b64url_decode, b64url_encode

ARWEAVE_SIGNATURE_TYPE = 1
ED25519_SIGNATURE_TYPE = 2
RSA_KEY_BITS = 4096
RSA_PUBLIC_EXPONENT = 65537
# Salt length this signer uses; verifiers accept any (see module docstring).
PSS_SIGN_SALT = 32


class WalletError(ValueError):
    """Raised for a key file or key that cannot be used."""


@dataclass(frozen=True)
class SignatureScheme:
    """Byte lengths of one ANS-104 signature type."""

    signature_type: int
    signature_length: int
    owner_length: int


SCHEMES: dict[int, SignatureScheme] = {
    ARWEAVE_SIGNATURE_TYPE: SignatureScheme(ARWEAVE_SIGNATURE_TYPE, 512, 512),
    ED25519_SIGNATURE_TYPE: SignatureScheme(ED25519_SIGNATURE_TYPE, 64, 32),
}


class Signer(Protocol):
    """Anything that can sign ANS-104 items."""

    signature_type: int
    owner: bytes

    def sign(self, message: bytes) -> bytes: ...


def address_of(owner: bytes) -> str:
    """Arweave address of an owner (public key bytes): base64url(sha256(owner))."""
    return b64url_encode(hashlib.sha256(owner).digest())


def _int_to_b64(value: int) -> str:
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _b64_to_int(text: str) -> int:
    return int.from_bytes(b64url_decode(text), "big")


class Wallet:
    """An Arweave wallet: an RSA-4096 key with e=65537, stored as a JWK."""

    signature_type = ARWEAVE_SIGNATURE_TYPE

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        numbers = private_key.private_numbers()
        if private_key.key_size != RSA_KEY_BITS or numbers.public_numbers.e != RSA_PUBLIC_EXPONENT:
            raise WalletError(
                f"an Arweave wallet needs RSA-{RSA_KEY_BITS} with e={RSA_PUBLIC_EXPONENT}, "
                f"got RSA-{private_key.key_size} e={numbers.public_numbers.e}"
            )
        self._key = private_key
        self.owner = numbers.public_numbers.n.to_bytes(RSA_KEY_BITS // 8, "big")
        self.address = address_of(self.owner)

    @classmethod
    def generate(cls) -> Wallet:
        """Create a new wallet offline."""
        return cls(rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_KEY_BITS))

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any]) -> Wallet:
        """Load a wallet from a JWK dict (as arweave-js and ArConnect export it)."""
        try:
            if jwk.get("kty") != "RSA":
                raise WalletError("JWK kty must be RSA")
            public = rsa.RSAPublicNumbers(_b64_to_int(jwk["e"]), _b64_to_int(jwk["n"]))
            numbers = rsa.RSAPrivateNumbers(
                p=_b64_to_int(jwk["p"]),
                q=_b64_to_int(jwk["q"]),
                d=_b64_to_int(jwk["d"]),
                dmp1=_b64_to_int(jwk["dp"]),
                dmq1=_b64_to_int(jwk["dq"]),
                iqmp=_b64_to_int(jwk["qi"]),
                public_numbers=public,
            )
            return cls(numbers.private_key())
        except KeyError as exc:
            raise WalletError(f"JWK is missing {exc.args[0]!r}") from exc
        except (B64Error, ValueError, TypeError) as exc:
            if isinstance(exc, WalletError):
                raise
            raise WalletError(f"JWK is not a valid RSA private key: {exc}") from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Wallet:
        """Load a wallet from a JWK file."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise WalletError(f"cannot read wallet {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise WalletError(f"wallet {path} is not a JWK object")
        return cls.from_jwk(data)

    def to_jwk(self) -> dict[str, str]:
        """Return the JWK dict, private parts included."""
        priv = self._key.private_numbers()
        pub = priv.public_numbers
        return {
            "kty": "RSA",
            "e": _int_to_b64(pub.e),
            "n": b64url_encode(self.owner),
            "d": _int_to_b64(priv.d),
            "p": _int_to_b64(priv.p),
            "q": _int_to_b64(priv.q),
            "dp": _int_to_b64(priv.dmp1),
            "dq": _int_to_b64(priv.dmq1),
            "qi": _int_to_b64(priv.iqmp),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the JWK to a file readable only by its owner."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.to_jwk(), fh)

    def sign(self, message: bytes) -> bytes:
        """RSA-PSS/SHA-256 signature of message."""
        return self._key.sign(
            message,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SIGN_SALT),
            hashes.SHA256(),
        )


class Ed25519Key:
    """An Ed25519 signer (ANS-104 type 2): deterministic signatures, fast to sign."""

    signature_type = ED25519_SIGNATURE_TYPE

    def __init__(self, private_key: ed25519.Ed25519PrivateKey) -> None:
        self._key = private_key
        self.owner = private_key.public_key().public_bytes_raw()
        self.address = address_of(self.owner)
        self._secret = private_key.private_bytes_raw() + self.owner  # libsodium's form: seed, then public key

    @classmethod
    def generate(cls) -> Ed25519Key:
        """Create a new key."""
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519Key:
        """Load from a 32-byte seed."""
        if len(seed) != 32:
            raise WalletError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Ed25519Key:
        """Load from a JSON file {"kty":"OKP","crv":"Ed25519","d":...}."""
        try:
            data = json.loads(Path(path).read_text())
            if data.get("kty") != "OKP" or data.get("crv") != "Ed25519":
                raise WalletError(f"{path} is not an Ed25519 JWK")
            return cls.from_seed(b64url_decode(data["d"]))
        except (OSError, json.JSONDecodeError, KeyError, B64Error, AttributeError) as exc:
            raise WalletError(f"cannot read Ed25519 key {path}: {exc}") from exc

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key as an OKP JWK readable only by its owner."""
        seed = self._key.private_bytes_raw()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"kty": "OKP", "crv": "Ed25519", "d": b64url_encode(seed), "x": b64url_encode(self.owner)}, fh)

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature of message."""
        return nacl.bindings.crypto_sign(message, self._secret)[:nacl.bindings.crypto_sign_BYTES]


def verify(signature_type: int, owner: bytes, message: bytes, signature: bytes) -> bool:
    """True when signature over message is valid for owner under the given ANS-104 type."""
    scheme = SCHEMES.get(signature_type)
    if scheme is None or len(owner) != scheme.owner_length or len(signature) != scheme.signature_length:
        return False
    try:
        if signature_type == ARWEAVE_SIGNATURE_TYPE:
            public = rsa.RSAPublicNumbers(RSA_PUBLIC_EXPONENT, int.from_bytes(owner, "big")).public_key()
            public.verify(
                signature,
                message,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
                hashes.SHA256(),
            )
        else:
            nacl.bindings.crypto_sign_open(signature + message, owner)
    except (InvalidSignature, ValueError, nacl.exceptions.BadSignatureError):
        return False
    return True
