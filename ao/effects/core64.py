"""The compute unit's runtime for core WebAssembly process modules with 64-bit memory.

ABI. A core64 process module imports nothing and exports:

- ``memory``: a 64-bit (memory64) linear memory holding all of the process state;
- ``alloc(len: i64) -> i64``: a pointer to ``len`` writable bytes;
- ``handle(msg_ptr: i64, msg_len: i64, env_ptr: i64, env_len: i64) -> i64``: a
  pointer to ``[u64 little-endian length][UTF-8 JSON result]``, the result in AO's
  shape ``{"Messages": [], "Spawns": [], "Assignments": [], "Output": ..., "Error": ...}``.

The host allocates once per message (``alloc(len(msg) + len(env))``), writes the
message JSON then the env JSON there, and calls ``handle``. State is the linear
memory, kept live between messages and checkpointed by :class:`Snapshot`. Modules
must keep their state in memory; exported mutable globals are snapshotted too, but
non-exported mutable globals (e.g. a C stack pointer) must hold the same value at
every message boundary, and tables must not be mutated.

Limits. Memory-Limit is enforced with ``store.set_limits`` (``memory.grow`` past it
returns -1 inside wasm); Compute-Limit is wasmtime fuel, set before every message
(GasUsed = fuel given - fuel left, counting both ``alloc`` and ``handle``); a
wall-clock timeout via epoch interruption is only a safety net. Memories are
reserved at their full possible size up front (``memory_may_move = False``) so
growing past 4 GiB never moves or copies the memory.

Rollback. AO requires that a message that errors (a trap, a malformed result, or a
result whose ``Error`` is set) leaves the state as it was before the message. Copying
a multi-GB memory before every message is too slow, so a :class:`CoreProcess` keeps
a *base* (the last snapshot, or ``None`` for a fresh instantiation) and a journal of
the messages evaluated successfully since then. On error the live instance is
discarded and rebuilt from the base, and the journal is replayed; replay is
deterministic (fuel metering, no imports), and each replayed message must reproduce
its recorded gas and result digest. The journal is bounded: before a message, the
process checkpoints (takes a new base snapshot, clearing the journal) when the
journal has ``checkpoint_every`` entries, or when the memory is at most
``eager_snapshot_max_bytes`` so small processes roll back without any replay.
If a rebuild fails, the process is marked unusable and every later ``evaluate``
returns an error asking for it to be recreated from its last checkpoint.

Snapshots are sparse: only non-zero 64 KiB pages are kept. Finding them reads
``/proc/self/pagemap`` (as CRIU does) to skip pages the kernel never materialised in
the memory's private anonymous mapping (such pages are zero), then checks the
remaining pages with numpy views over ``memory.data_ptr`` (no copies); memories
under 64 MiB, or hosts without a readable pagemap, have every page checked.

A :class:`CoreProcess` is not thread-safe: one worker evaluates a process at a time.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import wasmtime

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
WASM_PAGE_SIZE = 64 * KIB
MAX_MEMORY_LIMIT = 16 * GIB
DEFAULT_MEMORY_LIMIT = MAX_MEMORY_LIMIT
MEMORY_LIMIT_UNITS = {"b": 1, "kb": KIB, "mb": MIB, "gb": GIB}

EPOCH_TICK_SECONDS = 0.01
DEFAULT_GUARD_BYTES = 32 * MIB
INSTANTIATION_FUEL = 100_000_000
INSTANTIATION_TIMEOUT_SECONDS = 30.0
REPLAY_TIMEOUT_FACTOR = 4.0
MIN_REPLAY_TIMEOUT_SECONDS = 30.0
DEFAULT_CHECKPOINT_EVERY = 64
DEFAULT_EAGER_SNAPSHOT_MAX_BYTES = 1 * MIB
MAX_FUEL = 2**63 - 1

RESULT_LENGTH_BYTES = 8
MAX_RESULT_BYTES = 64 * MIB
RESULT_LIST_KEYS = ("Messages", "Spawns", "Assignments")

SCAN_CHUNK_PAGES = 256
PAGEMAP_PATH = "/proc/self/pagemap"
PROC_MAPS_PATH = "/proc/self/maps"
PAGEMAP_ENTRY_BYTES = 8
PAGEMAP_PRESENT = 1 << 63
PAGEMAP_SWAPPED = 1 << 62
PAGEMAP_CHUNK_ENTRIES = 256 * 1024
PAGEMAP_MIN_BYTES = 64 * MIB  # below this a direct scan is cheaper than reading /proc

SNAPSHOT_MAGIC = b"AOCORE64"
SNAPSHOT_VERSION = 1
SNAPSHOT_HEADER = struct.Struct("<8sIQIII")  # magic, version, memory size, page size, globals, pages
SNAPSHOT_GLOBAL_HEAD = struct.Struct("<H")  # name length
SNAPSHOT_GLOBAL_TAIL = struct.Struct("<BQ")  # kind code, raw value bits
SNAPSHOT_PAGE_INDEX = struct.Struct("<I")
GLOBAL_KINDS = ("i32", "i64", "f32", "f64")
GLOBAL_BITS = {"i32": 32, "i64": 64, "f32": 32, "f64": 64}
MAX_GLOBAL_NAME_BYTES = 2**16 - 1


class CoreModuleError(Exception):
    """A module or snapshot that cannot be compiled, instantiated or restored."""


class _CallFailed(Exception):
    """One message's call failed; the message names the reason for the user."""

    def __init__(self, reason: str, *, interrupted: bool = False) -> None:
        super().__init__(reason)
        self.interrupted = interrupted


