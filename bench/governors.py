"""Governors in parallel: decisions per minute and decision latency with 1 and 2 workers, default model (JSON).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/llamafed .venv/bin/python bench/governors.py [--petitions 6]

Set-up, in a fresh database (llamafed_bench) and data dir: the ledgers, the default model uploaded and the Fed on
it with its default committee (a sentinel and two graders); funded petitioners, each petition (a sincere one
from bench/judge/petitions.json, so no veto cuts a deliberation short, numbered so that no two are the same text)
signed in advance.

For 1, then 2, Celery workers (each prefork with concurrency 1 and AO_LLM_THREADS=1, as scripts/run starts one;
with 2 they share this machine's 2 cores):

1. cold: the workers start; one petition is posted; the time to its decision is the first decision of a cold
   worker (the model file is already verified on this node's disk: it is the worker that is new);
2. backlog: `--petitions` petitions are posted at once; decisions per minute over the span from posting to the
   last decision, and each petition's latency from its posting to its decision (mean and max);
3. alone: one more petition with the workers idle: one decision's latency when nothing else waits.

Then every decision is replayed (`ao.verify`, which computes every governor again and never reads what was
computed ahead) and must match the record. The baseline is the same run with 1 worker: the ratios are
`two_vs_one_per_minute` (goal ≥ 1.8) and `two_vs_one_mean_latency` (goal ≤ 0.6). With `--raw`, this machine's own
ceiling, measured last in the same run: the same committee through raw llama-cpp-python (its prefix cache on, one
thread) in one process, then in two processes at once (`raw_llama_cpp_scaling`); and token generation alone, the
bulk of a warm governor's work, in one process and then two (`raw_generation_scaling`: two processes read the
same weights for every token, so on this machine's memory they scale less than prompt work does).

Prefix states are kept on disk by the first workers (``LlamaEngine.state_dir``): the 2-worker phase's workers are
new processes on a machine that has them, the 1-worker phase's the first ever.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import _setup  # noqa: E402
import submit_load  # noqa: E402 - the Fed world and worker processes of the submission bench

BROKER = submit_load.BROKER
POLL_S = 0.2
RAW_DECISIONS = 3  # per process, in the raw scaling baseline


def main() -> None:
    if sys.argv[1:2] == ["--raw-child"]:
        _raw_child(sys.argv[2], int(sys.argv[3]))
        return
    if sys.argv[1:2] == ["--generate-child"]:
        _generate_child(sys.argv[2])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--petitions", type=int, default=6, help="petitions in each backlog")
    parser.add_argument("--workers", default="1,2", help="the worker counts to measure, in order")
    parser.add_argument("--no-replay", action="store_true", help="skip the replay")
    parser.add_argument("--raw", action="store_true", help="also the raw llama-cpp-python 1-vs-2-process ceiling")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    os.environ["FED_MAX_WAIT_S"] = str(10**9)
    _setup.django_ready(broker=BROKER)
    submit_load._flush_broker()
    per_phase = args.petitions + 2
    world = submit_load._build(petitioners=len(counts) * per_phase, baseline=0, distinct=True)
    petitions = world["petitions"]
    report: dict[str, Any] = {"petitions": args.petitions, "governors": _governors(world["fed"])}
    for workers in counts:
        mine, petitions = petitions[:per_phase], petitions[per_phase:]
        report[f"workers_{workers}"] = _phase(world["fed"], workers, mine)
    if {1, 2} <= set(counts):
        one, two = report["workers_1"], report["workers_2"]
        report["two_vs_one_per_minute"] = round(two["per_minute"] / one["per_minute"], 2)
        report["two_vs_one_mean_latency"] = round(two["mean_latency_s"] / one["mean_latency_s"], 2)
        report["two_vs_one_alone_latency"] = round(two["alone_latency_s"] / one["alone_latency_s"], 2)
    if not args.no_replay:
        report["replay"] = _replay(world["fed"])
    if args.raw:
        report["raw_llama_cpp_scaling"] = _raw_scaling(RAW_DECISIONS)
        report["raw_generation_scaling"] = _generation_scaling()
    print(json.dumps(report, indent=2))


def _raw_child(path: str, count: int) -> None:
    """In a child process: the default committee's completions through raw llama-cpp-python at its best (the
    grammar, llama-cpp-python's own prefix cache on, one thread), after one warm-up petition; prints the seconds."""
    decide = submit_load.raw_committee(Path(path))
    texts = [p["text"] for p in submit_load._petitions() if p["kind"] in ("sincere", "useful-work")]
    decide(texts[0])  # fills the prefix cache
    started = time.perf_counter()
    for text in texts[1:count + 1]:
        decide(text)
    print(json.dumps({"seconds": time.perf_counter() - started}))


def _raw_scaling(count: int) -> dict[str, Any]:
    """This machine's own ceiling: raw llama-cpp-python deciding in one process, then in two at once."""
    path = str(_setup.default_model_file())

    def run(processes: int) -> list[float]:
        return [c["seconds"] for c in _children("--raw-child", path, str(count), processes=processes)]

    [alone] = run(1)
    together = run(2)
    per_minute_1, per_minute_2 = count / alone * 60, 2 * count / max(together) * 60
    return {"decisions_each": count, "one_process_per_minute": round(per_minute_1, 2),
            "two_processes_per_minute": round(per_minute_2, 2), "scaling": round(per_minute_2 / per_minute_1, 2)}


