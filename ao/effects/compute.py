"""The compute unit's runtimes, one per worker thread (wasmtime stores are not thread-safe)."""

from __future__ import annotations

import threading
from pathlib import Path

from django.conf import settings

from ao.effects.wasm_runtime import ComponentRuntime

_local = threading.local()


def component_runtime() -> ComponentRuntime:
    """This thread's component runtime."""
    runtime = getattr(_local, "components", None)
    if runtime is None:
        runtime = ComponentRuntime(Path(settings.AO["BUILD_CACHE"]) / "cwasm")
        _local.components = runtime
    return runtime


def fresh_component_runtime() -> ComponentRuntime:
    """A runtime sharing nothing warm with the worker's (for replay-verify)."""
    return ComponentRuntime(Path(settings.AO["BUILD_CACHE"]) / "cwasm")
