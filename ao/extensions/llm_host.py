"""The LLM extension as the compute unit offers it to processes (WIT imports llm.complete and llm.prefetch).

The model path is a WeaveDrive ``/data/<txid>``: it must be admitted for the process like any
read, every chunk of it is verified, and the verified local file is what llama.cpp loads, once
per worker, after its sha256 is checked against the transaction's ``Sha256`` tag. Each call's
request, model id and sha256, parameters, raw output and token counts go into the message's
result (``Calls``), so the result, and its replay, carry the whole decision. ``prefetch`` hints at a completion a
later message will ask for, so that any worker may compute it ahead (``ao.extensions.llm_ahead``).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from ao import models
from ao.errors import AoError, HostFault, HostUnavailable
from ao.extensions import llm, llm_ahead, weavedrive
from ao.extensions.weavedrive import WeaveDrive
from ao.permaweb.store import StoreError
from ao.units import weavedrive as wd

EXTENSION = "Llama"
MAX_PARTS = 64
MAX_PART_CHARS = 64 * 1024
MAX_GRAMMAR_CHARS = 16 * 1024
MAX_TOKENS = 1024
AHEAD_WAIT_S = 150.0  # how long a message waits for another worker's claim before computing the completion itself

_pool_lock = threading.Lock()
_pool: llm.EnginePool | None = None


def engine_pool() -> llm.EnginePool:
    """This worker process's loaded models (each loaded once, n_threads=1), prefix states kept under DATA_DIR."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = llm.EnginePool(n_threads=settings.AO["LLM_THREADS"],
                                   state_dir=Path(settings.DATA_DIR) / "llm-prefix-states")
        return _pool


def enabled(process_tags: list[tuple[str, str]], module_tags: list[tuple[str, str]]) -> bool:
    """True when the process or its module carries Extension=Llama."""
    return any(n == "Extension" and v == EXTENSION for n, v in (*process_tags, *module_tags))


def _parts(raw: Any, what: str) -> tuple[llm.PromptPart, ...]:
    items = list(raw or [])
    if len(items) > MAX_PARTS:
        raise llm.BadRequest(f"{what}: at most {MAX_PARTS} prompt parts")
    parts = []
    for item in items:
        text, special = getattr(item, "text", None), getattr(item, "special", None)
        if not isinstance(text, str) or not isinstance(special, bool) or len(text) > MAX_PART_CHARS:
            raise llm.BadRequest(f"{what}: each part is {{text (at most {MAX_PART_CHARS} chars), special}}")
        parts.append(llm.PromptPart(text=text, special=special))
    return tuple(parts)


def _request(request: Any) -> tuple[str, llm.CompletionRequest]:
    """(model path, engine request) of a WIT completion-request, its bounds checked."""
    model_path = getattr(request, "model")
    grammar = getattr(request, "grammar")
    max_tokens = int(getattr(request, "max-tokens"))
    if not isinstance(model_path, str) or not isinstance(grammar, str) or len(grammar) > MAX_GRAMMAR_CHARS:
        raise llm.BadRequest(f"model must be a path and grammar at most {MAX_GRAMMAR_CHARS} chars")
    if not 0 < max_tokens <= MAX_TOKENS:
        raise llm.BadRequest(f"max-tokens must be 1..{MAX_TOKENS}")
    return model_path, llm.CompletionRequest(prefix=_parts(request.prefix, "prefix"),
                                             parts=_parts(request.parts, "parts"), grammar=grammar,
                                             max_tokens=max_tokens)


def model_sha256(tx_id: str) -> str | None:
    """The Sha256 tag of a model transaction (what its verified bytes must hash to)."""
    return models.EntryTag.objects.filter(entry__id=tx_id, name="Sha256").values_list("value", flat=True).first()


def _engine(local_file: Callable[[], Path], forget: Callable[[], None], sha256: str) -> llm.LlamaEngine:
    """This worker's engine for a model's verified local file, loading it (hash checked) if needed."""
    try:
        return engine_pool().engine_for(local_file(), sha256)
    except llm.ModelMismatch:
        # The local copy may have changed on disk since its chunks were verified: verify every chunk again from
        # the store. A mismatch that survives is the transaction's own bytes: a fact.
        forget()
        return engine_pool().engine_for(local_file(), sha256)


