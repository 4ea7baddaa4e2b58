"""The node's keys: operator wallet (RSA, L1 uploads), scheduler and messenger keys (Ed25519).

The scheduler and messenger sign with Ed25519 (ANS-104 signature type 2): signing costs
tens of microseconds instead of milliseconds for RSA-4096, and the signature is a pure
function of the content, so a pushed message's id is fixed by what it says.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from django.conf import settings

from ao.permaweb.wallet import Ed25519Key, Wallet


def ensure_keys() -> list[str]:
    """Create any missing key file; return the paths created."""
    created = []
    cfg = settings.AO
    if not Path(cfg["OPERATOR_WALLET"]).exists():
        Wallet.generate().save(cfg["OPERATOR_WALLET"])
        created.append(cfg["OPERATOR_WALLET"])
    for name in ("SU_KEY", "MU_KEY"):
        if not Path(cfg[name]).exists():
            Ed25519Key.generate().save(cfg[name])
            created.append(cfg[name])
    clear_cache()
    return created


@cache
def operator_wallet() -> Wallet:
    """The operator's Arweave wallet."""
    return Wallet.load(settings.AO["OPERATOR_WALLET"])


@cache
def scheduler_key() -> Ed25519Key:
    """The scheduler unit's signing key."""
    return Ed25519Key.load(settings.AO["SU_KEY"])


@cache
def messenger_key() -> Ed25519Key:
    """The messenger unit's signing key."""
    return Ed25519Key.load(settings.AO["MU_KEY"])


def trusted_signers() -> set[str]:
    """The operator and settings.AO["SPAWN_ALLOWLIST"]: wallets whose processes run without the caps for strangers."""
    return {operator_wallet().address, *settings.AO["SPAWN_ALLOWLIST"]}


def clear_cache() -> None:
    """Forget loaded keys (after ensure_keys or a settings change in tests)."""
    operator_wallet.cache_clear()
    scheduler_key.cache_clear()
    messenger_key.cache_clear()
