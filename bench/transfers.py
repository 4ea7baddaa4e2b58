"""Ledger transfers per second end to end (scheduled, evaluated in WebAssembly, committed with their notices
recorded) vs the same handler run natively in Python, in one run; the notices' delivery rate and latency;
then replay-verify speed.

    .venv/bin/python bench/transfers.py [N] [BATCH]  # SQLite; BATCH items per scheduling transaction
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/x .venv/bin/python bench/transfers.py [N]
"""

from __future__ import annotations

import json
import os
import sys
import time

from _setup import ROOT, django_ready

N = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "--evaluate" else 2000
BATCH = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] != "--evaluate" else 1


def main() -> None:
    django_ready()
    from django.db import connection

    from ao import services, verify
    from ao.compute import batch, pushes
    from ao.compute.context import process_context
    from ao.permaweb import dataitem
    from ao.permaweb.wallet import Ed25519Key
    from ao.units import su
    from ledger import services as ledger_services

    owner = Ed25519Key.generate()
    module_id = ledger_services.ledger_module_id()
    spawn = dataitem.create_data_item(owner, b"", tags=services.spawn_tags(module_id, [("Ticker", "BENCH")]), anchor=os.urandom(32))
    services.su_schedule(raw=spawn.serialize())
    pid = spawn.id

    def message(tags: list[tuple[str, str]]) -> bytes:
        return dataitem.create_data_item(owner, b"", target=pid, anchor=os.urandom(32), tags=[
            ("Data-Protocol", "ao"), ("Variant", su.VARIANT), ("Type", "Message"), *tags]).serialize()

    services.su_schedule(raw=message([("Action", "Mint"), ("Quantity", str(10**15))]))
    batch.evaluate_pending(process_id=pid)  # warm: compile (cached), instance, spawn, mint
    pushes.deliver_pending()
    recipients = [Ed25519Key.generate().address for _ in range(50)]
    # Users sign their own messages: signing is not part of the unit's work.
    raws = [message([("Action", "Transfer"), ("Recipient", recipients[i % 50]), ("Quantity", "1")]) for i in range(N)]

    # Pipelined: an evaluator process (a CU worker) runs alongside the scheduler, as deployed.
    import subprocess

    from ao import models as m
    connection.close()
    evaluator = subprocess.Popen(
        [sys.executable, __file__, "--evaluate", pid, str(N + 2)],
        env={**os.environ, "DATABASE_URL": _database_url(connection)},
    )
    time.sleep(1.0)  # let it import and warm its instance
    tp0 = time.perf_counter()
    for start in range(0, N, max(BATCH, 1)):
        out = services.su_schedule_batch(raws=raws[start:start + max(BATCH, 1)])
        assert all(not isinstance(a, Exception) for a in out)
    while m.Result.objects.filter(process_id=pid).count() < N + 2:
        time.sleep(0.01)
    tp1 = time.perf_counter()
    evaluator.wait(timeout=600)
    tp2 = time.perf_counter()
    pipelined, pipelined_delivered = N / (tp1 - tp0), N / (tp2 - tp0)
    latencies = sorted(_delivery_latencies_ms(pid))

    # Serial phases on a second process, each timed alone.
    spawn2 = dataitem.create_data_item(owner, b"", tags=services.spawn_tags(module_id, [("Ticker", "BENCH2")]), anchor=os.urandom(32))
    services.su_schedule(raw=spawn2.serialize())
    pid = spawn2.id
    services.su_schedule(raw=message([("Action", "Mint"), ("Quantity", str(10**15))]))
    batch.evaluate_pending(process_id=pid)
    pushes.deliver_pending()
    raws = [message([("Action", "Transfer"), ("Recipient", recipients[i % 50]), ("Quantity", "1")]) for i in range(N)]

    t0 = time.perf_counter()
    if BATCH > 1:  # the messenger hands the scheduler BATCH items per transaction
        for start in range(0, N, BATCH):
            out = services.su_schedule_batch(raws=raws[start:start + BATCH])
            assert all(not isinstance(a, Exception) for a in out)
    else:
        for raw in raws:
            services.su_schedule(raw=raw)
    t1 = time.perf_counter()
    evaluated = batch.evaluate_pending(process_id=pid)
    t2 = time.perf_counter()
    assert evaluated == N, evaluated
    delivered = pushes.deliver_pending(process_id=pid, limit=10 * N)
    t2d = time.perf_counter()
    assert delivered.stored == 2 * N, delivered  # a Debit-Notice and a Credit-Notice per transfer, to wallets

    # Baseline: the same handler, natively, over the same message and env JSON, with a dict host.
    sys.path[:0] = [str(ROOT / "ledger" / "process"), str(ROOT / "ao" / "sdk")]
    from process_main import process  # type: ignore[import-not-found]

    from ao import models

    class DictHost:
        def __init__(self) -> None:
            self.d: dict[str, bytes] = {}

        def get(self, k: str) -> bytes | None:
            return self.d.get(k)

        def set(self, k: str, v: bytes) -> None:
            self.d[k] = v

        def delete(self, k: str) -> None:
            self.d.pop(k, None)

        def keys(self, p: str, a: str, n: int) -> list[str]:
            return sorted(k for k in self.d if k.startswith(p) and k > a)[:n]

        def log(self, line: str) -> None:
            pass

    pctx = process_context(pid)
    from ao.units import cu

    inputs = []
    for a in models.Assignment.objects.filter(process_id=pid).select_related("message").order_by("nonce"):
        item = dataitem.parse(bytes(a.message.raw))
        slot = cu.Slot(pid, a.nonce, a.epoch, a.timestamp, a.block_height, a.hash_chain)
        inputs.append(cu.canonical(cu.message_json(item, slot, genuine_push=False)).decode())
    host = DictHost()
    t3 = time.perf_counter()
    for msg in inputs:
        process.handle(host, msg, pctx.env_json)
    t4 = time.perf_counter()
    native_per_s = len(inputs) / (t4 - t3)

    t5 = time.perf_counter()
    report = verify.verify_process(process_id=pid)
    t6 = time.perf_counter()
    assert report.ok, report.divergence

    schedule_s, evaluate_s = t1 - t0, t2 - t1
    end_to_end = N / (schedule_s + evaluate_s)
    wasm_only = N / evaluate_s
    print(json.dumps({
        "database": connection.vendor,
        "transfers": N,
        "schedule_batch": BATCH,
        "schedule_per_s": round(N / schedule_s),
        "evaluate_commit_per_s": round(wasm_only),
        "end_to_end_serial_per_s": round(end_to_end),
        "end_to_end_pipelined_per_s": round(pipelined),
        "pipelined_with_notices_delivered_per_s": round(pipelined_delivered),
        "notices_delivered_per_s": round(2 * N / (t2d - t2)),
        "pipelined_notice_latency_ms": {"p50": _pct(latencies, 50), "p99": _pct(latencies, 99),
                                        "max": latencies[-1] if latencies else None},
        "native_handler_per_s": round(native_per_s),
        "evaluate_vs_native_ratio": round(native_per_s / wasm_only, 2),
        "pipelined_vs_native_ratio": round(native_per_s / pipelined, 2),
        "replay_verify_per_s": round(report.checked / (t6 - t5)),
    }, indent=2))


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


def evaluate_until(pid: str, total: int) -> None:
    """The worker process: evaluate as messages arrive, and deliver the notices, until all is done."""
    os.environ["LLAMAFED_BENCH_CHILD"] = "1"
    django_ready()
    from ao import models
    from ao.compute import batch, pushes

    while True:
        done = models.Result.objects.filter(process_id=pid).count() >= total
        evaluated = batch.evaluate_process(process_id=pid, force=True).evaluated
        report = pushes.deliver_pending(process_id=pid)
        if done and not evaluated and not (report.delivered or report.stored):
            return
        if not evaluated and not report.stored:
            time.sleep(0.005)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--evaluate":
        evaluate_until(sys.argv[2], int(sys.argv[3]))
    else:
        main()
