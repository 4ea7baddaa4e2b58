"""Judge evaluation with the default model: the Fed's default committee beside its baselines, over three labelled sets.

    .venv/bin/python bench/judge/run.py [--model FILE.gguf] [--seed 7] [--limit N] [--votes FILE.json]

Sets (each file says what its labels admit): ``petitions.json`` (dev: the prompts were written against it),
``heldout.json`` (held-out 1: seen once before the first default committee was chosen) and ``heldout2.json``
(held-out 2: written before any change of the judging issue, never used to tune). Each is scored separately.

Judges, all in the same run on the same model:

- ``always-0``: grades everything 0 (what a judge that refuses everything scores on these sets);
- ``original King``: the original Llama Fed scheme, one governor with a harsh king persona, sampling at temperature
  1.0 (seeded, so runs compare), the first ``{...}`` of the reply, grade 1 when that does not parse;
- single governors, each alone with the Fed's prompts and grammar (no filter, no sentinel);
- ``sentinel + min(...)``: the model committee without the deterministic filter;
- ``Fed default``: the Fed's configuration (the steering filter, then the sentinel, then the graders, the minimum).

A judge's row per set: petitions graded as their label admits, zero-labelled petitions graded above 0, sincere
ones graded 0, the misses; and mean seconds per decision (as the Fed spends them: a veto ends the deliberation).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from committee import Committee, load_engine  # noqa: E402
from ladder import ADMITS  # noqa: E402  (the labels' admitted grades, as every labelled set defines them)

from _setup import default_model_file  # noqa: E402

HERE = Path(__file__).resolve().parent
SETS = ("petitions", "heldout", "heldout2")
SINGLES = [("grade-first", "A"), ("reason-first", "B"), ("grade-first", "B"), ("reason-first", "A")]

# The original scheme, restated: a persona, a 0-5 grade for the plea, a JSON reply; ChatML for this model.
KING_SYSTEM = ("You are the Llama King of Llama Land, harsh and eccentric. A subject pleads in one paragraph to be "
               "granted Llama Coin and may give no other evidence. Grade the quality of the plea from 0 to 5; a higher "
               "grade gives the subject more coins. Judge only by the plea.\nAlways reply in this JSON format:\n"
               '{\n  "response": "<brief response>",\n  "grade": 0\n}')
KING_MAX_TOKENS = 80
KING_TEMPERATURE = 1.0
_FIRST_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


class King:
    """The original Llama Fed governor on the same weights, through llama-cpp-python's own sampler."""

    def __init__(self, model: Path, seed: int) -> None:
        from llama_cpp import Llama

        self.llama = Llama(str(model), n_ctx=1024, n_threads=1, seed=seed, verbose=False)
        self.seed = seed

    def grade(self, index: int, text: str) -> tuple[int, str, float]:
        prompt = (f"<|im_start|>system\n{KING_SYSTEM}<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n"
                  "<|im_start|>assistant\n")
        start = time.perf_counter()
        out = self.llama.create_completion(prompt, max_tokens=KING_MAX_TOKENS, temperature=KING_TEMPERATURE,
                                           seed=self.seed + index)
        seconds = time.perf_counter() - start
        raw = out["choices"][0]["text"]
        return king_grade(raw), raw, seconds


def king_grade(raw: str) -> int:
    """The first {...} of the reply read as JSON; grade 1 (the original's consolation) when that fails."""
    match = _FIRST_OBJECT.search(raw)
    try:
        value = json.loads(match.group(0)) if match else None
    except ValueError:
        value = None
    if isinstance(value, dict) and "response" in value:
        grade = value.get("grade")
        if isinstance(grade, str) and grade.strip().isdigit():
            grade = int(grade)
        if type(grade) is int and 0 <= grade <= 5:
            return grade
    return 1


def load_sets(limit: int) -> list[dict]:
    rows = []
    for name in SETS:
        doc = json.loads((HERE / f"{name}.json").read_text())
        chosen = doc["petitions"][:limit] if limit else doc["petitions"]
        rows += [{**p, "set": name} for p in chosen]
    return rows


def score(petitions: list[dict], grades: dict[str, int], seconds: dict[str, float]) -> dict:
    row: dict = {}
    for name in SETS:
        chosen = [p for p in petitions if p["set"] == name]
        if not chosen:
            continue
        ok = sum(grades[p["id"]] in ADMITS[p["want"]] for p in chosen)
        row[name] = {
            "as_labelled": ok, "of": len(chosen), "percent": round(100 * ok / len(chosen), 1),
            "zero_labelled_above_0": sum(grades[p["id"]] > 0 for p in chosen if p["want"] == "zero"),
            "sincere_graded_0": sum(grades[p["id"]] == 0 for p in chosen if p["want"] != "zero"),
            "misses": {p["id"]: grades[p["id"]] for p in chosen if grades[p["id"]] not in ADMITS[p["want"]]},
        }
    row["seconds_per_decision"] = round(statistics.mean(seconds.values()), 2) if seconds else 0.0
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--limit", type=int, default=0, help="the first N petitions of each set")
    parser.add_argument("--votes", type=Path, help="write every judge's grades here as JSON")
    args = parser.parse_args()
    model = args.model or default_model_file()
    petitions = load_sets(args.limit)
    started = time.perf_counter()
    judges: dict[str, tuple[dict[str, int], dict[str, float]]] = {}
    judges["always-0"] = ({p["id"]: 0 for p in petitions}, {p["id"]: 0.0 for p in petitions})

    king = King(model, args.seed)
    grades, seconds = {}, {}
    for index, p in enumerate(petitions):
        grades[p["id"]], raw, seconds[p["id"]] = king.grade(index, p["text"])
        print(f"King {p['id']}: {grades[p['id']]} {raw[:70]!r}", file=sys.stderr, flush=True)
    judges["original King (temperature 1.0, first {...}, 1 on failure)"] = (grades, seconds)
    del king

    committee = Committee(load_engine(model))
    for order, examples in SINGLES:
        grades, seconds = {}, {}
        for p in petitions:
            vote = committee.vote(order, examples, p["text"])
            grades[p["id"]] = vote["grade"] if vote["valid"] else -1
            seconds[p["id"]] = vote["seconds"]
            print(f"{order}/{examples} {p['id']}: {grades[p['id']]}", file=sys.stderr, flush=True)
        judges[f"single governor {order}/{examples}"] = (grades, seconds)
    default = " + ".join(f"{g['name']} {g['order']}/{g['examples']}" for g in committee.governors)
    for name, use_filter in ((f"model committee without the filter ({default}, min)", False),
                             (f"Fed default (steering filter, {default}, min)", True)):
        committee.use_filter = use_filter
        grades, seconds = {}, {}
        for p in petitions:
            decision = committee.decide(p["text"])
            grades[p["id"]], seconds[p["id"]] = decision.grade, decision.seconds
            print(f"{name[:20]} {p['id']}: {decision.grade} {decision.filtered or ''}", file=sys.stderr, flush=True)
        judges[name] = (grades, seconds)

    report = {name: score(petitions, g, s) for name, (g, s) in judges.items()}
    fed = report[next(n for n in report if n.startswith("Fed default"))]
    report["held-out vs dev (Fed default, points)"] = {
        name: round(fed[name]["percent"] - fed["petitions"]["percent"], 1) for name in ("heldout", "heldout2")
        if name in fed} | {"goal": ">= -10"}
    report["wall_s"] = round(time.perf_counter() - started, 1)
    if args.votes:
        args.votes.write_text(json.dumps({n: g for n, (g, _) in judges.items()}, indent=1))
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