# ----------------------------------------------------------------------------- limits


def parse_memory_limit(value: str | int) -> int:
    """Bytes for an AO Memory-Limit such as "16-gb", "512-mb", "4096-kb" or "1048576"."""
    if isinstance(value, bool):
        raise ValueError("Memory-Limit must be a size like '16-gb', not a boolean")
    if isinstance(value, int):
        limit = value
    elif isinstance(value, str):
        text = value.strip().lower()
        number, _, unit = text.partition("-")
        if not unit and not number.isdigit():
            raise ValueError(
                f"Memory-Limit {value!r} is not a size: use '<number>-<unit>' with unit "
                f"one of {', '.join(MEMORY_LIMIT_UNITS)} (e.g. '16-gb'), or plain bytes"
            )
        if unit and unit not in MEMORY_LIMIT_UNITS:
            raise ValueError(
                f"Memory-Limit {value!r} has unknown unit {unit!r}; "
                f"use one of {', '.join(MEMORY_LIMIT_UNITS)} (e.g. '16-gb')"
            )
        if not number.isdigit():
            raise ValueError(f"Memory-Limit {value!r} needs a whole number before the unit, e.g. '512-mb'")
        limit = int(number) * MEMORY_LIMIT_UNITS[unit or "b"]
    else:
        raise ValueError(f"Memory-Limit must be a string like '16-gb' or an int, not {type(value).__name__}")
    if limit <= 0:
        raise ValueError(f"Memory-Limit {value!r} must be positive")
    if limit > MAX_MEMORY_LIMIT:
        raise ValueError(f"Memory-Limit {value!r} is {limit} bytes, above this compute unit's cap of 16-gb")
    return limit


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class Snapshot:
    """Sparse process state: memory size, its non-zero 64 KiB pages, exported mutable globals.

    Binary format (little-endian), as written by :meth:`to_bytes`::

        header  magic b"AOCORE64", u32 version (1), u64 memory size in bytes,
                u32 page size (65536), u32 global count G, u32 page count P
        G times u16 name length, UTF-8 name, u8 kind (0 i32, 1 i64, 2 f32, 3 f64),
                u64 raw value bits (IEEE bits for floats), sorted by name
        P times u32 page index, then the page's 65536 bytes, by ascending index

    The encoding is canonical, so :meth:`sha256` identifies the state for replay checks.
    """

    memory_size: int
    pages: Mapping[int, bytes] = field(default_factory=dict)
    globals: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Reject shapes that could not have come from a memory."""
        if self.memory_size < 0 or self.memory_size % WASM_PAGE_SIZE:
            raise ValueError(f"snapshot memory size {self.memory_size} is not a whole number of 64 KiB pages")
        page_count = self.memory_size // WASM_PAGE_SIZE
        for index, page in self.pages.items():
            if not 0 <= index < page_count:
                raise ValueError(f"snapshot page {index} lies outside its {page_count}-page memory")
            if len(page) != WASM_PAGE_SIZE:
                raise ValueError(f"snapshot page {index} has {len(page)} bytes, not {WASM_PAGE_SIZE}")
        for name, (kind, bits) in self.globals.items():
            if len(name.encode()) > MAX_GLOBAL_NAME_BYTES:
                raise ValueError(f"snapshot global name {name[:40]!r}… is longer than {MAX_GLOBAL_NAME_BYTES} bytes")
            if kind not in GLOBAL_KINDS:
                raise ValueError(f"snapshot global {name!r} has unsupported type {kind!r}")
            if not 0 <= bits < 1 << GLOBAL_BITS[kind]:
                raise ValueError(f"snapshot global {name!r} bits {bits} do not fit {kind}")

    @property
    def encoded_size(self) -> int:
        """Length in bytes of :meth:`to_bytes`, computed without encoding."""
        globals_size = sum(
            SNAPSHOT_GLOBAL_HEAD.size + len(name.encode()) + SNAPSHOT_GLOBAL_TAIL.size for name in self.globals
        )
        pages_size = len(self.pages) * (SNAPSHOT_PAGE_INDEX.size + WASM_PAGE_SIZE)
        return SNAPSHOT_HEADER.size + globals_size + pages_size

    def _chunks(self) -> Iterator[bytes]:
        """The canonical encoding, piece by piece."""
        yield SNAPSHOT_HEADER.pack(
            SNAPSHOT_MAGIC, SNAPSHOT_VERSION, self.memory_size, WASM_PAGE_SIZE, len(self.globals), len(self.pages)
        )
        for name in sorted(self.globals):
            kind, bits = self.globals[name]
            raw_name = name.encode()
            yield SNAPSHOT_GLOBAL_HEAD.pack(len(raw_name)) + raw_name
            yield SNAPSHOT_GLOBAL_TAIL.pack(GLOBAL_KINDS.index(kind), bits)
        for index in sorted(self.pages):
            yield SNAPSHOT_PAGE_INDEX.pack(index)
            yield self.pages[index]

    def to_bytes(self) -> bytes:
        """The documented binary encoding."""
        return b"".join(self._chunks())

    def sha256(self) -> str:
        """Hex SHA-256 of the encoding (streamed, no full copy)."""
        digest = hashlib.sha256()
        for chunk in self._chunks():
            digest.update(chunk)
        return digest.hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Snapshot:
        """Decode :meth:`to_bytes` output; ValueError says what is wrong."""
        view = memoryview(data)
        if len(view) < SNAPSHOT_HEADER.size:
            raise ValueError(f"snapshot is {len(view)} bytes, shorter than its {SNAPSHOT_HEADER.size}-byte header")
        magic, version, memory_size, page_size, global_count, page_count = SNAPSHOT_HEADER.unpack_from(view)
        if magic != SNAPSHOT_MAGIC:
            raise ValueError("not a core64 snapshot (bad magic bytes)")
        if version != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot format version {version} is not supported (expected {SNAPSHOT_VERSION})")
        if page_size != WASM_PAGE_SIZE:
            raise ValueError(f"snapshot page size {page_size} is not {WASM_PAGE_SIZE}")
        offset = SNAPSHOT_HEADER.size
        globals_: dict[str, tuple[str, int]] = {}
        try:
            for _ in range(global_count):
                (name_length,) = SNAPSHOT_GLOBAL_HEAD.unpack_from(view, offset)
                offset += SNAPSHOT_GLOBAL_HEAD.size
                name = bytes(view[offset : offset + name_length]).decode()
                offset += name_length
                kind_code, bits = SNAPSHOT_GLOBAL_TAIL.unpack_from(view, offset)
                offset += SNAPSHOT_GLOBAL_TAIL.size
                if kind_code >= len(GLOBAL_KINDS):
                    raise ValueError(f"snapshot global {name!r} has unknown type code {kind_code}")
                globals_[name] = (GLOBAL_KINDS[kind_code], bits)
            pages: dict[int, bytes] = {}
            for _ in range(page_count):
                (index,) = SNAPSHOT_PAGE_INDEX.unpack_from(view, offset)
                offset += SNAPSHOT_PAGE_INDEX.size
                if index in pages:
                    raise ValueError(f"snapshot holds page {index} twice")
                page = bytes(view[offset : offset + WASM_PAGE_SIZE])
                if len(page) != WASM_PAGE_SIZE:
                    raise ValueError(f"snapshot is truncated inside page {index}")
                offset += WASM_PAGE_SIZE
                pages[index] = page
        except (struct.error, UnicodeDecodeError) as exc:
            raise ValueError(f"snapshot is truncated or corrupt at byte {offset}: {exc}") from exc
        if offset != len(view):
            raise ValueError(f"snapshot has {len(view) - offset} unexpected trailing bytes")
        return cls(memory_size=memory_size, pages=pages, globals=globals_)


def _anonymous_private(address: int, length: int) -> bool:
    """Whether [address, address+length) lies wholly in private anonymous mappings."""
    end = address + length
    covered = address
    try:
        with open(PROC_MAPS_PATH, encoding="ascii", errors="replace") as maps:
            spans = []
            for line in maps:
                parts = line.split(maxsplit=5)
                start_text, _, stop_text = parts[0].partition("-")
                start, stop = int(start_text, 16), int(stop_text, 16)
                if stop <= address or start >= end:
                    continue
                path = parts[5].strip() if len(parts) > 5 else ""
                anonymous = parts[4] == "0" and (not path or path.startswith("[anon:"))
                if not (parts[1].endswith("p") and anonymous):
                    return False
                spans.append((start, stop))
    except (OSError, ValueError, IndexError):
        return False
    for start, stop in sorted(spans):
        if start > covered:
            return False
        covered = max(covered, stop)
    return covered >= end


def materialised_pages(address: int, length: int) -> np.ndarray | None:
    """Per 64 KiB page, whether the kernel ever backed any of it (None: unknown)."""
    os_page = mmap.PAGESIZE
    if length < PAGEMAP_MIN_BYTES or WASM_PAGE_SIZE % os_page or address % os_page:
        return None
    if not _anonymous_private(address, length):
        return None
    per_wasm_page = WASM_PAGE_SIZE // os_page
    os_pages = length // os_page
    touched = np.empty(length // WASM_PAGE_SIZE, dtype=bool)
    mask = np.uint64(PAGEMAP_PRESENT | PAGEMAP_SWAPPED)
    try:
        fd = os.open(PAGEMAP_PATH, os.O_RDONLY)
    except OSError:
        return None
    try:
        first = address // os_page
        for start in range(0, os_pages, PAGEMAP_CHUNK_ENTRIES):
            count = min(PAGEMAP_CHUNK_ENTRIES, os_pages - start)
            raw = os.pread(fd, count * PAGEMAP_ENTRY_BYTES, (first + start) * PAGEMAP_ENTRY_BYTES)
            if len(raw) != count * PAGEMAP_ENTRY_BYTES:
                return None
            entries = np.frombuffer(raw, dtype="<u8")
            flags = (entries & mask).reshape(-1, per_wasm_page)
            touched[start // per_wasm_page : (start + count) // per_wasm_page] = flags.any(axis=1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return touched


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index runs where mask is true."""
    indices = np.flatnonzero(mask)
    if indices.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    starts = indices[np.concatenate(([0], breaks))]
    stops = indices[np.concatenate((breaks - 1, [indices.size - 1]))] + 1
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def nonzero_pages(address: int, length: int) -> list[int]:
    """Indices of the 64 KiB pages holding any non-zero byte in [address, address+length)."""
    page_count = length // WASM_PAGE_SIZE
    candidates = materialised_pages(address, length)
    if candidates is None:
        candidates = np.ones(page_count, dtype=bool)
    words_per_page = WASM_PAGE_SIZE // 8
    found: list[int] = []
    for run_start, run_stop in _runs(candidates):
        for chunk_start in range(run_start, run_stop, SCAN_CHUNK_PAGES):
            chunk_pages = min(SCAN_CHUNK_PAGES, run_stop - chunk_start)
            buffer = (ctypes.c_uint64 * (chunk_pages * words_per_page)).from_address(
                address + chunk_start * WASM_PAGE_SIZE
            )
            words = np.frombuffer(buffer, dtype=np.uint64).reshape(chunk_pages, words_per_page)
            found.extend((np.flatnonzero(words.max(axis=1)) + chunk_start).tolist())
    return found


