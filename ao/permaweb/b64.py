"""Base64url without padding, the encoding Arweave uses for ids, keys and signatures."""

from __future__ import annotations

import base64
import binascii
import re


class B64Error(ValueError):
    """Raised when a string is not valid base64url."""


def b64url_encode(data: bytes) -> str:
    """Encode bytes as unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """Decode unpadded (or padded) base64url; raise B64Error on anything else."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="strict")
    stripped = text.rstrip("=")
    if not _BASE64URL.fullmatch(stripped):
        raise B64Error(f"not base64url: {text[:40]!r}")
    if len(stripped) % 4 == 1:
        raise B64Error(f"bad base64url length {len(stripped)}")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - alphabet checked above
        raise B64Error(str(exc)) from exc


_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