GENERATE_TOKENS = 96  # per completion, three completions per process


def _generate_child(path: str) -> None:
    """In a child process: greedy token generation alone (a short prompt, one thread); prints tokens per second."""
    from llm import raw_llama  # bench/llm.py: the engine's load settings

    llama = raw_llama(Path(path))
    prompt = "Write a long story about a llama who becomes the governor of a central bank."
    llama.create_completion(prompt, max_tokens=8, temperature=0.0)
    started, tokens = time.perf_counter(), 0
    for _ in range(3):
        tokens += llama.create_completion(prompt, max_tokens=GENERATE_TOKENS, temperature=0.0)["usage"][
            "completion_tokens"]
    print(json.dumps({"tokens_per_s": tokens / (time.perf_counter() - started)}))


def _children(flag: str, *args: str, processes: int) -> list[dict[str, Any]]:
    """Run ``processes`` copies of this bench's child ``flag`` at once; each one's JSON line."""
    children = [subprocess.Popen([sys.executable, __file__, flag, *args], stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(processes)]
    return [json.loads(c.communicate()[0].strip().splitlines()[-1]) for c in children]


def _generation_scaling() -> dict[str, Any]:
    """The ceiling for work that is mostly token generation, as a warm governor's is (its prompt is restored from
    a saved prefix state): tokens per second of one process alone, then of two at once, with the same weights."""
    path = str(_setup.default_model_file())
    alone = _children("--generate-child", path, processes=1)[0]["tokens_per_s"]
    together = sum(c["tokens_per_s"] for c in _children("--generate-child", path, processes=2))
    return {"one_process_tokens_per_s": round(alone, 2), "two_processes_tokens_per_s": round(together, 2),
            "scaling": round(together / alone, 2)}


def _governors(fed: str) -> int:
    from ao import models

    return len(json.loads(models.StateEntry.objects.get(process_id=fed, key="config").value)["Governors"])


def _decided(fed: str) -> set[str]:
    """Petition ids the Fed has decided (or failed: the bench then stops with an error)."""
    from ao import models

    done = set()
    for key, value in models.StateEntry.objects.filter(process_id=fed, key__startswith="petition/").values_list(
            "key", "value"):
        status = json.loads(value)["status"]
        if status == "failed":
            raise RuntimeError(f"{key} failed: {json.loads(value).get('failure')}")
        if status == "decided":
            done.add(key.removeprefix("petition/"))
    return done


def _post(raw: bytes) -> str:
    from ao import services
    from ao.permaweb import dataitem

    services.su_schedule(raw=raw)
    return dataitem.parse(raw).id


def _await(fed: str, posted: dict[str, float], timeout_s: float) -> dict[str, float]:
    """Wait until every posted petition is decided; when each was first seen decided."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < len(posted):
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(seen)} of {len(posted)} petitions decided in {timeout_s:.0f} s")
        time.sleep(POLL_S)
        now = time.perf_counter()
        for pid in _decided(fed) & posted.keys():
            seen.setdefault(pid, now)
    return seen


def _phase(fed: str, workers: int, items: list[bytes]) -> dict[str, Any]:
    started = time.perf_counter()
    procs = [_worker(f"gov{workers}-{i}") for i in range(workers)]
    try:
        cold = {_post(items[0]): started}
        cold_s = _await(fed, cold, 900)
        first_decision_s = next(iter(cold_s.values())) - started
        print(f"{workers} worker(s): first decision {first_decision_s:.1f} s after the workers started",
              file=sys.stderr, flush=True)
        backlog = items[1:-1]
        posted = {}
        begun = time.perf_counter()
        for raw in backlog:
            posted[_post(raw)] = time.perf_counter()
        decided = _await(fed, posted, 300 + 120 * len(backlog))
        span = max(decided.values()) - begun
        latencies = [decided[pid] - at for pid, at in posted.items()]
        print(f"{workers} worker(s): {len(backlog)} decisions in {span:.1f} s", file=sys.stderr, flush=True)
        alone_at = time.perf_counter()
        alone = _await(fed, {_post(items[-1]): alone_at}, 600)
        alone_s = next(iter(alone.values())) - alone_at
    finally:
        for proc in procs:
            submit_load._stop(proc)
    return {"workers": workers, "cold_first_decision_s": round(first_decision_s, 1),
            "backlog_span_s": round(span, 1), "per_minute": round(len(backlog) / span * 60, 2),
            "mean_latency_s": round(statistics.mean(latencies), 1), "max_latency_s": round(max(latencies), 1),
            "alone_latency_s": round(alone_s, 1)}


def _worker(name: str) -> subprocess.Popen[bytes]:
    os.environ["AO_LLM_THREADS"] = "1"
    return submit_load._start(["celery", "-A", "llamafed", "worker", "--concurrency=1", "--without-gossip",
                               "--without-mingle", "--loglevel=INFO", "-n", f"{name}@%h"], name)


def _replay(fed: str) -> dict[str, Any]:
    from ao import verify

    started = time.perf_counter()
    report = verify.verify_process(process_id=fed)
    return {"ok": report.ok, "checked": report.checked, "seconds": round(time.perf_counter() - started, 1),
            "divergence": None if report.divergence is None else str(report.divergence)}


if __name__ == "__main__":
    main()
