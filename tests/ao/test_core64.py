"""The core64 runtime: memory64 processes past 4 GiB, limits, fuel, traps, rollback, sparse snapshots."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import wasmtime

from ao.effects import core64
from ao.effects.core64 import (
    GIB,
    MAX_MEMORY_LIMIT,
    WASM_PAGE_SIZE,
    CoreModuleError,
    CoreModuleRuntime,
    CoreProcess,
    Evaluation,
    Snapshot,
    parse_memory_limit,
)

WAT_PATH = Path(core64.__file__).parent / "testdata" / "grow64.wat"
FUEL = 10_000_000
LOOP_FUEL = 2_000_000
TIMEOUT_S = 10.0
ENV_JSON = json.dumps({"Process": {"Id": "process-1", "Owner": "owner-1", "Tags": []}}, separators=(",", ":"))
HIGH_OFFSET = 4 * GIB + 12345  # in page 65536, the first page above 4 GiB
PAGES_PAST_4_GIB = 4 * GIB // WASM_PAGE_SIZE + 1  # grow by this from 1 page: 4 GiB + 128 KiB
LOW_OFFSET = 70_000  # in page 1, clear of the module's scratch page 0
MAX_SPARSE_SNAPSHOT_BYTES = 1024 * 1024
ROLLBACK_MODES = {"eager snapshot": 1024 * 1024, "journal replay": 0}


@pytest.fixture(scope="module")
def wasm() -> bytes:
    """The grow64 test module, assembled from its WAT source."""
    return wasmtime.wat2wasm(WAT_PATH.read_text())


@pytest.fixture(scope="module")
def runtime() -> Iterator[CoreModuleRuntime]:
    """One runtime (engine and epoch ticker) for the module's tests."""
    with CoreModuleRuntime() as rt:
        yield rt


def _send(process: CoreProcess, data: str, *, fuel: int = FUEL, timeout_s: float = TIMEOUT_S) -> Evaluation:
    """Evaluate a message whose Data is the test module's command."""
    msg = json.dumps({"Id": "m", "Data": data, "Tags": [{"name": "Action", "value": "Eval"}]}, separators=(",", ":"))
    return process.evaluate(msg, ENV_JSON, fuel=fuel, timeout_s=timeout_s)


def _output(process: CoreProcess, data: str) -> str:
    """Output of a message that must succeed."""
    evaluation = _send(process, data)
    assert evaluation.error is None, evaluation.error
    assert evaluation.result is not None
    assert evaluation.result["Messages"] == [] and evaluation.result["Error"] is None
    return evaluation.result["Output"]


def _small_process(runtime: CoreModuleRuntime, wasm: bytes, eager_bytes: int, limit: int = GIB) -> CoreProcess:
    """A process with page 1 holding 7 at LOW_OFFSET, after three handled messages."""
    process = CoreProcess.create(runtime, wasm, memory_limit_bytes=limit, eager_snapshot_max_bytes=eager_bytes)
    assert _output(process, "grow 1") == "1"
    assert _output(process, f"write {LOW_OFFSET} 7") == "ok"
    assert _output(process, f"read {LOW_OFFSET}") == "7"
    return process


def _assert_unchanged(process: CoreProcess, *, handled: int, calls: int) -> None:
    """The small process still has its low byte, memory size and counters (3 setup messages + this read)."""
    assert process.broken is None
    assert process.memory_size == 2 * WASM_PAGE_SIZE
    assert _output(process, f"read {LOW_OFFSET}") == "7"
    assert _output(process, "handled") == str(handled)
    assert _output(process, "calls") == str(calls)


