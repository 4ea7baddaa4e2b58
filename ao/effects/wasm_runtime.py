"""The compute unit's WebAssembly host: process components run by wasmtime's component API.

One ``ComponentRuntime`` per worker thread holds the engine, the linker with our imports and
the compiled components (serialized ``.cwasm`` cached on disk, so a worker compiles a module
once).

Instances and fuel. The interpreter inside a component (CPython, via componentize-py) does less
work on a warm instance than on a fresh one (its adaptive interpreter specialises hot code, its
first call seeds ``random``), so the fuel a message uses depends on what the instance ran before.
Fuel decides outcomes (a Compute-Limit), so that history must be a fact of the log, not of the
worker: the caller says when an instance starts fresh (``fresh=True``) and which position a warm
one must be at to be reused; ``ao.compute`` derives both from nonces alone (instance windows).

Determinism: WASI random and clocks are shadowed with values derived from the message; there is
no filesystem (no preopens), no environment, no arguments, and no network (WASI sockets deny
every address by default). Fuel meters every message. The epoch deadline is only a wall-clock
safety net: running past it is a fault of this node (``WallClockExceeded``), never a result.
Any failure of an import that is not a deterministic refusal (a database or store error, a bug)
is also raised as a fault after the call, never turned into the message's error.
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

from ao.effects import wasm_fastcall, wasmtime_compat
from ao.errors import HostFault, HostUnavailable, WallClockExceeded

wasmtime_compat.install()

# Compiled code is only valid for the engine build and settings that made it.
ENGINE_TAG = "wasmtime50-fuel-epoch"
WIT_PACKAGE = "llamafed:ao"
WIT_VERSION = "0.1.0"
WASI_VERSION = "0.2.9"
EPOCH_TICK_S = 0.05
DEFAULT_TIMEOUT_S = 60.0
INSTANTIATE_FUEL = 10_000_000_000
INSTANTIATE_TIMEOUT_S = 60.0
MAX_WARM_INSTANCES = 64
MAX_LOG_LINES = 1000
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 4 * 1024 * 1024
MAX_KEYS_PAGE = 1000

OUT_OF_FUEL = "out of fuel: the message used more than its Compute-Limit"
TRAP_MESSAGES = {
    "OUT_OF_FUEL": OUT_OF_FUEL,
    "MEMORY_OUT_OF_BOUNDS": "memory access out of bounds",
    "UNREACHABLE_CODE_REACHED": "the module trapped (unreachable)",
}


def _describe_failure(text: str) -> str:
    """A user-facing error for a wasmtime failure message."""
    first = text.strip().splitlines()[0] if text.strip() else "unknown failure"
    if "all fuel consumed" in text:
        return OUT_OF_FUEL
    if "memory" in first and ("limit" in text or "grow" in text):
        return f"memory limit reached: {first}"
    return f"the module trapped: {first}"


@dataclass
class _Warm:
    """A live instance of one process's module."""

    store: Store
    handle: Any
    memory_limit: int
    call: Callable[[str, str], str] | None = None  # the lean path for handle (wasm_fastcall), when available
    position: object = None  # what the caller says this instance is ready to evaluate next


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

    def __init__(self, cache_dir: str | os.PathLike[str], *, fast_calls: bool = wasm_fastcall.ENABLED) -> None:
        self.fast_calls = fast_calls
        self._callbacks: list[Any] = []  # the lean imports' C callbacks, alive as long as the linker
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
        fresh: bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> CallOutcome:
        """Run handle(msg, env); traps become errors. A host fault or the wall-clock deadline raises instead.

        With ``instance_key`` the instance is kept: ``fresh`` starts a new one under the key, else the warm one is
        used (``warm_position`` says where it stands; the caller moves it on with ``set_position``). A call that
        fails drops the instance.
        """
        output: str | None = None
        error: str | None = None
        warm: _Warm | None = None
        interrupted = False
        if fresh or instance_key is None:
            self.forget(instance_key or "")
        self._ctx = ctx
        try:
            warm = self._instance(component, instance_key, memory_limit)
            self._store = warm.store
            warm.store.set_fuel(fuel)
            warm.store.set_epoch_deadline(max(1, int(timeout_s / EPOCH_TICK_S)))
            if warm.call is not None:
                output = warm.call(msg_json, env_json)
                warm.call.post_return()  # type: ignore[attr-defined]
            else:
                output = warm.handle(warm.store, msg_json, env_json)
                warm.handle.post_return(warm.store)
        except Trap as trap:
            code = trap.trap_code
            if code is not None and code.name == "INTERRUPT":
                interrupted = True
            else:
                error = TRAP_MESSAGES.get(code.name, _describe_failure(trap.message)) if code else _describe_failure(
                    trap.message)
        except WasmtimeError as exc:
            if "wasm trap: interrupt" in str(exc):
                interrupted = True
            else:
                error = _describe_failure(str(exc))
        except HostCallError as exc:
            error = str(exc)
        finally:
            self._ctx = None
            self._store = None
        if ctx.fault is not None or interrupted:
            self.forget(instance_key or "")
            if ctx.fault is not None:
                raise ctx.fault
            raise WallClockExceeded(f"a message ran past the {timeout_s:g} s wall-clock safety limit on this node")
        gas = 0
        if warm is not None:
            gas = fuel - warm.store.get_fuel()  # host charges were taken out of the same fuel
        if output is not None and not isinstance(output, str):
            output, error = None, "handle returned a non-string"
        if error is not None or warm is None or instance_key is None:
            self.forget(instance_key or "")  # a failed call may leave the instance broken
        else:
            warm.position = None  # until the caller says where it now stands
        return CallOutcome(output=output, error=error, gas_used=gas, logs=tuple(ctx.logs))

    def warm_position(self, instance_key: str) -> object:
        """Where the warm instance under a key is ready to continue (None if there is none)."""
        found = self._instances.get(instance_key)
        return None if found is None else found.position

    def set_position(self, instance_key: str, position: object) -> None:
        """Say where the warm instance under a key now stands (what it is ready to evaluate next)."""
        found = self._instances.get(instance_key)
        if found is not None:
            found.position = position

    def _instance(self, component: Component, key: str | None, memory_limit: int) -> _Warm:
        found = self._instances.get(key) if key is not None else None
        if found is not None and found.memory_limit == memory_limit:
            return found
        store = Store(self.engine)
        store.set_wasi(WasiConfig())
        store.set_limits(memory_size=memory_limit)
        # Instantiation is charged to no message: it begins every instance window the same way.
        store.set_fuel(INSTANTIATE_FUEL)
        store.set_epoch_deadline(max(1, int(INSTANTIATE_TIMEOUT_S / EPOCH_TICK_S)))
        try:
            instance = self.linker.instantiate(store, component)
        except Trap as trap:
            raise HostUnavailable(f"the module could not be instantiated on this node: {trap.message}") from trap
        handle = instance.get_func(store, "handle")
        if handle is None:
            raise HostCallError("the module exports no handle function")
        fast = wasm_fastcall.StringCall(handle, store) if self.fast_calls else None
        warm = _Warm(store=store, handle=handle, memory_limit=memory_limit, call=fast)
        if key is not None:
            if len(self._instances) >= MAX_WARM_INSTANCES:
                self._instances.pop(next(iter(self._instances)))
            self._instances[key] = warm
        return warm

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
        guard = self._guarded
        with linker.root() as root:
            with root.add_instance(ns.format("state")) as state:
                get = guard(lambda _s, key: self._context().state.get(_key(key)))
                delete = guard(lambda _s, key: self._context().state.delete(_key(key)))
                if self.fast_calls:
                    keep = self._callbacks
                    wasm_fastcall.add_func(state, "get", wasm_fastcall.string_to_option_string(
                        lambda key: get(None, key)), keep)
                    wasm_fastcall.add_func(state, "set", wasm_fastcall.strings_to_nothing(
                        lambda key, value: guard(self._state_set)(None, key, value), 2), keep)
                    wasm_fastcall.add_func(state, "delete", wasm_fastcall.strings_to_nothing(
                        lambda key: delete(None, key), 1), keep)
                else:
                    state.add_func("get", get)
                    state.add_func("set", guard(self._state_set))
                    state.add_func("delete", delete)
                state.add_func("keys", guard(self._state_keys))
            with root.add_instance(ns.format("log")) as log:
                if self.fast_calls:
                    wasm_fastcall.add_func(log, "write", wasm_fastcall.strings_to_nothing(
                        lambda line: guard(self._log_write)(None, line), 1), self._callbacks)
                else:
                    log.add_func("write", guard(self._log_write))
            with root.add_instance(ns.format("weavedrive")) as wd:
                wd.add_func("size", guard(self._wd_size))
                wd.add_func("read", guard(self._wd_read))
            with root.add_instance(ns.format("llm")) as llm:
                llm.add_func("complete", guard(self._llm_complete))
                llm.add_func("prefetch", guard(self._llm_prefetch))
            with root.add_instance(f"wasi:random/random@{WASI_VERSION}") as rnd:
                rnd.add_func("get-random-bytes",
                             guard(lambda _s, n: self._context().random_bytes(min(int(n), 1 << 20))))
                rnd.add_func("get-random-u64",
                             guard(lambda _s: int.from_bytes(self._context().random_bytes(8), "little")))
            with root.add_instance(f"wasi:clocks/wall-clock@{WASI_VERSION}") as wall:
                wall.add_func("now", guard(self._wall_now))
                wall.add_func("resolution", guard(lambda _s: _datetime(0, 1_000_000)))
            with root.add_instance(f"wasi:clocks/monotonic-clock@{WASI_VERSION}") as mono:
                mono.add_func("now", guard(lambda _s: self._context().timestamp_ms * 1_000_000))
                mono.add_func("resolution", guard(lambda _s: 1_000_000))
                # Waiting on a clock has no meaning inside a deterministic evaluation.
                mono.add_func("subscribe-instant", guard(self._no_sleep))
                mono.add_func("subscribe-duration", guard(self._no_sleep))
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

    def _guarded(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """An import whose non-deterministic failures are kept for call() to raise as faults.

        A HostCallError is a deterministic refusal (it fails the message). Anything else — a HostFault, a
        database error while reading state, MemoryError, a bug in the host — is a fact of this node: the call is
        abandoned (the module traps meanwhile) and call() raises it, so it is never recorded.
        """

        def run(store: Any, *args: Any) -> Any:
            try:
                return fn(store, *args)
            except HostCallError:
                raise
            except Exception as exc:  # every other failure is the node's, not the message's
                ctx = self._ctx
                fault = exc if isinstance(exc, HostFault) else HostUnavailable(
                    f"a host import failed on this node: {type(exc).__name__}: {exc}")
                if ctx is not None and ctx.fault is None:
                    ctx.fault = fault
                raise HostCallError(f"host fault: {fault}") from exc

        return run

    def _wd_size(self, store: Any, path: str) -> int | str:
        drive = self._context().weavedrive
        if drive is None:
            return "WeaveDrive is not enabled for this process (tag Extension=WeaveDrive)"
        before = drive.fuel
        answer = drive.size(path)
        self._charge(store, drive.fuel - before)
        return answer

    def _wd_read(self, store: Any, path: str, offset: int, length: int) -> bytes | str:
        drive = self._context().weavedrive
        if drive is None:
            return "WeaveDrive is not enabled for this process (tag Extension=WeaveDrive)"
        before = drive.fuel
        answer = drive.read(path, int(offset), int(length))
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
        ok, text, fuel = engine.complete(request)
        self._charge(store, fuel)
        return Variant("ok" if ok else "err", text)

    def _llm_prefetch(self, _store: Any, request: Any) -> None:
        engine = self._context().llm
        if engine is not None:  # a hint without the extension is no hint: nothing to refuse
            engine.prefetch(request)

    def _no_sleep(self, _store: Any, _when: int) -> None:
        raise HostCallError("processes cannot sleep or wait on clocks")

    def _tick(self) -> None:
        while True:
            time.sleep(EPOCH_TICK_S)
            self.engine.increment_epoch()


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
