"""The compute unit's WebAssembly host: process components run by wasmtime's component API.

One ``ComponentRuntime`` per worker thread holds the engine, the linker with our imports and
the compiled components (serialized ``.cwasm`` cached on disk, so a worker compiles a module
once). A process's instance is kept between its messages (a fresh instance costs ~3 ms against
~0.15 ms for a call on a warm one) and is recycled after any failed call, after
``RECYCLE_AFTER`` calls, and whenever the worker restarts. Modules must therefore keep
nothing in globals between messages (the SDK keeps state only in the host's key-value
store); replay-verify, which recycles at other points, would expose a module that did.

Determinism: WASI random and clocks are shadowed with values derived from the message; there is
no filesystem (no preopens), no environment, no arguments, and no network (WASI sockets deny
every address by default). Fuel meters every message; an epoch deadline is only a wall-clock
safety net.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from wasmtime import Config, Engine, Store, Trap, WasiConfig, WasmtimeError
from wasmtime.component import Component, Linker, Record, Variant

from ao.errors import HostUnavailable

# Compiled code is only valid for the engine build and settings that made it.
ENGINE_TAG = "wasmtime50-fuel-epoch"
WIT_PACKAGE = "llamafed:ao"
WIT_VERSION = "0.1.0"
WASI_VERSION = "0.2.9"
EPOCH_TICK_S = 0.05
DEFAULT_TIMEOUT_S = 60.0
RECYCLE_AFTER = 1000
INSTANTIATE_FUEL = 10_000_000_000
MAX_WARM_INSTANCES = 64
MAX_LOG_LINES = 1000
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 4 * 1024 * 1024
MAX_KEYS_PAGE = 1000

OUT_OF_FUEL = "out of fuel: the message used more than its Compute-Limit"
INTERRUPTED = "interrupted: the message ran past the compute unit's wall-clock safety limit"
TRAP_MESSAGES = {
    "OUT_OF_FUEL": OUT_OF_FUEL,
    "INTERRUPT": INTERRUPTED,
    "MEMORY_OUT_OF_BOUNDS": "memory access out of bounds",
    "UNREACHABLE_CODE_REACHED": "the module trapped (unreachable)",
}


def _describe_failure(text: str) -> str:
    """A user-facing error for a wasmtime failure message."""
    first = text.strip().splitlines()[0] if text.strip() else "unknown failure"
    if "all fuel consumed" in text:
        return OUT_OF_FUEL
    if "wasm trap: interrupt" in text:
        return INTERRUPTED
    if "memory" in first and ("limit" in text or "grow" in text):
        return f"memory limit reached: {first}"
    return f"the module trapped: {first}"


@dataclass
class _Warm:
    """A live instance of one process's module."""

    store: Store
    handle: Any
    memory_limit: int
    calls: int = 0


class HostState(Protocol):
    """Process state as the host sees it while one message runs."""

    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str) -> None: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str, after: str, limit: int) -> list[str]: ...


class Extension(Protocol):
    """A compute-unit extension (WeaveDrive, LLM) bound to one message."""


@dataclass
class CallContext:
    """Everything the imports may touch during one call."""

    state: HostState
    seed: bytes
    timestamp_ms: int
    logs: list[str] = field(default_factory=list)
    weavedrive: Any = None
    llm: Any = None
    host_fuel: int = 0  # fuel charged for host work (extensions), added to GasUsed
    fault: BaseException | None = None  # a host fault (not a fact of the log): the call is abandoned, not recorded
    _random_counter: int = 0

    def random_bytes(self, n: int) -> bytes:
        """Deterministic bytes: SHA-256 in counter mode over the message's seed."""
        out = bytearray()
        while len(out) < n:
            out += hashlib.sha256(self.seed + self._random_counter.to_bytes(8, "big")).digest()
            self._random_counter += 1
        return bytes(out[:n])


@dataclass(frozen=True)
class CallOutcome:
    """What one handle call produced."""

    output: str | None
    error: str | None
    gas_used: int
    logs: tuple[str, ...]