def test_grows_past_4_gib_and_keeps_high_byte_live_and_across_snapshot(
    runtime: CoreModuleRuntime, wasm: bytes
) -> None:
    process = CoreProcess.create(runtime, wasm, memory_limit_bytes=parse_memory_limit("16-gb"))
    started = time.perf_counter()
    assert _output(process, f"grow {PAGES_PAST_4_GIB}") == "1"
    assert time.perf_counter() - started < 1.0
    assert process.memory_size == (PAGES_PAST_4_GIB + 1) * WASM_PAGE_SIZE > 4 * GIB
    assert _output(process, f"write {HIGH_OFFSET} 42") == "ok"
    assert _output(process, "handled") == "3"
    assert _output(process, f"read {HIGH_OFFSET}") == "42"  # a later message, same live instance

    snapshot = process.take_snapshot()
    assert snapshot.memory_size == process.memory_size
    assert sorted(snapshot.pages) == [0, HIGH_OFFSET // WASM_PAGE_SIZE]
    assert snapshot.globals == {"calls": ("i64", 4)}

    restored = CoreProcess.create(
        runtime, wasm, memory_limit_bytes=MAX_MEMORY_LIMIT, snapshot=Snapshot.from_bytes(snapshot.to_bytes())
    )
    assert restored.memory_size == snapshot.memory_size
    assert _output(restored, f"read {HIGH_OFFSET}") == "42"
    assert _output(restored, f"read {HIGH_OFFSET + 1}") == "0"
    assert _output(restored, "calls") == "7"  # the global came back (4), plus these three messages
    assert restored.take_snapshot().pages[0] != snapshot.pages[0]  # the counter moved on


def test_sparse_snapshot_of_a_memory_past_4_gib_is_small_and_round_trips(
    runtime: CoreModuleRuntime, wasm: bytes
) -> None:
    process = CoreProcess.create(runtime, wasm)
    _output(process, f"grow {PAGES_PAST_4_GIB}")
    _output(process, f"write {HIGH_OFFSET} 200")
    started = time.perf_counter()
    snapshot = process.take_snapshot()
    elapsed = time.perf_counter() - started
    encoded = snapshot.to_bytes()
    assert elapsed < 2.0
    assert snapshot.memory_size > 4 * GIB
    assert len(encoded) == snapshot.encoded_size < MAX_SPARSE_SNAPSHOT_BYTES
    decoded = Snapshot.from_bytes(encoded)
    assert decoded == snapshot
    assert decoded.sha256() == snapshot.sha256() == core64.hashlib.sha256(encoded).hexdigest()
    assert decoded.pages[HIGH_OFFSET // WASM_PAGE_SIZE][HIGH_OFFSET % WASM_PAGE_SIZE] == 200
    # An unchanged process snapshots to the same state; a changed one does not.
    assert process.take_snapshot().sha256() == snapshot.sha256()
    _output(process, f"write {HIGH_OFFSET} 201")
    assert process.take_snapshot().sha256() != snapshot.sha256()


@pytest.mark.skipif(not os.access(core64.PAGEMAP_PATH, os.R_OK), reason="no readable /proc/self/pagemap")
def test_pagemap_skips_pages_the_kernel_never_backed(runtime: CoreModuleRuntime, wasm: bytes) -> None:
    process = CoreProcess.create(runtime, wasm)
    _output(process, f"grow {PAGES_PAST_4_GIB}")
    _output(process, f"write {HIGH_OFFSET} 1")
    live = process._require_live()
    touched = core64.materialised_pages(live.address(), live.size())
    assert touched is not None and len(touched) == PAGES_PAST_4_GIB + 1
    assert touched[0] and touched[HIGH_OFFSET // WASM_PAGE_SIZE]
    assert int(touched.sum()) < 16  # only the pages the module wrote, not 4 GiB of them
    assert core64.nonzero_pages(live.address(), live.size()) == [0, HIGH_OFFSET // WASM_PAGE_SIZE]


def test_restore_zeroes_data_segment_pages_the_snapshot_lacks(runtime: CoreModuleRuntime) -> None:
    wasm = wasmtime.wat2wasm(
        r"""(module
          (memory (export "memory") i64 2)
          (data (i64.const 65536) "\01")
          (data (i64.const 1024) "\02\00\00\00\00\00\00\00{}")
          (func (export "alloc") (param i64) (result i64) (i64.const 4096))
          (func (export "handle") (param i64 i64 i64 i64) (result i64)
            (i64.store8 (i64.const 65536) (i64.const 0))
            (i64.const 1024)))"""
    )
    process = CoreProcess.create(runtime, wasm)
    assert 1 in process.take_snapshot().pages  # the data segment's page
    evaluation = process.evaluate("{}", "{}", fuel=FUEL, timeout_s=TIMEOUT_S)
    assert evaluation.error is None and evaluation.result == {"Messages": [], "Spawns": [], "Assignments": []}
    snapshot = process.take_snapshot()
    assert sorted(snapshot.pages) == [0]
    restored = CoreProcess.create(runtime, wasm, snapshot=snapshot)
    assert restored.take_snapshot() == snapshot


def test_snapshot_from_bytes_rejects_damaged_input() -> None:
    good = Snapshot(memory_size=2 * WASM_PAGE_SIZE, pages={1: b"\x01" * WASM_PAGE_SIZE}, globals={"g": ("i32", 5)})
    encoded = good.to_bytes()
    assert Snapshot.from_bytes(encoded) == good
    with pytest.raises(ValueError, match="bad magic"):
        Snapshot.from_bytes(b"NOTASNAP" + encoded[8:])
    with pytest.raises(ValueError, match="truncated"):
        Snapshot.from_bytes(encoded[:-1])
    with pytest.raises(ValueError, match="trailing"):
        Snapshot.from_bytes(encoded + b"\x00")
    with pytest.raises(ValueError, match="outside"):
        Snapshot(memory_size=WASM_PAGE_SIZE, pages={1: b"\x00" * WASM_PAGE_SIZE})


@pytest.mark.parametrize("eager_bytes", ROLLBACK_MODES.values(), ids=ROLLBACK_MODES.keys())
def test_grow_past_a_1_gib_limit_fails_cleanly_and_rolls_back(
    runtime: CoreModuleRuntime, wasm: bytes, eager_bytes: int
) -> None:
    process = _small_process(runtime, wasm, eager_bytes, limit=parse_memory_limit("1-gb"))
    evaluation = _send(process, f"grow {PAGES_PAST_4_GIB}")
    assert evaluation.error == "grow failed"
    assert evaluation.result is not None and evaluation.result["Error"] == "grow failed"
    assert evaluation.gas_used > 0
    _assert_unchanged(process, handled=5, calls=6)


@pytest.mark.parametrize("eager_bytes", ROLLBACK_MODES.values(), ids=ROLLBACK_MODES.keys())
def test_fuel_exhaustion_is_an_error_and_rolls_back(runtime: CoreModuleRuntime, wasm: bytes, eager_bytes: int) -> None:
    process = _small_process(runtime, wasm, eager_bytes)
    evaluation = _send(process, f"loop {LOW_OFFSET} 9", fuel=LOOP_FUEL)
    assert evaluation.result is None
    assert evaluation.error is not None and "out of fuel" in evaluation.error
    assert evaluation.gas_used == LOOP_FUEL
    _assert_unchanged(process, handled=5, calls=6)


def test_wall_clock_timeout_interrupts_a_loop_and_rolls_back(runtime: CoreModuleRuntime, wasm: bytes) -> None:
    process = _small_process(runtime, wasm, 0)
    started = time.perf_counter()
    evaluation = _send(process, f"loop {LOW_OFFSET} 9", fuel=core64.MAX_FUEL, timeout_s=0.1)
    assert time.perf_counter() - started < 5.0
    assert evaluation.error is not None and "wall-clock" in evaluation.error
    _assert_unchanged(process, handled=5, calls=6)


@pytest.mark.parametrize("eager_bytes", ROLLBACK_MODES.values(), ids=ROLLBACK_MODES.keys())
@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (f"trap {LOW_OFFSET} 9", "unreachable"),
        (f"write {3 * GIB} 9", "out of bounds"),
        ("xbad", "malformed result"),
        ("bogus", "unknown op"),
    ],
)
def test_traps_and_bad_results_are_errors_and_roll_back(
    runtime: CoreModuleRuntime, wasm: bytes, eager_bytes: int, command: str, reason: str
) -> None:
    process = _small_process(runtime, wasm, eager_bytes)
    evaluation = _send(process, command)
    assert evaluation.error is not None and reason in evaluation.error
    _assert_unchanged(process, handled=5, calls=6)


def test_journal_replay_restores_every_message_since_the_last_snapshot(
    runtime: CoreModuleRuntime, wasm: bytes
) -> None:
    process = CoreProcess.create(runtime, wasm, eager_snapshot_max_bytes=0, checkpoint_every=5)
    _output(process, "grow 1")
    checkpoint = process.take_snapshot()
    assert process.journal_length == 0
    for value in range(1, 5):
        _output(process, f"write {LOW_OFFSET + value} {value}")
    assert process.journal_length == 4
    assert _send(process, f"trap {LOW_OFFSET + 1} 99").error is not None
    assert process.journal_length == 4
    assert [_output(process, f"read {LOW_OFFSET + value}") for value in range(1, 5)] == ["1", "2", "3", "4"]
    assert process.journal_length == 3  # a checkpoint was taken once the journal held checkpoint_every (5)
    assert process.take_snapshot().sha256() != checkpoint.sha256()


def test_a_replay_that_diverges_marks_the_process_unusable_without_raising(
    runtime: CoreModuleRuntime, wasm: bytes
) -> None:
    process = CoreProcess.create(runtime, wasm, eager_snapshot_max_bytes=0)
    _output(process, "grow 1")
    # Pretend the recorded result differed, as a module keeping state outside memory would cause.
    process._journal[0] = dataclasses.replace(process._journal[0], result_sha256="0" * 64)
    assert _send(process, f"trap {LOW_OFFSET} 1").error is not None
    assert process.broken is not None and "diverged" in process.broken
    evaluation = _send(process, "handled")
    assert evaluation.result is None
    assert evaluation.error is not None and "recreate it from its last snapshot" in evaluation.error
    with pytest.raises(CoreModuleError, match="unusable"):
        process.take_snapshot()


def test_restoring_a_snapshot_needs_room_under_the_memory_limit(runtime: CoreModuleRuntime, wasm: bytes) -> None:
    process = CoreProcess.create(runtime, wasm)
    _output(process, "grow 20")
    snapshot = process.take_snapshot()
    with pytest.raises(CoreModuleError, match="above this process's Memory-Limit"):
        CoreProcess.create(runtime, wasm, memory_limit_bytes=WASM_PAGE_SIZE * 4, snapshot=snapshot)


def test_modules_outside_the_abi_are_rejected_with_the_reason(runtime: CoreModuleRuntime) -> None:
    funcs = (
        '(func (export "alloc") (param i64) (result i64) local.get 0)'
        '(func (export "handle") (param i64 i64 i64 i64) (result i64) local.get 0)'
    )
    cases = {
        '(module (memory (export "memory") 1) ' + funcs + ")": "32-bit",
        '(module (memory (export "memory") i64 1))': "alloc",
        '(module (import "env" "f" (func)) (memory (export "memory") i64 1) ' + funcs + ")": "import nothing",
    }
    for wat, reason in cases.items():
        with pytest.raises(CoreModuleError, match=reason):
            CoreProcess.create(runtime, wasmtime.wat2wasm(wat))
    with pytest.raises(CoreModuleError, match="does not compile"):
        CoreProcess.create(runtime, b"\x00asm\x01\x00\x00\x00garbage")


def test_compiled_modules_are_cached_on_disk_and_reloaded(
    wasm: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with CoreModuleRuntime(cache_dir=tmp_path) as first:
        first.compile(wasm)
    key = core64.hashlib.sha256(wasm).hexdigest()
    cached = list(tmp_path.glob(f"{key}.*.cwasm"))
    assert len(cached) == 1

    loaded: list[str] = []
    deserialize = wasmtime.Module.deserialize_file

    def spy(engine: wasmtime.Engine, path: str) -> wasmtime.Module:
        loaded.append(path)
        return deserialize(engine, path)

    monkeypatch.setattr(wasmtime.Module, "deserialize_file", staticmethod(spy))
    with CoreModuleRuntime(cache_dir=tmp_path) as second:
        process = CoreProcess.create(second, wasm)
        assert _output(process, "handled") == "1"
    assert loaded == [str(cached[0])]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16-gb", 16 * GIB),
        ("1-gb", GIB),
        ("512-mb", 512 * 1024 * 1024),
        ("4096-kb", 4096 * 1024),
        ("1048576", 1048576),
        (" 2-GB ", 2 * GIB),
        (65536, 65536),
    ],
)
def test_parse_memory_limit_accepts_ao_forms(text: str | int, expected: int) -> None:
    assert parse_memory_limit(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("17-gb", "cap of 16-gb"),
        (MAX_MEMORY_LIMIT + 1, "cap of 16-gb"),
        ("1-tb", "unknown unit"),
        ("1.5-gb", "whole number"),
        ("lots", "not a size"),
        ("", "not a size"),
        ("0-mb", "positive"),
        (-5, "positive"),
        (True, "boolean"),
    ],
)
def test_parse_memory_limit_rejects_bad_input_with_a_reason(text: str | int, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_memory_limit(text)
