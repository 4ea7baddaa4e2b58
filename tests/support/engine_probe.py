"""One greedy completion through the compute unit's llama.cpp engine, printed as JSON: the tokens, the hash of every
step's logits, the engine fingerprint. Run the same probe on two CPUs (natively and under ``qemu-x86_64 -cpu
Haswell``) and compare: the canonical engine gives the same bytes everywhere.

    python tests/support/engine_probe.py MODEL.gguf [REQUEST.json]

REQUEST.json: {"prefix": [[text, special], ...], "parts": [[text, special], ...], "grammar": str, "max_tokens": int};
without it, a fixed plain request.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ao.extensions import llm  # noqa: E402

PROMPT = "I planted forty trees in my village and I teach the children to care for them."


def main() -> None:
    path = Path(sys.argv[1])
    if len(sys.argv) > 2:
        asked = json.loads(Path(sys.argv[2]).read_text())
        request = llm.CompletionRequest(
            prefix=tuple(llm.PromptPart(t, bool(s)) for t, s in asked["prefix"]),
            parts=tuple(llm.PromptPart(t, bool(s)) for t, s in asked["parts"]),
            grammar=asked["grammar"], max_tokens=int(asked["max_tokens"]))
    else:
        request = llm.CompletionRequest(prefix=(llm.PromptPart("You grade petitions. ", False),),
                                        parts=(llm.PromptPart(PROMPT, False),), grammar="", max_tokens=16)
    engine = llm.LlamaEngine(path, expected_sha256=llm.file_sha256(path), n_ctx=4096, n_threads=1)
    done = engine.complete(request)
    print(json.dumps({"text": done.text, "tokens": list(done.tokens), "logits_sha256": done.logits_sha256,
                      "engine": llm.engine_fingerprint(), "canonical": llm.canonical_engine()}))
    engine.close()


if __name__ == "__main__":
    main()