def engine_for_model(tx_id: str, sha256: str) -> llm.LlamaEngine:
    """For work ahead of any message (``llm_ahead``): the engine over the store's verified copy of a model."""
    cache = weavedrive.chunk_cache()
    try:
        return _engine(lambda: cache.local_file(tx_id), lambda: cache.forget(tx_id), sha256)
    except (StoreError, OSError) as exc:
        raise HostUnavailable(f"cannot read model {tx_id} from this node's store: {exc}") from exc


@dataclass
class LlmBinding:
    """The LLM one message sees; records every call for the result, and the hints the compute unit may act on.

    ``ahead``: look completions up among those computed ahead (the compute unit's live evaluation); replay leaves
    it off and computes everything.
    """

    drive: WeaveDrive
    ahead: bool = False
    calls: list[dict[str, Any]] = field(default_factory=list)
    hints: list[tuple[str, llm.CompletionRequest]] = field(default_factory=list)

    def prefetch(self, request: Any) -> None:
        """A hint: a later message will ask for this completion. No answer, no fuel, no effect on the result."""
        if not self.ahead or len(self.hints) >= llm_ahead.MAX_HINTS:
            return
        try:
            model_path, req = _request(request)
            tx_id = self.drive.admitted_data(model_path)
        except (AoError, HostFault, wd.WeaveDriveError, ValueError, TypeError, AttributeError):
            return  # a hint that would be refused is no hint; the asking message meets the refusal itself
        self.hints.append((tx_id, req))

    def complete(self, request: Any) -> tuple[bool, str, int]:
        """Run a completion; return (ok, JSON text or error text, fuel to charge).

        Refusals that follow from the log and the model bytes are answers (ok False): a model not admitted, a
        Sha256 tag the verified bytes do not match, a bad request or grammar, a prompt too long for the context.
        A fault of this node (the model failing to load or decode, no memory, the store) propagates as a
        HostFault, so the message is retried rather than recorded.
        """
        try:
            model_path, req = _request(request)
            tx_id, _ = self.drive.local_file(model_path)
            sha = model_sha256(tx_id)
            if not sha:
                raise llm.ModelMismatch(f"model transaction {tx_id} has no Sha256 tag to check the weights against")

            def here() -> llm.Completion:
                engine = _engine(lambda: self.drive.local_file(model_path)[1],
                                 lambda: self.drive.cache.forget(tx_id), sha)
                return engine.complete(req)

            if self.ahead and llm_ahead.enabled():
                key = llm_ahead.key_for(sha, req, engine_pool())
                done = llm_ahead.obtain(key, here, wait_s=AHEAD_WAIT_S, engine_for=engine_for_model)
            else:
                done = here()
        except MemoryError as exc:
            raise HostUnavailable(f"out of host memory during a completion: {exc}") from exc
        except HostFault:
            raise
        except (AoError, wd.WeaveDriveError) as exc:
            return False, str(exc), 0
        prefix, parts, grammar, max_tokens = req.prefix, req.parts, req.grammar, req.max_tokens
        prefix_text = "".join(p.text for p in prefix)
        record = {
            "extension": "llm",
            "model": {"id": tx_id, "sha256": done.model_sha256},
            "request": {
                "prefix": {"sha256": hashlib.sha256(prefix_text.encode()).hexdigest(), "chars": len(prefix_text),
                           "parts": len(prefix)},
                "parts": [{"text": p.text, "special": p.special} for p in parts],
                "grammar_sha256": hashlib.sha256(grammar.encode()).hexdigest(),
                "max_tokens": max_tokens,
            },
            "params": done.params,
            "output": done.text,
            "tokens": {"prefix": done.prefix_tokens, "prompt": done.prompt_tokens,
                       "generated": done.generated_tokens},
            "stop": done.stop_reason,
            "logits_sha256": done.logits_sha256,
            "fuel": done.fuel,
        }
        self.calls.append(record)
        answer = {"text": done.text, "tokens": record["tokens"], "model": record["model"], "stop": done.stop_reason}
        return True, json.dumps(answer, sort_keys=True, separators=(",", ":")), done.fuel