# ----------------------------------------------------------------------------- runtime


class _EpochTicker(threading.Thread):
    """Daemon thread that advances the engine epoch every tick (wall-clock safety net)."""

    def __init__(self, engine: wasmtime.Engine, interval_s: float) -> None:
        """Prepare a ticker for engine."""
        super().__init__(name="core64-epoch-ticker", daemon=True)
        self._engine = engine
        self._interval_s = interval_s
        self._stopped = threading.Event()

    def run(self) -> None:
        """Tick until stopped."""
        while not self._stopped.wait(self._interval_s):
            self._engine.increment_epoch()

    def stop(self) -> None:
        """Stop ticking and wait for the thread."""
        self._stopped.set()
        self.join()


class CoreModuleRuntime:
    """One wasmtime engine for core64 modules: memory64, fuel, epochs, a compiled-module cache."""

    def __init__(
        self,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        memory_reservation_bytes: int = MAX_MEMORY_LIMIT,
        memory_guard_bytes: int = DEFAULT_GUARD_BYTES,
        epoch_tick_s: float = EPOCH_TICK_SECONDS,
        cranelift_opt_level: str = "speed",
    ) -> None:
        """Build the engine and start its epoch ticker; cache_dir=None keeps compiled code in memory only."""
        if memory_reservation_bytes % WASM_PAGE_SIZE or memory_reservation_bytes <= 0:
            raise ValueError("memory_reservation_bytes must be a positive multiple of 64 KiB")
        if epoch_tick_s <= 0:
            raise ValueError("epoch_tick_s must be positive")
        config = wasmtime.Config()
        config.wasm_memory64 = True
        config.consume_fuel = True
        config.epoch_interruption = True
        config.cranelift_opt_level = cranelift_opt_level
        # Reserve the largest allowed memory up front so growth never moves (and
        # copies) a multi-GB memory; the reservation is address space, not RAM.
        config.memory_reservation = memory_reservation_bytes
        config.memory_may_move = False
        config.memory_guard_size = memory_guard_bytes
        # Keep linear memory in private anonymous mappings so pagemap can find
        # untouched (zero) pages; copy-on-write images would be file-backed.
        config.memory_init_cow = False
        self.engine = wasmtime.Engine(config)
        self.memory_reservation_bytes = memory_reservation_bytes
        self.epoch_tick_s = epoch_tick_s
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        settings = (
            f"wasmtime-py {package_version('wasmtime')}|memory64|fuel|epoch|opt={cranelift_opt_level}"
            f"|reserve={memory_reservation_bytes}|guard={memory_guard_bytes}|cow=0"
        )
        self._config_tag = hashlib.sha256(settings.encode()).hexdigest()[:16]
        self._modules: dict[str, wasmtime.Module] = {}
        self._lock = threading.Lock()
        self._ticker = _EpochTicker(self.engine, epoch_tick_s)
        self._ticker.start()

    def close(self) -> None:
        """Stop the epoch ticker (running calls then only stop on fuel)."""
        if self._ticker.is_alive():
            self._ticker.stop()

    def __enter__(self) -> CoreModuleRuntime:
        """Use as a context manager that closes the runtime."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close on exit."""
        self.close()

    def epoch_ticks(self, seconds: float) -> int:
        """Epoch deadline (in ticks after now) that expires no sooner than seconds from now."""
        return max(1, math.ceil(seconds / self.epoch_tick_s)) + 1

    def cache_path(self, wasm_sha256: str) -> Path | None:
        """Where the compiled form of a module with this sha256 is cached on disk."""
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{wasm_sha256}.{self._config_tag}.cwasm"

    def compile(self, wasm_bytes: bytes) -> wasmtime.Module:
        """The compiled, validated module for wasm_bytes (memory, then disk cache, then compile)."""
        key = hashlib.sha256(wasm_bytes).hexdigest()
        with self._lock:
            module = self._modules.get(key)
            if module is None:
                module = self._load_or_compile(key, wasm_bytes)
                _check_abi(module)
                self._modules[key] = module
        return module

    def _load_or_compile(self, key: str, wasm_bytes: bytes) -> wasmtime.Module:
        """Deserialize a cached artifact (a trusted host file) or compile and cache it."""
        path = self.cache_path(key)
        if path is not None and path.exists():
            try:
                return wasmtime.Module.deserialize_file(self.engine, str(path))
            except wasmtime.WasmtimeError:
                path.unlink(missing_ok=True)  # stale or corrupt: rebuild below
        try:
            module = wasmtime.Module(self.engine, wasm_bytes)
        except wasmtime.WasmtimeError as exc:
            raise CoreModuleError(f"module {key[:16]}… does not compile as core wasm with memory64: {exc}") from exc
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            partial.write_bytes(module.serialize())
            os.replace(partial, path)
        return module


