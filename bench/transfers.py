"""Ledger transfers per second end to end vs the same handler run natively in Python, in one run; then replay-verify.

End to end is the whole path of a transfer: the messenger's intake schedules it (signature checked, signed
assignment), a compute-unit worker evaluates it in WebAssembly and commits the result, and the messenger delivers
its two notices (signed items kept in the store for the wallets). As deployed, three processes share the machine:
this one is the intake, a child evaluates, another child delivers. The baseline is the ledger's own handler run
natively over the same messages with a dict for its state; beside it, the same handler called in the production
wasm runtime with nothing else around it (the floor under both wasm paths). Replay-verify rebuilds the process from
its signed log.
Then each phase runs alone on a second process (schedule, evaluate, deliver), timed, and with ``--profile`` each
phase's time is split by where it went (signature checks, wasm calls, database, serialisation, the rest).

    .venv/bin/python bench/transfers.py [N] [BATCH] [--profile]   # SQLite; BATCH items per scheduling transaction
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/x .venv/bin/python bench/transfers.py [N] [BATCH]
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from _setup import ROOT, django_ready

CHILD = len(sys.argv) > 1 and sys.argv[1] in ("--evaluate", "--deliver")
ARGS = [] if CHILD else [a for a in sys.argv[1:] if not a.startswith("--")]
PROFILE = "--profile" in sys.argv
N = int(ARGS[0]) if ARGS else 2000
BATCH = int(ARGS[1]) if len(ARGS) > 1 else 100
RECIPIENTS = 50
NATIVE_PASSES = 5


def main() -> None:
    django_ready()
    from django.db import connection

    from ao import models, verify

    setup = _Setup()
    pid, raws = setup.ledger("BENCH")

    # Pipelined, as deployed: this process is the messenger's intake; one child evaluates, one delivers.
    stored_before = _stored(pid)
    connection.close()
    env = {**os.environ, "DATABASE_URL": _database_url(connection), "LLAMAFED_BENCH_CHILD": "1"}
    children = [subprocess.Popen([sys.executable, __file__, role, pid, str(target)], env=env)
                for role, target in (("--evaluate", N + 2), ("--deliver", stored_before + 2 * N))]
    time.sleep(2.0)  # let them import and warm up (the evaluator compiles nothing: the module is cached)
    t0 = time.perf_counter()
    for start in range(0, N, BATCH):
        out = setup.services.su_schedule_batch(raws=raws[start:start + BATCH])
        assert all(not isinstance(a, Exception) for a in out), out
    scheduled = time.perf_counter()

    def wait(done: Callable[[], bool]) -> float:
        while not done():
            if any(c.poll() not in (None, 0) for c in children):
                raise SystemExit(f"a worker process failed: {[c.returncode for c in children]}")
            time.sleep(0.005)
        return time.perf_counter()

    evaluated = wait(lambda: models.Result.objects.filter(process_id=pid).count() >= N + 2)
    delivered = wait(lambda: _stored(pid) >= stored_before + 2 * N)
    for child in children:
        child.wait(timeout=600)
        assert child.returncode == 0, child.returncode
    latencies = sorted(_delivery_latencies_ms(pid))

    pctx, inputs = _handler_inputs(pid)
    native_per_s = _native_rate(inputs, pctx.env_json)
    wasm_call_per_s = _wasm_call_rate(pctx, inputs)

    connection.close()
    c0, t5 = time.process_time(), time.perf_counter()
    report = verify.verify_process(process_id=pid)
    t6, c1 = time.perf_counter(), time.process_time()
    assert report.ok, report.divergence
    replay_per_s = report.checked / (t6 - t5)

    phases = setup.serial_phases()
    e2e = N / (delivered - t0)
    print(json.dumps({
        "database": connection.vendor,
        "transfers": N,
        "schedule_batch": BATCH,
        "native_handler_per_s": round(native_per_s),
        "end_to_end_pipelined_per_s": round(e2e),
        "end_to_end_pipelined_vs_native": round(native_per_s / e2e, 2),
        "replay_verify_per_s": round(replay_per_s),
        "replay_verify_vs_native": round(native_per_s / replay_per_s, 2),
        "replay_verify_cpu_us_per_message": round((c1 - c0) * 1e6 / report.checked),
        # the export call alone (no log, signatures, database or hashing): no wasm path can beat this ratio
        "wasm_handler_call_per_s": round(wasm_call_per_s),
        "wasm_handler_call_vs_native": round(native_per_s / wasm_call_per_s, 2),
        "pipelined_intake_done_s": round(scheduled - t0, 2),
        "pipelined_results_committed_s": round(evaluated - t0, 2),
        "pipelined_notices_delivered_s": round(delivered - t0, 2),
        "pipelined_notice_latency_ms": {"p50": _pct(latencies, 50), "p99": _pct(latencies, 99),
                                        "max": latencies[-1] if latencies else None},
        "serial_phases": phases,
    }, indent=2))


class _Setup:
    """A signer, the ledger module, and freshly spawned, funded ledgers with N signed transfers ready for each."""

    def __init__(self) -> None:
        from ao import services
        from ao.permaweb.wallet import Ed25519Key
        from ledger import services as ledger_services

        self.services = services
        self.owner = Ed25519Key.generate()
        self.module_id = ledger_services.ledger_module_id()
        self.recipients = [Ed25519Key.generate().address for _ in range(RECIPIENTS)]

    def ledger(self, ticker: str) -> tuple[str, list[bytes]]:
        from ao.compute import batch, pushes
        from ao.permaweb import dataitem

        spawn = dataitem.create_data_item(self.owner, b"", anchor=os.urandom(32),
                                          tags=self.services.spawn_tags(self.module_id, [("Ticker", ticker)]))
        self.services.su_schedule(raw=spawn.serialize())
        pid = spawn.id
        self.services.su_schedule(raw=self._message(pid, [("Action", "Mint"), ("Quantity", str(10**15))]))
        batch.evaluate_pending(process_id=pid)  # warm: compile (cached), instance, spawn, mint
        pushes.deliver_pending()
        # Users sign their own messages: signing them is not the units' work.
        raws = [self._message(pid, [("Action", "Transfer"), ("Recipient", self.recipients[i % RECIPIENTS]),
                                    ("Quantity", "1")]) for i in range(N)]
        return pid, raws

    def _message(self, pid: str, tags: list[tuple[str, str]]) -> bytes:
        from ao.permaweb import dataitem
        from ao.units import su

        return dataitem.create_data_item(self.owner, b"", target=pid, anchor=os.urandom(32), tags=[
            ("Data-Protocol", "ao"), ("Variant", su.VARIANT), ("Type", "Message"), *tags]).serialize()

    def serial_phases(self) -> dict[str, Any]:
        """Each phase alone on a second ledger: wall and CPU time per transfer, and with --profile where it went."""
        from ao.compute import batch, pushes

        pid, raws = self.ledger("BENCH2")
        out: dict[str, Any] = {}

        def schedule() -> None:
            for start in range(0, N, BATCH):
                self.services.su_schedule_batch(raws=raws[start:start + BATCH])

        def evaluate() -> None:
            assert batch.evaluate_pending(process_id=pid) == N

        def deliver() -> None:
            assert pushes.deliver_pending(process_id=pid, limit=10 * N).stored == 2 * N

        for name, phase in (("schedule", schedule), ("evaluate_commit", evaluate), ("deliver_2_notices", deliver)):
            out[name] = _timed(phase)
        return out


def _timed(phase: Callable[[], None]) -> dict[str, Any]:
    profiler = cProfile.Profile() if PROFILE else None
    c0, t0 = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    phase()
    if profiler is not None:
        profiler.disable()
    t1, c1 = time.perf_counter(), time.process_time()
    timing: dict[str, Any] = {"per_s": round(N / (t1 - t0)), "cpu_us_per_transfer": round((c1 - c0) * 1e6 / N)}
    if profiler is not None:
        timing["profile_share"] = _where(profiler)
    return timing


# Where a phase's time went, by the function it was spent in (tottime), first matching rule wins.
_KINDS = (
    ("signatures", ("crypto_sign", "_sodium", "ed25519", "_rust.openssl", "rsa")),
    ("wasm", ("wasmtime_component_func_call", "wasm_fastcall", "wasmtime")),
    ("database", ("sqlite3", "psycopg", "SQLiteCursorWrapper", "django/db", "effects/bulk")),
    ("serialisation", ("json", "tags.py", "deephash", "dataitem.py", "b64", "hashlib", "_hashlib")),
)


def _where(profiler: cProfile.Profile) -> dict[str, float]:
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    totals: dict[str, float] = {kind: 0.0 for kind, _ in _KINDS} | {"other": 0.0}
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.items():
        where = f"{filename}:{name}"
        kind = next((k for k, needles in _KINDS if any(n in where for n in needles)), "other")
        totals[kind] += tottime
    whole = sum(totals.values()) or 1.0
    return {kind: round(value / whole, 3) for kind, value in totals.items()}


def _native_rate(inputs: list[str], env_json: str) -> float:
    """The same handler natively, over the same message and env JSON, with a dict host: messages per second."""
    sys.path[:0] = [str(ROOT / "ledger" / "process"), str(ROOT / "ao" / "sdk")]
    from process_main import process  # type: ignore[import-not-found]

    class DictHost:
        def __init__(self) -> None:
            self.d: dict[str, str] = {}

        def get(self, k: str) -> str | None:
            return self.d.get(k)

        def set(self, k: str, v: str) -> None:
            self.d[k] = v

        def delete(self, k: str) -> None:
            self.d.pop(k, None)

        def keys(self, p: str, a: str, n: int) -> list[str]:
            return sorted(k for k in self.d if k.startswith(p) and k > a)[:n]

        def log(self, line: str) -> None:
            pass

    best = float("inf")
    for _ in range(NATIVE_PASSES):  # the best of a few passes: the baseline at its warmest
        host, elapsed = DictHost(), 0.0
        for msg in inputs:  # only the handler is timed; its writes are applied off the clock, so it sees its state
            t0 = time.perf_counter()
            out = process.handle(host, msg, env_json)
            elapsed += time.perf_counter() - t0
            for key, value in (json.loads(out).get("Writes") or {}).items():
                host.delete(key) if value is None else host.set(key, value)
        assert '"Debit-Notice"' in out, out  # the transfers really moved tokens (no refusal path)
        best = min(best, elapsed)
    return len(inputs) / best


def _handler_inputs(pid: str) -> tuple[Any, list[str]]:
    """The process context and every scheduled message's msg JSON, exactly as the compute unit hands it over."""
    from ao import models
    from ao.compute.context import process_context
    from ao.permaweb import dataitem
    from ao.units import cu

    inputs = []
    for a in models.Assignment.objects.filter(process_id=pid).select_related("message").order_by("nonce"):
        item = dataitem.parse(bytes(a.message.raw))
        slot = cu.Slot(pid, a.nonce, a.epoch, a.timestamp, a.block_height, a.hash_chain)
        inputs.append(cu.canonical(cu.message_json(item, slot, genuine_push=False)).decode())
    return process_context(pid), inputs


