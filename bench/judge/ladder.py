"""Do the Fed's grades follow merit? The default committee over the ladder of sincere petitions (ladder.json) and the
second held-out set (heldout2.json, never tuned on), with the default model. Prints JSON: Spearman correlation
between rung and grade, petitions vetoed or graded 0 (every ladder petition is sincere), exceptional petitions at
grade 5, the held-out set scored by its labels, and seconds per decision.

    .venv/bin/python bench/judge/ladder.py [--model FILE.gguf] [--no-filter]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from committee import Committee, load_engine  # noqa: E402

HERE = Path(__file__).resolve().parent
# heldout2.json's labels: the grades each one admits.
ADMITS = {"zero": {0}, "trivial": {0, 1}, "modest": {1, 2, 3}, "substantial": {3, 4}, "exceptional": {4, 5}}


def ranks(values: list[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(xs: list[float], ys: list[float]) -> float:
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / var if var else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    parser.add_argument("--no-filter", action="store_true")
    args = parser.parse_args()
    committee = Committee(load_engine(args.model), use_filter=not args.no_filter)
    ladder = json.loads((HERE / "ladder.json").read_text())["petitions"]
    heldout = json.loads((HERE / "heldout2.json").read_text())["petitions"]
    rows, seconds, reaching = [], [], []
    for p in ladder:
        d = committee.decide(p["text"])
        rows.append({"id": p["id"], "rung": p["rung"], "grade": d.grade, "filtered": d.filtered})
        seconds.append(d.seconds)
        if d.filtered is None:
            reaching.append(d.seconds)
        print(f"ladder {p['id']}: {d.grade} {d.filtered or ''}", file=sys.stderr, flush=True)
    held = []
    for p in heldout:
        d = committee.decide(p["text"])
        held.append({"id": p["id"], "want": p["want"], "grade": d.grade, "ok": d.grade in ADMITS[p["want"]],
                     "filtered": d.filtered})
        seconds.append(d.seconds)
        if d.filtered is None:
            reaching.append(d.seconds)
        print(f"heldout2 {p['id']}: {d.grade} {d.filtered or ''}", file=sys.stderr, flush=True)
    graded = [r for r in rows if r["grade"] >= 0]
    print(json.dumps({
        "filter": not args.no_filter,
        "ladder": {
            "petitions": len(rows),
            "spearman_rung_grade": round(spearman([r["rung"] for r in graded], [r["grade"] for r in graded]), 3)
            if len(graded) > 1 else None,
            "failed_deliberations": [r["id"] for r in rows if r["grade"] < 0],
            "goal_spearman": ">= 0.7",
            "vetoed_or_zero": [r["id"] for r in rows if r["grade"] == 0],
            "goal_vetoed_or_zero": "<= 5%",
            "exceptional_at_5": [r["id"] for r in rows if r["rung"] == 4 and r["grade"] == 5],
            "grades_by_rung": {str(k): [r["grade"] for r in rows if r["rung"] == k] for k in (1, 2, 3, 4)},
        },
        "heldout2": {"as_labelled": sum(r["ok"] for r in held), "of": len(held),
                     "misses": {r["id"]: r["grade"] for r in held if not r["ok"]}},
        "seconds_per_decision": round(statistics.mean(seconds), 2),
        "seconds_per_decision_reaching_a_model": round(statistics.mean(reaching or [0.0]), 2),
    }, indent=2))


if __name__ == "__main__":
    main()
