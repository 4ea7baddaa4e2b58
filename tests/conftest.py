"""Shared fixtures: node keys in the run's private data dir, users, spawned processes."""

from __future__ import annotations

import pytest

from ao import services
from ao.effects import keys
from ao.permaweb.wallet import Ed25519Key, Wallet
from tests import factories


@pytest.fixture(scope="session")
def node_keys() -> None:
    """The node's operator, scheduler and messenger keys, created once per run."""
    keys.ensure_keys()


@pytest.fixture(scope="session")
def rsa_wallet() -> Wallet:
    """One Arweave RSA-4096 wallet for the run (generation takes ~0.7 s)."""
    return Wallet.generate()


@pytest.fixture
def alice(node_keys: None) -> Ed25519Key:
    """A user key."""
    return factories.user_key()


@pytest.fixture
def process_id(db: None, alice: Ed25519Key) -> str:
    """A process spawned on this node's scheduler by alice."""
    item = factories.spawn_item(alice)
    services.su_schedule(raw=item.serialize())
    return item.id