def _wasm_call_rate(pctx: Any, inputs: list[str]) -> float:
    """The floor under every wasm path: the same handler over the same JSON, in the production runtime (fuel
    metered, instance windows as the compute unit keeps them), timing only the export call and its state imports.
    Its writes are applied off the clock, as the native baseline's are."""
    from ao.compute.message import load_module
    from ao.effects.compute import fresh_component_runtime
    from ao.effects.process_state import MemoryState
    from ao.effects.wasm_runtime import CallContext
    from ao.units import cu

    runtime = fresh_component_runtime()
    component = runtime.component(pctx.module_id, lambda: load_module(pctx.module_id))
    best = float("inf")
    for _ in range(NATIVE_PASSES):
        state, elapsed = MemoryState(), 0.0
        for nonce, msg in enumerate(inputs):
            ctx = CallContext(state=state, seed=bytes(32), timestamp_ms=0)
            t0 = time.perf_counter()
            out = runtime.call(component, msg, pctx.env_json, ctx, fuel=pctx.fuel, memory_limit=pctx.memory_limit,
                               instance_key="floor", fresh=nonce % pctx.window == 0)
            elapsed += time.perf_counter() - t0
            assert out.error is None and out.output is not None, out.error
            for key, value in cu.normalize_result(out.output)[1].items():
                state.delete(key) if value is None else state.set(key, value)
            state.commit_message()
        assert '"Debit-Notice"' in out.output, out.output
        best = min(best, elapsed)
    return len(inputs) / best