def _check_abi(module: wasmtime.Module) -> None:
    """Raise CoreModuleError unless module matches the core64 ABI."""
    for imported in module.imports:
        raise CoreModuleError(
            f"module imports {imported.module}.{imported.name}; core64 process modules must import nothing"
        )
    exports = {export.name: export.type for export in module.exports}
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        raise CoreModuleError("module must export its linear memory as 'memory'")
    if not memory.is_64:
        raise CoreModuleError("exported 'memory' is 32-bit; core64 modules need a 64-bit (memory64) memory")
    if memory.is_shared:
        raise CoreModuleError("exported 'memory' is shared; core64 modules need an unshared memory")
    if memory.page_size != WASM_PAGE_SIZE:
        raise CoreModuleError(f"exported 'memory' uses {memory.page_size}-byte pages; only 64 KiB pages are supported")
    i64 = wasmtime.ValType.i64()
    for name, arity in (("alloc", 1), ("handle", 4)):
        func = exports.get(name)
        if not (
            isinstance(func, wasmtime.FuncType)
            and func.params == [i64] * arity
            and func.results == [i64]
        ):
            params = ", ".join(["i64"] * arity)
            raise CoreModuleError(f"module must export function {name}({params}) -> i64")
    for name, extern in exports.items():
        if isinstance(extern, wasmtime.GlobalType) and extern.mutable and str(extern.content) not in GLOBAL_KINDS:
            raise CoreModuleError(
                f"exported mutable global {name!r} has type {extern.content}, which snapshots cannot hold"
            )


