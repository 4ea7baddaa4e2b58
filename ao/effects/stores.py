"""Which store this node uses (embedded or gateway), chosen by settings."""

from __future__ import annotations

from functools import cache

from django.conf import settings

from ao.effects.embedded_store import EmbeddedStore


@cache
def embedded_store() -> EmbeddedStore:
    """The node's embedded store (the scheduler's log always lives here)."""
    return EmbeddedStore(settings.AO["BLOB_DIR"])
