"""Which store this node uses (embedded or gateway), chosen by settings."""

from __future__ import annotations

from functools import cache

from django.conf import settings

from ao.effects.embedded_store import EmbeddedStore
from ao.permaweb.gateway import GatewayStore
from ao.permaweb.store import Store


@cache
def embedded_store() -> EmbeddedStore:
    """The node's embedded store (the scheduler's log always lives here)."""
    return EmbeddedStore(settings.AO["BLOB_DIR"])


@cache
def data_store() -> Store:
    """Where this worker reads L1 data (modules, WeaveDrive): the embedded store, or the node's gateway API over
    HTTP (settings.AO["DATA_GATEWAY"]), every header's signature and every chunk's proof checked there."""
    url = settings.AO.get("DATA_GATEWAY", "")
    if not url:
        return embedded_store()
    return GatewayStore(url)


def remote_data() -> bool:
    """Whether this worker reads its data through a gateway (it has no copy of the node's blobs)."""
    return bool(settings.AO.get("DATA_GATEWAY", ""))