# ----------------------------------------------------------------------------- process


@dataclass(frozen=True)
class Evaluation:
    """One message's outcome: the module's result, an error (state rolled back), fuel used.

    ``interrupted``: the wall-clock safety limit stopped the call. That is a fact of this machine, not of the
    message: the state is rolled back as for an error, and the caller must not record the outcome.
    """

    result: dict[str, Any] | None
    error: str | None
    gas_used: int
    interrupted: bool = False


@dataclass(frozen=True)
class _JournalEntry:
    """A message evaluated since the base snapshot, with what it produced."""

    msg: bytes
    env: bytes
    fuel: int
    timeout_s: float
    gas_used: int
    result_sha256: str


@dataclass(frozen=True)
class _Outcome:
    """What one call of handle produced."""

    result: dict[str, Any] | None
    error: str | None
    gas_used: int
    result_sha256: str
    interrupted: bool = False


class _Live:
    """A store plus instance with the ABI's exports looked up once."""

    def __init__(self, runtime: CoreModuleRuntime, module: wasmtime.Module, memory_limit_bytes: int) -> None:
        """Instantiate module in a fresh store under the memory limit."""
        self.store = wasmtime.Store(runtime.engine)
        self.store.set_limits(memory_size=memory_limit_bytes)
        self.store.set_fuel(INSTANTIATION_FUEL)
        self.store.set_epoch_deadline(runtime.epoch_ticks(INSTANTIATION_TIMEOUT_SECONDS))
        try:
            self.instance = wasmtime.Instance(self.store, module, [])
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise CoreModuleError(
                f"module failed to instantiate under a {memory_limit_bytes}-byte Memory-Limit: {exc}"
            ) from exc
        exports = self.instance.exports(self.store)
        memory = exports["memory"]
        alloc = exports["alloc"]
        handle = exports["handle"]
        assert isinstance(memory, wasmtime.Memory)
        assert isinstance(alloc, wasmtime.Func)
        assert isinstance(handle, wasmtime.Func)
        self.memory, self.alloc, self.handle = memory, alloc, handle
        self.globals: dict[str, wasmtime.Global] = {}
        for name in exports:
            extern = exports[name]
            if isinstance(extern, wasmtime.Global) and extern.type(self.store).mutable:
                self.globals[name] = extern

    def address(self) -> int:
        """Host address of linear memory byte 0."""
        return ctypes.addressof(self.memory.data_ptr(self.store).contents)

    def size(self) -> int:
        """Linear memory size in bytes."""
        return self.memory.data_len(self.store)


