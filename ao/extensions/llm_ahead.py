"""LLM completions computed ahead, on any worker, from requests the log already fixes.

A process that knows which completions its later messages will ask for (the Fed, on accepting a petition: one
per governor) says so with the WIT hint ``llm.prefetch``. A hint has no effect on its message's result, state or
fuel. When that message's result commits, the compute unit records the hinted requests (``record``) and asks
any worker to compute them (task ``ao.llm_ahead``), so a petition's governors run on as many workers at once
as there are free. When the message that asks (``llm.complete``) is evaluated, ``obtain`` looks its request up:

- computed: that answer;
- being computed by a live worker: wait for it, and meanwhile compute the next completion the same process
  hinted that no worker has taken yet (the asking worker would otherwise idle while it holds the process: with
  two workers, one computed and the other waited);
- waiting, or its worker died (claim expired), or never hinted: compute it here.

The key is everything that determines the output: the request (prefix, parts, grammar, max tokens), the model's
sha256 and the engine (llama.cpp build and instruction set, context and batch sizes), so the answer found is the
one this worker would compute. Replay (``ao.verify``) never reads this table: it computes every call again and
compares, so a wrong row could not hide. Rows are work, not history: the sweeper deletes old ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from ao import dispatch, models
from ao.effects import keys
from ao.errors import AoError, HostFault
from ao.extensions import llm

log = logging.getLogger(__name__)

TASK = "ao.llm_ahead"
MAX_HINTS = 8  # per message: more are ignored (a hint is only a hint)
CLAIM_S = 30.0  # a computing worker renews its claim every third of this; a dead one's is taken over after it
POLL_S = 0.05  # how often a waiting evaluation looks again
KEEP_S = 3600.0  # the sweeper deletes rows older than this
STEAL_LOOK = 8  # rows a waiting evaluation tries to claim for itself, oldest first

State = models.Completion.State
_sleep = time.sleep  # how a waiting evaluation waits (tests stand in another worker here)


def enabled() -> bool:
    """Whether this node computes hinted completions ahead (settings.AO["LLM_AHEAD"])."""
    return bool(settings.AO.get("LLM_AHEAD", True))


def _holder() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{threading.get_ident() % 10**9}"


# --- keys and values -------------------------------------------------------------------------------------------


def request_json(request: llm.CompletionRequest) -> dict[str, Any]:
    """The request as stored: prefix and parts as [text, special] pairs."""
    return {"prefix": [[p.text, p.special] for p in request.prefix],
            "parts": [[p.text, p.special] for p in request.parts],
            "grammar": request.grammar, "max_tokens": request.max_tokens}


def request_from(raw: dict[str, Any]) -> llm.CompletionRequest:
    """A stored request back as the engine takes it."""
    return llm.CompletionRequest(
        prefix=tuple(llm.PromptPart(text=t, special=s) for t, s in raw["prefix"]),
        parts=tuple(llm.PromptPart(text=t, special=s) for t, s in raw["parts"]),
        grammar=raw["grammar"], max_tokens=int(raw["max_tokens"]))


def key_for(model_sha256: str, request: llm.CompletionRequest, pool: llm.EnginePool) -> str:
    """What determines a completion's output, hashed: the request, the model, the engine and its shape."""
    what = {"request": request_json(request), "model_sha256": model_sha256.strip().lower(),
            "engine": llm.engine_fingerprint(), "n_ctx": pool.n_ctx, "n_batch": pool.n_batch}
    return hashlib.sha256(json.dumps(what, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def to_json(done: llm.Completion) -> dict[str, Any]:
    value = asdict(done)
    value["tokens"] = list(done.tokens)
    return value


def from_json(value: dict[str, Any]) -> llm.Completion:
    return llm.Completion(**{**value, "tokens": tuple(value["tokens"]), "prefix_reused": False})


# --- recording hints when their message commits ----------------------------------------------------------------


def record(process_id: str, nonce_hints: Iterable[tuple[int, tuple[tuple[str, llm.CompletionRequest], ...]]],
           *, sha256_of: Callable[[str], str | None], pool: llm.EnginePool) -> int:
    """In the commit's transaction: a row per new hinted request, and a task for each after the commit.

    Only for processes spawned by a wallet this node trusts (its operator and settings.AO["SPAWN_ALLOWLIST"]): a
    hint costs its process no fuel, so a stranger's hints would be free work; its completions are computed when
    its messages ask, and paid for in their fuel.
    """
    hinted = [(nonce, hints) for nonce, hints in nonce_hints if hints]
    if not hinted or not _trusted(process_id):
        return 0
    rows: dict[str, models.Completion] = {}
    for nonce, hints in hinted:
        for model_id, request in hints:
            sha = sha256_of(model_id)
            if not sha:
                continue
            key = key_for(sha, request, pool)
            rows.setdefault(key, models.Completion(key=key, process_id=process_id, nonce=nonce, model_id=model_id,
                                                   model_sha256=sha.strip().lower(), request=request_json(request)))
    if not rows:
        return 0
    known = set(models.Completion.objects.filter(key__in=list(rows)).values_list("key", flat=True))
    new = [row for key, row in rows.items() if key not in known]
    models.Completion.objects.bulk_create(new, ignore_conflicts=True)
    for row in new:
        dispatch.enqueue(TASK, row.key)
    return len(new)


def _trusted(process_id: str) -> bool:
    owner = models.Process.objects.filter(id=process_id).values_list("owner_address", flat=True).first()
    return owner is not None and owner in keys.trusted_signers()


# --- computing ---------------------------------------------------------------------------------------------------


def _claimable() -> Q:
    return Q(state=State.PENDING) | Q(state=State.CLAIMED, claimed_until__lt=timezone.now())


def _claim(key: str, holder: str) -> bool:
    until = timezone.now() + timedelta(seconds=CLAIM_S)
    return bool(models.Completion.objects.filter(_claimable(), key=key).update(
        state=State.CLAIMED, claimed_by=holder, claimed_until=until))


class _Keeper:
    """Renews a claim while its completion runs, in a thread of its own (with its own connection)."""

    def __init__(self, key: str, holder: str) -> None:
        self.key, self.holder, self.stop = key, holder, threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"ahead-keeper-{key[:8]}", daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.wait(CLAIM_S / 3):
                models.Completion.objects.filter(key=self.key, claimed_by=self.holder, state=State.CLAIMED).update(
                    claimed_until=timezone.now() + timedelta(seconds=CLAIM_S))
        except Exception:  # the claim then simply expires; another worker computes the completion again
            log.exception("renewing the claim on completion %s", self.key)
        finally:
            connection.close()

    def __enter__(self) -> _Keeper:
        if not connection.in_atomic_block:  # inside a transaction (a test's) no other connection sees the row
            self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


def _claimed_run(key: str, holder: str, work: Callable[[], llm.Completion]) -> llm.Completion:
    """Run `work` under this worker's claim of `key` (renewed while it runs) and store its answer; if it raises,
    the claim is given back and the error goes on."""
    started = time.monotonic()
    try:
        with _Keeper(key, holder):
            done = work()
    except BaseException:
        models.Completion.objects.filter(key=key, claimed_by=holder).update(
            state=State.PENDING, claimed_by="", claimed_until=None)
        raise
    models.Completion.objects.filter(key=key, claimed_by=holder).update(
        state=State.DONE, output=to_json(done), claimed_until=None)
    log.info("completion %s computed in %.1f s", key[:12], time.monotonic() - started)
    return done


def _compute_claimed(row: models.Completion, holder: str, engine_for: Callable[[str, str], llm.LlamaEngine],
                     ) -> llm.Completion | None:
    """Compute a row this worker claimed and store it; None (and the row released or dropped) if it cannot."""
    try:
        return _claimed_run(row.key, holder,
                            lambda: engine_for(row.model_id, row.model_sha256).complete(request_from(row.request)))
    except HostFault as exc:  # this node's trouble: left to whoever asks for it, who will meet it too
        log.warning("completion %s ahead: %s", row.key, exc)
    except (AoError, ValueError) as exc:  # a refusal that follows from the request: the asker meets it itself
        log.info("completion %s ahead refused: %s", row.key, exc)
        models.Completion.objects.filter(key=row.key).delete()
    return None


def compute(key: str, engine_for: Callable[[str, str], llm.LlamaEngine]) -> bool:
    """The task's work: compute a hinted completion unless another worker has it; True if this one did."""
    holder = _holder()
    if not _claim(key, holder):
        return False
    row = models.Completion.objects.filter(key=key).first()
    return row is not None and _compute_claimed(row, holder, engine_for) is not None


def obtain(key: str, compute_here: Callable[[], llm.Completion], *, wait_s: float,
           engine_for: Callable[[str, str], llm.LlamaEngine] | None = None) -> llm.Completion:
    """The completion under `key`: found, waited for, or computed here (see the module docstring). With
    `engine_for`, a wait computes another of the process's hinted completions meanwhile (``steal``)."""
    holder = _holder()
    begun = time.monotonic()
    deadline, waited = begun + wait_s, False
    while True:
        row = models.Completion.objects.filter(key=key).first()
        if row is None:
            return compute_here()  # never hinted (or swept): nothing to share
        if row.state == State.DONE and row.output is not None:
            if waited:
                log.info("completion %s: waited %.1f s for another worker", key[:12], time.monotonic() - begun)
            return from_json(row.output)
        if _claim(key, holder):
            return _claimed_run(key, holder, compute_here)
        if time.monotonic() > deadline:
            return compute_here()  # a live claim that never finishes: the same answer, computed here
        waited = True
        if engine_for is None or not steal(row.process_id, holder, engine_for, besides=key):
            _sleep(POLL_S)


def steal(process_id: str, holder: str, engine_for: Callable[[str, str], llm.LlamaEngine], *,
          besides: str) -> bool:
    """Compute the oldest hinted completion of the process that no live worker has (other than `besides`);
    True if one was computed."""
    for row in models.Completion.objects.filter(_claimable(), process_id=process_id).exclude(key=besides).order_by(
            "nonce", "created_at")[:STEAL_LOOK]:
        if _claim(row.key, holder):
            log.info("completion %s: computed while waiting for %s", row.key[:12], besides[:12])
            return _compute_claimed(row, holder, engine_for) is not None
    return False


def sweep(*, keep_s: float = KEEP_S) -> int:
    """Delete rows older than `keep_s` (work, not history); return how many."""
    deleted, _ = models.Completion.objects.filter(created_at__lt=timezone.now() - timedelta(seconds=keep_s)).delete()
    return deleted