class ComponentRuntime:
    """Engine, linker and component cache for one worker thread."""

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        config = Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        self.engine = Engine(config)
        self.cache_dir = Path(cache_dir)
        self._components: dict[str, Component] = {}
        self._ctx: CallContext | None = None
        self._instances: dict[str, _Warm] = {}
        self._store: Store | None = None
        self.linker = self._build_linker()
        self._ticker = threading.Thread(target=self._tick, name="wasm-epoch", daemon=True)
        self._ticker.start()

    # -- compilation ----------------------------------------------------------------------

    def component(self, module_id: str, load: Callable[[], bytes]) -> Component:
        """The compiled component of a module: memory, then the disk cache (by content), then compile."""
        found = self._components.get(module_id)
        if found is not None:
            return found
        data = load()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        cached = self.cache_dir / f"{hashlib.sha256(data).hexdigest()}-{ENGINE_TAG}.cwasm"
        component = None
        if cached.exists():
            try:
                component = Component.deserialize_file(self.engine, str(cached))
            except WasmtimeError:
                cached.unlink(missing_ok=True)  # stale artefact from another engine build
        if component is None:
            component = Component(self.engine, data)
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".cwasm-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(component.serialize())
            os.replace(tmp, cached)
        self._components[module_id] = component
        return component

    # -- evaluation -------------------------------------------------------------------------

    def call(
        self,
        component: Component,
        msg_json: str,
        env_json: str,
        ctx: CallContext,
        *,
        fuel: int,
        memory_limit: int,
        instance_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> CallOutcome:
        """Run handle(msg, env); traps become errors, never exceptions. instance_key keeps the instance warm.

        A host fault during the call (ctx.fault, set by an import) is raised instead: it is not the message's outcome.
        """
        self._ctx = ctx
        output: str | None = None
        error: str | None = None
        warm: _Warm | None = None
        try:
            warm = self._warm(component, instance_key, memory_limit)
            self._store = warm.store
            warm.store.set_fuel(fuel)
            warm.store.set_epoch_deadline(max(1, int(timeout_s / EPOCH_TICK_S)))
            output = warm.handle(warm.store, msg_json, env_json)
            warm.handle.post_return(warm.store)
            warm.calls += 1
        except Trap as trap:
            code = trap.trap_code
            error = TRAP_MESSAGES.get(code.name, _describe_failure(trap.message)) if code else _describe_failure(
                trap.message
            )
        except WasmtimeError as exc:
            error = _describe_failure(str(exc))
        except HostCallError as exc:
            error = str(exc)
        finally:
            self._ctx = None
            self._store = None
        if ctx.fault is not None:
            self._instances.pop(instance_key or "", None)
            raise ctx.fault
        gas = 0
        if warm is not None:
            gas = fuel - warm.store.get_fuel()  # host charges were taken out of the same fuel
        if error is not None or warm is None or warm.calls >= RECYCLE_AFTER:
            self._instances.pop(instance_key or "", None)  # a failed call may leave the instance broken
        if output is not None and not isinstance(output, str):
            output, error = None, "handle returned a non-string"
        return CallOutcome(output=output, error=error, gas_used=gas, logs=tuple(ctx.logs))

    def _warm(self, component: Component, key: str | None, memory_limit: int) -> _Warm:
        found = self._instances.get(key) if key is not None else None
        if found is not None and found.memory_limit == memory_limit:
            return found
        store = Store(self.engine)
        store.set_wasi(WasiConfig())
        store.set_limits(memory_size=memory_limit)
        # Instantiation is not charged to any message: when it happens depends on recycling,
        # which replays do not reproduce, so charging it would make GasUsed nondeterministic.
        store.set_fuel(INSTANTIATE_FUEL)
        store.set_epoch_deadline(max(1, int(DEFAULT_TIMEOUT_S / EPOCH_TICK_S)))
        instance = self.linker.instantiate(store, component)
        handle = instance.get_func(store, "handle")
        if handle is None:
            raise HostCallError("the module exports no handle function")
        self._warm_up(store, handle)
        warm = _Warm(store=store, handle=handle, memory_limit=memory_limit)
        if key is not None:
            if len(self._instances) >= MAX_WARM_INSTANCES:
                self._instances.pop(next(iter(self._instances)))
            self._instances[key] = warm
        return warm

    def _warm_up(self, store: Store, handle: Any) -> None:
        """Call handle once with a message no handler takes, outside any real message.

        A fresh interpreter does one-time work on its first call (it draws random bytes, for
        one); doing that here makes a fresh instance behave exactly like a warm one, so where
        instances are recycled cannot change any message's result.
        """
        real = self._ctx
        self._ctx = CallContext(state=_EmptyState(), seed=b"warm-up", timestamp_ms=0)
        try:
            store.set_fuel(INSTANTIATE_FUEL)
            handle(store, WARM_UP_MESSAGE, WARM_UP_ENV)
            handle.post_return(store)
        finally:
            self._ctx = real

    def forget(self, instance_key: str) -> None:
        """Drop a warm instance (its process is being evaluated elsewhere or replayed)."""
        self._instances.pop(instance_key, None)

    # -- imports ----------------------------------------------------------------------------

    def _context(self) -> CallContext:
        if self._ctx is None:  # pragma: no cover - imports only run inside call()
            raise HostCallError("host import called outside a message")
        return self._ctx

    def _build_linker(self) -> Linker:
        linker = Linker(self.engine)
        linker.add_wasip2()
        linker.allow_shadowing = True
        ns = f"{WIT_PACKAGE}/{{}}@{WIT_VERSION}"
        with linker.root() as root:
            with root.add_instance(ns.format("state")) as state:
                state.add_func("get", lambda _s, key: self._context().state.get(_key(key)))
                state.add_func("set", self._state_set)
                state.add_func("delete", lambda _s, key: self._context().state.delete(_key(key)))
                state.add_func("keys", self._state_keys)
            with root.add_instance(ns.format("log")) as log:
                log.add_func("write", self._log_write)
            with root.add_instance(ns.format("weavedrive")) as wd:
                wd.add_func("size", self._wd_size)
                wd.add_func("read", self._wd_read)
            with root.add_instance(ns.format("llm")) as llm:
                llm.add_func("complete", self._llm_complete)
            with root.add_instance(f"wasi:random/random@{WASI_VERSION}") as rnd:
                rnd.add_func("get-random-bytes", lambda _s, n: self._context().random_bytes(min(int(n), 1 << 20)))
                rnd.add_func(
                    "get-random-u64", lambda _s: int.from_bytes(self._context().random_bytes(8), "little")
                )
            with root.add_instance(f"wasi:clocks/wall-clock@{WASI_VERSION}") as wall:
                wall.add_func("now", self._wall_now)
                wall.add_func("resolution", lambda _s: _datetime(0, 1_000_000))
            with root.add_instance(f"wasi:clocks/monotonic-clock@{WASI_VERSION}") as mono:
                mono.add_func("now", lambda _s: self._context().timestamp_ms * 1_000_000)
                mono.add_func("resolution", lambda _s: 1_000_000)
                # Waiting on a clock has no meaning inside a deterministic evaluation.
                mono.add_func("subscribe-instant", self._no_sleep)
                mono.add_func("subscribe-duration", self._no_sleep)
        return linker

    def _state_set(self, _store: Any, key: str, value: str) -> None:
        check_value(key, value)
        self._context().state.set(_key(key), value)

    def _state_keys(self, _store: Any, prefix: str, after: str, limit: int) -> list[str]:
        return self._context().state.keys(prefix, after, max(0, min(int(limit), MAX_KEYS_PAGE)))

    def _log_write(self, _store: Any, line: str) -> None:
        logs = self._context().logs
        if len(logs) < MAX_LOG_LINES:
            logs.append(line[:4096])

    def _wall_now(self, _store: Any) -> Record:
        ms = self._context().timestamp_ms
        return _datetime(ms // 1000, (ms % 1000) * 1_000_000)

    def _host_work(self, work: Callable[[], Any]) -> Any:
        """Run an extension's work; a host fault is kept for call() to raise and traps the module meanwhile."""
        try:
            return work()
        except HostUnavailable as exc:
            self._context().fault = exc
            raise HostCallError(f"host fault: {exc}") from exc

    def _wd_size(self, store: Any, path: str) -> int | str:
        drive = self._context().weavedrive
        if drive is None:
            return "WeaveDrive is not enabled for this process (tag Extension=WeaveDrive)"
        before = drive.fuel
        answer = self._host_work(lambda: drive.size(path))
        self._charge(store, drive.fuel - before)
        return answer

    def _wd_read(self, store: Any, path: str, offset: int, length: int) -> bytes | str:
        drive = self._context().weavedrive
        if drive is None:
            return "WeaveDrive is not enabled for this process (tag Extension=WeaveDrive)"
        before = drive.fuel
        answer = self._host_work(lambda: drive.read(path, int(offset), int(length)))
        self._charge(store, drive.fuel - before)
        return answer

    def _charge(self, store: Any, amount: int) -> None:
        """Take host work out of the message's fuel, by a fixed rule: running out fails the message."""
        if amount <= 0:
            return
        ctx = self._context()
        current = self._store  # the StoreContext handed to imports has no fuel accessors
        if current is None:  # pragma: no cover - imports only run inside call()
            raise HostCallError("host work charged outside a message")
        left = current.get_fuel()
        if amount > left:
            raise HostCallError(f"{OUT_OF_FUEL} (host work of {amount} fuel, {left} left)")
        current.set_fuel(left - amount)
        ctx.host_fuel += amount

    def _llm_complete(self, store: Any, request: Any) -> Variant:
        engine = self._context().llm
        if engine is None:
            return Variant("err", "the LLM extension is not enabled for this process (tags Extension=Llama and "
                                  "Extension=WeaveDrive)")
        ok, text, fuel = self._host_work(lambda: engine.complete(request))
        self._charge(store, fuel)
        return Variant("ok" if ok else "err", text)

    def _no_sleep(self, _store: Any, _when: int) -> None:
        raise HostCallError("processes cannot sleep or wait on clocks")

    def _tick(self) -> None:
        while True:
            time.sleep(EPOCH_TICK_S)
            self.engine.increment_epoch()


WARM_UP_MESSAGE = '{"Id":"","Tags":[{"name":"Action","value":"llamafed/warm-up"}],"Data":"","Nonce":0}'
WARM_UP_ENV = '{"Process":{"Id":"","Owner":"","Tags":[]},"Module":{"Id":"","Owner":"","Tags":[]}}'


class _EmptyState:
    """State for the warm-up call: empty, and writes go nowhere."""

    def get(self, key: str) -> str | None:
        return None

    def set(self, key: str, value: str) -> None:
        return None

    def delete(self, key: str) -> None:
        return None

    def keys(self, prefix: str, after: str, limit: int) -> list[str]:
        return []


class HostCallError(Exception):
    """A host import refused a call; the message fails with this error."""


def _datetime(seconds: int, nanoseconds: int) -> Record:
    """A wasi:clocks/wall-clock datetime record."""
    record = Record()
    record.seconds = seconds
    record.nanoseconds = nanoseconds
    return record


def check_value(key: str, value: str) -> None:
    """Refuse a state value over the size bound."""
    if len(value) > MAX_VALUE_BYTES:  # characters; UTF-8 may be up to 4x, still bounded
        raise HostCallError(f"state value for {key[:60]!r} is over {MAX_VALUE_BYTES} characters")


def _key(key: str) -> str:
    if not key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise HostCallError(f"state keys must be 1 to {MAX_KEY_BYTES} bytes")
    return key


def shadowed_names() -> Iterable[str]:
    """The WASI functions replaced with deterministic ones (for documentation and tests)."""
    return (
        f"wasi:random/random@{WASI_VERSION}#get-random-bytes",
        f"wasi:random/random@{WASI_VERSION}#get-random-u64",
        f"wasi:clocks/wall-clock@{WASI_VERSION}#now",
        f"wasi:clocks/monotonic-clock@{WASI_VERSION}#now",
    )