def _stored(pid: str) -> int:
    from ao import models

    return models.Push.objects.filter(process_id=pid, state=models.Push.State.STORED).count()


def _database_url(connection: object) -> str:
    db = connection.settings_dict  # type: ignore[attr-defined]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def _delivery_latencies_ms(pid: str) -> list[int]:
    """For every notice of the process: ms from its transfer's assignment to the notice's delivery."""
    from ao import models

    scheduled = dict(models.Assignment.objects.filter(process_id=pid).values_list("nonce", "timestamp"))
    return [int(at.timestamp() * 1000) - scheduled[nonce]
            for nonce, at in models.Push.objects.filter(process_id=pid).values_list("nonce", "delivered_at")
            if at is not None]


def _pct(values: list[int], q: int) -> int | None:
    return values[min(len(values) - 1, len(values) * q // 100)] if values else None


def child(role: str, pid: str, target: int) -> None:
    """A worker process: evaluate as messages arrive, or deliver the notices as results commit, until `target`."""
    django_ready()
    from ao import models
    from ao.compute import batch, pushes

    while True:
        if role == "--evaluate":
            if models.Result.objects.filter(process_id=pid).count() >= target:
                return
            busy = batch.evaluate_process(process_id=pid, force=True).evaluated
        else:
            if _stored(pid) >= target:
                return
            busy = pushes.deliver_pending(process_id=pid).stored
        if not busy:
            time.sleep(0.002)


if __name__ == "__main__":
    if CHILD:
        child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    else:
        main()
