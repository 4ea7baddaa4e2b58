"""The Fed's default committee outside the Fed, for benchmarks: the same steering filter, prompts, grammars,
canonical llama.cpp feeding and aggregation the process uses, in the same order (the filter, then the sentinel,
whose veto ends the deliberation, then the graders; the minimum of their grades)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for entry in (str(ROOT), str(ROOT / "bench"), str(ROOT / "policy" / "process"), str(ROOT / "ao" / "sdk")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import fedrules  # noqa: E402  (the Fed's own modules, as the process imports them)
import prompts  # noqa: E402
import steering  # noqa: E402

from _setup import default_model_file  # noqa: E402
from ao.extensions import llm  # noqa: E402

MAX_TOKENS = int(fedrules.DEFAULTS["Max-Tokens"])


@dataclass
class Decision:
    grade: int
    votes: list[dict]
    seconds: float
    filtered: str | None = None


@dataclass
class Committee:
    """Decides petitions as the Fed's default configuration does; completions are cached by (governor, text)."""

    engine: llm.LlamaEngine
    governors: list[dict] = field(default_factory=lambda: list(fedrules.DEFAULT_GOVERNORS))
    use_filter: bool = True
    cache: dict[tuple[str, str, str], dict] = field(default_factory=dict)

    def vote(self, order: str, examples: str, text: str) -> dict:
        key = (order, examples, text)
        if key not in self.cache:
            prefix = tuple(llm.PromptPart(t, s) for t, s in prompts.prefix_parts(order, examples))
            parts = tuple(llm.PromptPart(t, s) for t, s in prompts.petition_parts(text, order))
            start = time.perf_counter()
            done = self.engine.complete(llm.CompletionRequest(prefix=prefix, parts=parts,
                                                              grammar=prompts.GRAMMARS[order], max_tokens=MAX_TOKENS))
            self.cache[key] = {**prompts.parse_answer(done.text, order), "seconds": time.perf_counter() - start,
                               "raw": done.text, "order": order}
        return self.cache[key]

    def decide(self, text: str) -> Decision:
        if self.use_filter:
            rule = steering.detect(text)
            if rule is not None:
                return Decision(0, [], 0.0, filtered=rule)
        votes, seconds = [], 0.0
        for governor in self.governors:
            vote = self.vote(governor["order"], governor["examples"], text)
            votes.append(vote)
            seconds += vote["seconds"]
            if not vote["valid"]:
                return Decision(-1, votes, seconds)  # the Fed fails and refunds such a petition
            if vote["veto"]:
                return Decision(0, votes, seconds)
        return Decision(fedrules.committee_grade(votes, "min"), votes, seconds)


def load_engine(model: Path | None = None) -> llm.LlamaEngine:
    path = model or default_model_file()
    return llm.LlamaEngine(path, expected_sha256=llm.file_sha256(path), n_threads=1)
