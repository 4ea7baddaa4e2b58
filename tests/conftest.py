"""Shared fixtures: node keys in the run's private data dir, users, spawned processes."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from ao import services
from ao.effects import keys
from ao.permaweb.wallet import Ed25519Key, Wallet
from tests import factories

ROOT = Path(__file__).resolve().parent.parent
LEDGER_SOURCE = ROOT / "ledger" / "process"
PROBE_SOURCE = ROOT / "tests" / "ao" / "modules" / "probe"
PROBE_COMPUTE_LIMIT = 100_000_000_000


@pytest.fixture(autouse=True)
def _own_cache_keys(settings: Any) -> None:
    """Each test counts its limits from zero: its own key prefix in the shared cache (never a flush, which on
    Redis would empty a database other clients share)."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"t-{uuid.uuid4().hex}"}}


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


@pytest.fixture(scope="session")
def ledger_wasm() -> bytes:
    """The token ledger module, built once (cached by source digest between runs)."""
    from ao import modules

    return modules.build_component(LEDGER_SOURCE)


@pytest.fixture(scope="session")
def probe_wasm() -> bytes:
    """The probe test module."""
    from ao import modules

    return modules.build_component(PROBE_SOURCE)


@pytest.fixture
def ledger_module(db: None, node_keys: None, ledger_wasm: bytes) -> str:
    """The ledger module published in this test's store."""
    from ao import modules

    return modules.publish_module(ledger_wasm, name="ledger")


@pytest.fixture
def probe_module(db: None, node_keys: None, probe_wasm: bytes) -> str:
    """The probe module published in this test's store."""
    from ao import modules

    # Its tests spawn with their own lower limits; the loop tests need room to spin for seconds.
    return modules.publish_module(probe_wasm, name="probe", extra_tags=[("Compute-Limit", str(PROBE_COMPUTE_LIMIT))])