def _global_bits(kind: str, value: int | float) -> int:
    """Raw bits of a global's value."""
    if kind == "i32":
        return int(value) & 0xFFFF_FFFF
    if kind == "i64":
        return int(value) & 0xFFFF_FFFF_FFFF_FFFF
    if kind == "f32":
        return int.from_bytes(struct.pack("<f", value), "little")
    return int.from_bytes(struct.pack("<d", value), "little")


def _global_value(kind: str, bits: int) -> int | float:
    """A global's value from its raw bits."""
    if kind == "i32":
        return bits - (1 << 32) if bits >= 1 << 31 else bits
    if kind == "i64":
        return bits - (1 << 64) if bits >= 1 << 63 else bits
    if kind == "f32":
        return float(struct.unpack("<f", bits.to_bytes(4, "little"))[0])
    return float(struct.unpack("<d", bits.to_bytes(8, "little"))[0])


def _describe_trap(trap: wasmtime.Trap, fuel: int, timeout_s: float) -> str:
    """A user-facing reason for a trap."""
    code = trap.trap_code
    detail = str(trap).strip().splitlines()[0] if str(trap).strip() else ""
    if code is wasmtime.TrapCode.OUT_OF_FUEL:
        return f"out of fuel: the message used all {fuel} fuel units of its Compute-Limit"
    if code is wasmtime.TrapCode.INTERRUPT:
        return f"interrupted: the message ran past its {timeout_s:g} s wall-clock limit"
    if code is wasmtime.TrapCode.MEMORY_OUT_OF_BOUNDS:
        return f"wasm trap: memory access out of bounds ({detail})"
    if code is wasmtime.TrapCode.UNREACHABLE:
        return "wasm trap: unreachable instruction executed (the module aborted)"
    name = code.name if code is not None else "unknown"
    return f"wasm trap ({name}): {detail}"


