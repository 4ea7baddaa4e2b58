"""Replay-verify: rebuild a process from its log alone and compare every result and state hash.

A fresh compute-unit runtime (no warm instances) evaluates every scheduled message in order
against in-memory state that starts empty (for a core memory64 process: a fresh instance,
whose memory is compared with every recorded checkpoint), after checking each assignment's signature and
hash-chain link. The first difference from what the compute unit recorded is reported with
its nonce. GasUsed is compared too: instances are fresh exactly where the instance-window rule says
(``ao.compute.context``), so the fuel a message uses is a function of the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pathlib import Path

from django.conf import settings

from ao import models
from ao.compute.context import process_context
from ao.compute.message import evaluate_core_message, evaluate_message, load_module
from ao.effects.core64 import CoreModuleRuntime, CoreProcess
from ao.modules import CORE64_FORMAT
from ao.effects.compute import fresh_component_runtime
from ao.effects.process_state import MemoryState
from ao.permaweb import dataitem
from ao.units import cu, su

PAGE = 500


@dataclass(frozen=True)
class Divergence:
    """Where a replay first disagreed with the record."""

    nonce: int
    what: str
    recorded: str
    replayed: str


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of replaying one process."""

    process_id: str
    checked: int
    divergence: Divergence | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.divergence is None


def verify_process(*, process_id: str, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Replay the process's evaluated messages; stop at the first divergence."""
    started = time.perf_counter()
    runtime = fresh_component_runtime()
    pctx = process_context(process_id)
    scheduler = models.Process.objects.values_list("scheduler", flat=True).get(id=process_id)
    total = models.Result.objects.filter(process_id=process_id).count()
    state = MemoryState()
    core = None
    checkpoints: dict[int, str] = {}
    if pctx.module_format == CORE64_FORMAT:
        core = CoreProcess.create(
            CoreModuleRuntime(cache_dir=Path(settings.AO["BUILD_CACHE"]) / "core64"),
            load_module(pctx.module_id),
            memory_limit_bytes=pctx.memory_limit,
        )
        checkpoints = dict(models.Checkpoint.objects.filter(process_id=process_id).values_list("nonce", "sha256"))
    state_hash = cu.GENESIS_STATE_HASH
    expected_chain = su.first_hash_chain(process_id)
    checked = 0
    instance_key = f"verify/{process_id}"
    window_start = 0

    def report(divergence: Divergence | None) -> VerifyReport:
        return VerifyReport(process_id, checked, divergence, time.perf_counter() - started)

    while checked < total:
        assignments = list(
            models.Assignment.objects.filter(process_id=process_id, nonce__gte=checked, nonce__lt=checked + PAGE)
            .select_related("message")
            .order_by("nonce")
        )
        results = {
            r.nonce: r
            for r in models.Result.objects.filter(process_id=process_id, nonce__gte=checked, nonce__lt=checked + PAGE)
        }
        for assignment in assignments:
            nonce = assignment.nonce
            if nonce >= total:
                return report(None)
            if nonce != checked:
                return report(Divergence(checked, "log", f"nonce {checked}", f"nonce {nonce}"))
            item = dataitem.parse(bytes(assignment.raw))
            if not dataitem.verify(item) or item.owner_address != scheduler:
                return report(Divergence(nonce, "assignment signature", scheduler, item.owner_address))
            if assignment.hash_chain != expected_chain:
                return report(Divergence(nonce, "hash chain", assignment.hash_chain, expected_chain))
            expected_chain = su.next_hash_chain(assignment.id, assignment.hash_chain)
            if core is None:
                replayed = evaluate_message(runtime, pctx, state, assignment, state_hash, instance_key=instance_key,
                                            fresh=nonce == window_start)
                if replayed.error or (nonce + 1) % pctx.window == 0:
                    window_start = nonce + 1
            else:
                replayed = evaluate_core_message(core, pctx, assignment, state_hash)
            recorded = results[nonce]
            if replayed.body != recorded.body:
                return report(Divergence(nonce, "result", cu.canonical(recorded.body).decode()[:2000],
                                         cu.canonical(replayed.body).decode()[:2000]))
            if replayed.state_hash != recorded.state_hash:
                return report(Divergence(nonce, "state hash", recorded.state_hash, replayed.state_hash))
            if replayed.gas_used != recorded.gas_used:
                return report(Divergence(nonce, "gas used", str(recorded.gas_used), str(replayed.gas_used)))
            if core is not None and nonce in checkpoints:
                memory = core.take_snapshot().sha256()
                if memory != checkpoints[nonce]:
                    return report(Divergence(nonce, "memory checkpoint", checkpoints[nonce], memory))
            state_hash = replayed.state_hash
            checked += 1
            if progress is not None and checked % 100 == 0:
                progress(checked, total)
    return report(None)
