"""The LLM extension as the compute unit offers it to processes (WIT import llm.complete).

The model path is a WeaveDrive ``/data/<txid>``: it must be admitted for the process like any
read, every chunk of it is verified, and the verified local file is what llama.cpp loads, once
per worker, after its sha256 is checked against the transaction's ``Sha256`` tag. Each call's
request, model id and sha256, parameters, raw output and token counts go into the message's
result (``Calls``), so the result, and its replay, carry the whole decision.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from ao import models
from ao.errors import AoError, HostFault, HostUnavailable
from ao.extensions import llm
from ao.extensions.weavedrive import WeaveDrive
from ao.units import weavedrive as wd

EXTENSION = "Llama"
MAX_PARTS = 64
MAX_PART_CHARS = 64 * 1024
MAX_GRAMMAR_CHARS = 16 * 1024
MAX_TOKENS = 1024

_pool_lock = threading.Lock()
_pool: llm.EnginePool | None = None


def engine_pool() -> llm.EnginePool:
    """This worker process's loaded models (each loaded once, n_threads=1)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = llm.EnginePool(n_threads=settings.AO["LLM_THREADS"])
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


@dataclass
class LlmBinding:
    """The LLM one message sees; records every call for the result."""

    drive: WeaveDrive
    calls: list[dict[str, Any]] = field(default_factory=list)

    def complete(self, request: Any) -> tuple[bool, str, int]:
        """Run a completion; return (ok, JSON text or error text, fuel to charge).

        Refusals that follow from the log and the model bytes are answers (ok False): a model not admitted, a
        Sha256 tag the verified bytes do not match, a bad request or grammar, a prompt too long for the context.
        A fault of this node (the model failing to load or decode, no memory, the store) propagates as a
        HostFault, so the message is retried rather than recorded.
        """
        try:
            model_path = getattr(request, "model")
            grammar = getattr(request, "grammar")
            max_tokens = int(getattr(request, "max-tokens"))
            if not isinstance(model_path, str) or not isinstance(grammar, str) or len(grammar) > MAX_GRAMMAR_CHARS:
                raise llm.BadRequest(f"model must be a path and grammar at most {MAX_GRAMMAR_CHARS} chars")
            if not 0 < max_tokens <= MAX_TOKENS:
                raise llm.BadRequest(f"max-tokens must be 1..{MAX_TOKENS}")
            prefix, parts = _parts(request.prefix, "prefix"), _parts(request.parts, "parts")
            tx_id, local = self.drive.local_file(model_path)
            sha = models.EntryTag.objects.filter(entry__id=tx_id, name="Sha256").values_list("value", flat=True).first()
            if not sha:
                raise llm.ModelMismatch(f"model transaction {tx_id} has no Sha256 tag to check the weights against")
            try:
                engine = engine_pool().engine_for(local, sha)
            except llm.ModelMismatch:
                # The local copy may have changed on disk since its chunks were verified: verify every chunk
                # again from the store. A mismatch that survives is the transaction's own bytes: a fact.
                self.drive.cache.forget(tx_id)
                tx_id, local = self.drive.local_file(model_path)
                engine = engine_pool().engine_for(local, sha)
            done = engine.complete(llm.CompletionRequest(prefix=prefix, parts=parts, grammar=grammar,
                                                         max_tokens=max_tokens))
        except MemoryError as exc:
            raise HostUnavailable(f"out of host memory during a completion: {exc}") from exc
        except HostFault:
            raise
        except (AoError, wd.WeaveDriveError) as exc:
            return False, str(exc), 0
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