class CoreProcess:
    """One live instance of a core64 process module, with AO rollback on error."""

    def __init__(
        self,
        runtime: CoreModuleRuntime,
        module: wasmtime.Module,
        *,
        memory_limit_bytes: int,
        base: Snapshot | None,
        checkpoint_every: int,
        eager_snapshot_max_bytes: int,
    ) -> None:
        """Use :meth:`create`."""
        self.runtime = runtime
        self.memory_limit_bytes = memory_limit_bytes
        self.checkpoint_every = checkpoint_every
        self.eager_snapshot_max_bytes = eager_snapshot_max_bytes
        self._module = module
        self._base = base
        self._journal: list[_JournalEntry] = []
        self._broken: str | None = None
        self._live: _Live | None = self._instantiate(base)

    @classmethod
    def create(
        cls,
        runtime: CoreModuleRuntime,
        wasm_bytes: bytes,
        *,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
        snapshot: Snapshot | None = None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        eager_snapshot_max_bytes: int = DEFAULT_EAGER_SNAPSHOT_MAX_BYTES,
    ) -> CoreProcess:
        """Instantiate wasm_bytes under memory_limit_bytes, restoring snapshot when given."""
        if not 0 < memory_limit_bytes <= MAX_MEMORY_LIMIT:
            raise ValueError(f"memory_limit_bytes {memory_limit_bytes} must be in 1..{MAX_MEMORY_LIMIT}")
        if memory_limit_bytes > runtime.memory_reservation_bytes:
            raise ValueError(
                f"memory_limit_bytes {memory_limit_bytes} exceeds this runtime's memory reservation "
                f"{runtime.memory_reservation_bytes}; build the runtime with a larger memory_reservation_bytes"
            )
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        module = runtime.compile(wasm_bytes)
        return cls(
            runtime,
            module,
            memory_limit_bytes=memory_limit_bytes,
            base=snapshot,
            checkpoint_every=checkpoint_every,
            eager_snapshot_max_bytes=eager_snapshot_max_bytes,
        )

    # -- state

    @property
    def memory_size(self) -> int:
        """Current linear memory size in bytes."""
        return self._require_live().size()

    @property
    def journal_length(self) -> int:
        """Messages that a rollback would replay."""
        return len(self._journal)

    @property
    def broken(self) -> str | None:
        """Why this instance is unusable, or None."""
        return self._broken

    def take_snapshot(self) -> Snapshot:
        """Checkpoint the current state; it also becomes the rollback base."""
        live = self._require_live()
        snapshot = self._capture(live)
        self._base = snapshot
        self._journal.clear()
        return snapshot

    def _require_live(self) -> _Live:
        """The live instance, or CoreModuleError when it could not be rebuilt."""
        if self._live is None:
            raise CoreModuleError(f"process instance is unusable: {self._broken}")
        return self._live

    def _capture(self, live: _Live) -> Snapshot:
        """A sparse snapshot of live's memory and exported mutable globals."""
        address, size = live.address(), live.size()
        pages = {
            index: ctypes.string_at(address + index * WASM_PAGE_SIZE, WASM_PAGE_SIZE)
            for index in nonzero_pages(address, size)
        }
        globals_ = {}
        for name, global_ in live.globals.items():
            kind = str(global_.type(live.store).content)
            globals_[name] = (kind, _global_bits(kind, global_.value(live.store)))
        return Snapshot(memory_size=size, pages=pages, globals=globals_)

    def _instantiate(self, snapshot: Snapshot | None) -> _Live:
        """A fresh instance, with snapshot's state written into it when given."""
        live = _Live(self.runtime, self._module, self.memory_limit_bytes)
        if snapshot is not None:
            self._restore(live, snapshot)
        return live

    def _restore(self, live: _Live, snapshot: Snapshot) -> None:
        """Make live's memory and globals equal to snapshot."""
        if snapshot.memory_size > self.memory_limit_bytes:
            raise CoreModuleError(
                f"snapshot holds {snapshot.memory_size} bytes of memory, above this process's "
                f"Memory-Limit of {self.memory_limit_bytes} bytes"
            )
        initial = live.size()
        if snapshot.memory_size < initial:
            raise CoreModuleError(
                f"snapshot memory ({snapshot.memory_size} bytes) is smaller than the module's initial "
                f"memory ({initial} bytes); it was taken from a different module"
            )
        if set(snapshot.globals) != set(live.globals):
            raise CoreModuleError(
                f"snapshot globals {sorted(snapshot.globals)} do not match the module's exported mutable "
                f"globals {sorted(live.globals)}; it was taken from a different module"
            )
        try:
            live.memory.grow(live.store, (snapshot.memory_size - initial) // WASM_PAGE_SIZE)
        except wasmtime.WasmtimeError as exc:
            raise CoreModuleError(f"cannot grow memory to the snapshot's {snapshot.memory_size} bytes: {exc}") from exc
        address = live.address()
        # Data segments initialised the fresh memory; pages the snapshot lacks are zero.
        for index in nonzero_pages(address, initial):
            if index not in snapshot.pages:
                ctypes.memset(address + index * WASM_PAGE_SIZE, 0, WASM_PAGE_SIZE)
        for index, page in snapshot.pages.items():
            ctypes.memmove(address + index * WASM_PAGE_SIZE, page, WASM_PAGE_SIZE)
        for name, (kind, bits) in snapshot.globals.items():
            global_ = live.globals[name]
            actual = str(global_.type(live.store).content)
            if actual != kind:
                raise CoreModuleError(f"snapshot global {name!r} is {kind} but the module's is {actual}")
            try:
                global_.set_value(live.store, _global_value(kind, bits))
            except wasmtime.WasmtimeError as exc:
                raise CoreModuleError(f"cannot restore snapshot global {name!r}: {exc}") from exc

    # -- evaluation

    def evaluate(self, msg_json: str, env_json: str, *, fuel: int, timeout_s: float) -> Evaluation:
        """Run handle for one message; on any error the state is rolled back to before it."""
        if isinstance(fuel, bool) or not isinstance(fuel, int) or not 0 < fuel <= MAX_FUEL:
            raise ValueError(f"fuel must be a positive int up to {MAX_FUEL}, got {fuel!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        if self._live is None:
            reason = f"process instance is unusable ({self._broken}); recreate it from its last snapshot"
            return Evaluation(None, reason, 0)
        try:
            msg, env = msg_json.encode(), env_json.encode()
        except UnicodeEncodeError as exc:
            return Evaluation(None, f"message or env is not encodable as UTF-8: {exc}", 0)
        self._maybe_checkpoint(self._live)
        outcome = self._run(self._live, msg, env, fuel, timeout_s)
        if outcome.error is None:
            self._journal.append(_JournalEntry(msg, env, fuel, timeout_s, outcome.gas_used, outcome.result_sha256))
        else:
            self._rollback()
        return Evaluation(outcome.result, outcome.error, outcome.gas_used, outcome.interrupted)

    def _maybe_checkpoint(self, live: _Live) -> None:
        """Take a new base when the journal is full or the memory is small enough to copy cheaply."""
        if self._journal and (
            len(self._journal) >= self.checkpoint_every or live.size() <= self.eager_snapshot_max_bytes
        ):
            self.take_snapshot()

    def _rollback(self) -> None:
        """Rebuild the live instance from the base plus a replay of the journal."""
        self._live = None  # free the failed instance's memory before building the next
        try:
            live = self._instantiate(self._base)
            for number, entry in enumerate(self._journal, start=1):
                replay_timeout = max(entry.timeout_s * REPLAY_TIMEOUT_FACTOR, MIN_REPLAY_TIMEOUT_SECONDS)
                outcome = self._run(live, entry.msg, entry.env, entry.fuel, replay_timeout)
                if outcome.error is not None or (outcome.gas_used, outcome.result_sha256) != (
                    entry.gas_used,
                    entry.result_sha256,
                ):
                    raise CoreModuleError(
                        f"replaying message {number} of {len(self._journal)} since the last snapshot diverged "
                        f"(gas {outcome.gas_used} vs {entry.gas_used}, error {outcome.error!r}); "
                        "the module is not deterministic or keeps state outside memory"
                    )
        except (CoreModuleError, wasmtime.WasmtimeError) as exc:
            self._broken = str(exc)
            return
        self._live = live

    def _run(self, live: _Live, msg: bytes, env: bytes, fuel: int, timeout_s: float) -> _Outcome:
        """Write msg and env, call handle, read the result; never raises for module misbehaviour."""
        store = live.store
        deadline = time.monotonic() + timeout_s
        store.set_fuel(fuel)
        result: dict[str, Any] | None = None
        error: str | None = None
        digest = ""
        interrupted = False
        try:
            total = len(msg) + len(env)
            pointer = self._call(live, live.alloc, deadline, total)
            self._check_span(live, pointer, total, "alloc")
            address = live.address()
            ctypes.memmove(address + pointer, msg, len(msg))
            ctypes.memmove(address + pointer + len(msg), env, len(env))
            env_pointer = pointer + len(msg)
            result_pointer = self._call(live, live.handle, deadline, pointer, len(msg), env_pointer, len(env))
            raw = self._read_result(live, result_pointer)
            digest = hashlib.sha256(raw).hexdigest()
            result = _decode_result(raw)
            module_error = result.get("Error")
            if module_error not in (None, "", {}, []):
                error = module_error if isinstance(module_error, str) else json.dumps(module_error)
        except wasmtime.Trap as trap:
            error = _describe_trap(trap, fuel, timeout_s)
            interrupted = trap.trap_code is wasmtime.TrapCode.INTERRUPT
        except wasmtime.WasmtimeError as exc:
            error = f"wasm call failed: {exc}"
        except _CallFailed as exc:
            error = str(exc)
            interrupted = exc.interrupted
        gas_used = fuel - store.get_fuel()
        return _Outcome(result, error, gas_used, digest, interrupted)

    def _call(self, live: _Live, func: wasmtime.Func, deadline: float, *args: int) -> int:
        """Call an export with the epoch deadline reset to what is left of the wall-clock limit."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _CallFailed("interrupted: the message ran past its wall-clock limit", interrupted=True)
        live.store.set_epoch_deadline(self.runtime.epoch_ticks(remaining))
        value = func(live.store, *args)
        if not isinstance(value, int):
            raise _CallFailed(f"export returned {value!r}, not an i64")
        return value

    @staticmethod
    def _check_span(live: _Live, pointer: int, length: int, what: str) -> None:
        """Raise _CallFailed unless [pointer, pointer+length) lies inside memory."""
        if pointer < 0 or pointer + length > live.size():
            raise _CallFailed(
                f"{what} returned pointer {pointer} for {length} bytes, outside the {live.size()}-byte memory"
            )

    def _read_result(self, live: _Live, pointer: int) -> bytes:
        """The result bytes at pointer ([u64 LE length][bytes]), bounds-checked."""
        self._check_span(live, pointer, RESULT_LENGTH_BYTES, "handle")
        address = live.address()
        length = int.from_bytes(ctypes.string_at(address + pointer, RESULT_LENGTH_BYTES), "little")
        if length > MAX_RESULT_BYTES:
            raise _CallFailed(f"malformed result: length {length} exceeds the {MAX_RESULT_BYTES}-byte result cap")
        start = pointer + RESULT_LENGTH_BYTES
        if start + length > live.size():
            raise _CallFailed(f"malformed result: {length} bytes at {start} run past the end of memory")
        return ctypes.string_at(address + start, length)


def _decode_result(raw: bytes) -> dict[str, Any]:
    """Parse and shape-check a result; _CallFailed says what is wrong."""
    try:
        result = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _CallFailed(f"malformed result: not UTF-8 JSON ({exc})") from exc
    if not isinstance(result, dict):
        raise _CallFailed(f"malformed result: expected a JSON object, got {type(result).__name__}")
    for key in RESULT_LIST_KEYS:
        value = result.setdefault(key, [])
        if not isinstance(value, list):
            raise _CallFailed(f"malformed result: {key} must be a list, got {type(value).__name__}")
    return result
