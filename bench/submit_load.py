"""Petition submission under load, and petitions decided per minute, on PostgreSQL (JSON on stdout).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/llamafed .venv/bin/python bench/submit_load.py \
        [--rate 50] [--seconds 60] [--decide 12] [--connections 10]

Set-up, in a fresh database (llamafed_bench) and data dir: the ledgers, the default model uploaded and the Fed on
it; petitioners (Ed25519 keys) with wAR minted and evaluated; every request body signed in advance.

1. Decisions per minute per worker: `--decide` signed petitions are posted at once, then one Celery worker
   (prefork, concurrency 1, as scripts/run starts it) with the default model works until all are decided.
   Baseline, same run: the same governor prompts through raw llama-cpp-python at its best honest use
   (`Llama.create_completion` with the grammar, llama-cpp-python's own prefix cache `LlamaRAMCache` on, so each
   governor's shared prompt is restored instead of recomputed; one petition first to fill it), as decisions per
   minute.
2. Submission latency at `--rate` requests/s: gunicorn (4 sync workers, as scripts/run on 2 cores), wrk
   (Debian's package, `bench/wrk_items.lua`) pacing `--connections` connections (the pause between a response and
   the next request set from a first run's latency, then corrected by the rate a second run held); every item is
   posted once.
   Baseline, same run and rate: the messenger's own POST /ao/mu/ of a signed wAR Transfer of the same size (what
   the petition endpoint forwards after its checks). Measured with no worker running (the web tier alone), then
   again while a worker deliberates on the same two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import _setup  # noqa: E402

BROKER = "redis://127.0.0.1:6379/14"
CALIBRATE_S = 8
CALIBRATIONS = 2  # pacing runs before the measured one: the first sets the pause from the latency, the second
# corrects it by the rate it actually held (a closed loop holds less than it aims at when latency varies)
GUNICORN_WORKERS = 4  # scripts/run's default on 2 cores: two sync workers per core
STARTUP_TIMEOUT_S = 60
PETITION_FILE = ROOT / "bench" / "judge" / "petitions.json"
RAW_PETITIONS = 3  # measured, after one that fills llama-cpp-python's prefix cache


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second to hold")
    parser.add_argument("--seconds", type=int, default=60, help="length of each measured load run")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--decide", type=int, default=12, help="petitions for the decisions-per-minute phase (0: skip)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workers", type=int, default=GUNICORN_WORKERS, help="gunicorn sync workers")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("set DATABASE_URL=postgres://... (this benchmark measures gunicorn on PostgreSQL)")
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")
    # One load client from one address: the per-client limits would stop it (bench/load.py measures the limits).
    for name in ("LIMIT_PETITIONS_PER_CLIENT", "LIMIT_INTAKE_PER_IP", "LIMIT_INTAKE_PER_SIGNER"):
        os.environ[name] = "100000000/hour"
    # Thousands of petitions queue for the Fed here: its queue bound (FED_MAX_WAIT_S) would refuse them all (503),
    # which measures the refusal, not the submission.
    os.environ["FED_MAX_WAIT_S"] = str(10**9)
    _setup.django_ready(broker=BROKER)
    _flush_broker()

    per_run = int(args.rate * (args.seconds + CALIBRATIONS * CALIBRATE_S) * 1.3) + args.connections
    world = _build(petitioners=args.decide + 2 * per_run, baseline=2 * per_run)
    base = f"http://127.0.0.1:{args.port}"
    report: dict[str, Any] = {"rate": args.rate, "seconds": args.seconds, "connections": args.connections,
                              "gunicorn_workers": args.workers}
    web = _start(["gunicorn", "llamafed.wsgi", "--bind", f"127.0.0.1:{args.port}", "--workers",
                  str(args.workers), "--log-level", "warning"], "gunicorn")
    try:
        _wait_for_port(args.port)
        petitions = world["petitions"]
        if args.decide:
            report["decisions"] = _decisions(base, petitions[:args.decide], world)
        petitions = petitions[args.decide:]
        loads: dict[str, Any] = {}
        for phase in ("web tier alone", "with a worker deliberating"):
            worker = _start_worker() if phase != "web tier alone" else None
            try:
                mu = _paced(base + "/ao/mu/", world["baseline"][:per_run], args)
                petition = _paced(base + "/api/petitions/signed/", petitions[:per_run], args)
            finally:
                if worker is not None:
                    _stop(worker)
            world["baseline"], petitions = world["baseline"][per_run:], petitions[per_run:]
            loads[phase] = {"petition": petition, "baseline_mu": mu,
                            "p50_ratio": round(petition["p50_us"] / mu["p50_us"], 2),
                            "p99_ratio": round(petition["p99_us"] / mu["p99_us"], 2)}
        report["submission"] = loads
    finally:
        _stop(web)
    print(json.dumps(report, indent=2))


# --- set-up ---------------------------------------------------------------------------------------------------


def _flush_broker() -> None:
    import redis

    redis.Redis.from_url(BROKER).flushdb()


def _petitions() -> list[dict[str, str]]:
    """The judge bench's labelled petitions (bench/judge/petitions.json: {"petitions": [{id, kind, want, text}]})."""
    return json.loads(PETITION_FILE.read_text())["petitions"]


def _message(signer: Any, target: str, action: str, tags: list[tuple[str, str]]) -> bytes:
    from ao.permaweb import dataitem
    from ao.units import su

    base = [("Data-Protocol", su.DATA_PROTOCOL), ("Variant", su.VARIANT), ("Type", "Message"), ("Action", action)]
    return dataitem.create_data_item(signer, b"", tags=[*base, *tags], target=target,
                                     anchor=random.randbytes(32)).serialize()


def _build(*, petitioners: int, baseline: int, distinct: bool = False) -> dict[str, Any]:
    """Ledgers, the default model and the Fed; funded petitioners; every request body, signed.

    ``distinct``: no two petitions have the same text (a number is appended), so no governor's completion of
    one is the completion of another.
    """
    from ao import models, services
    from ao.compute import batch
    from ao.effects import keys
    from ao.node import node_settle
    from ao.permaweb.wallet import Ed25519Key
    from policy import services as fed_services

    started = time.perf_counter()
    fed = fed_services.fed_bootstrap()  # uploads the default model (1.1 GB, verified) the first time
    node_settle()
    config = json.loads(models.StateEntry.objects.get(process_id=fed.process_id, key="config").value)
    war, offering = config["War-Token"], config["Offering"]
    users = [Ed25519Key.generate() for _ in range(petitioners)]
    operator = keys.operator_wallet()
    mints = [_message(operator, war, "Mint", [("Quantity", str(offering * 2)), ("Recipient", u.address)])
             for u in users]
    for start in range(0, len(mints), 500):
        services.su_schedule_batch(raws=mints[start:start + 500])
    batch.evaluate_pending(process_id=war)
    texts = [p["text"] for p in _petitions() if p["kind"] in ("sincere", "useful-work")]

    def text(i: int) -> str:
        return f"{texts[i % len(texts)]} ({i + 1})" if distinct else texts[i % len(texts)]

    petitions = [_message(u, war, "Transfer", [("Recipient", fed.process_id), ("Quantity", str(offering)),
                                              ("X-Petition", text(i)), ("X-Sender-Name", f"bench{i}")])
                 for i, u in enumerate(users)]
    senders = [Ed25519Key.generate() for _ in range(baseline)]
    plain = [_message(s, war, "Transfer", [("Recipient", users[i % len(users)].address), ("Quantity", str(offering)),
                                          ("X-Note", texts[i % len(texts)]), ("X-Sender-Name", f"bench{i}")])
             for i, s in enumerate(senders)]
    print(f"set-up: {petitioners} funded petitioners, {len(petitions) + len(plain)} items signed in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return {"fed": fed.process_id, "war": war, "model_tx": fed.model_tx, "petitions": petitions, "baseline": plain}


# --- processes ------------------------------------------------------------------------------------------------


def _start(command: list[str], name: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LLAMAFED_BENCH_CHILD": "1", "CELERY_TASK_ALWAYS_EAGER": "0", "CELERY_BROKER_URL": BROKER}
    log = open(Path(os.environ["LLAMAFED_DATA_DIR"]) / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen([str(ROOT / ".venv" / "bin" / command[0]), *command[1:]], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _start_worker() -> subprocess.Popen[bytes]:
    return _start(["celery", "-A", "llamafed", "worker", "--concurrency=1", "--without-gossip", "--without-mingle",
                   "--loglevel=WARNING"], "worker")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port}")


# --- 1. decisions per minute ----------------------------------------------------------------------------------


def _progress(fed: str) -> tuple[int, int]:
    """(votes cast, petitions decided) in the Fed's state."""
    from ao import models

    votes = decided = 0
    for value in models.StateEntry.objects.filter(process_id=fed, key__startswith="petition/").values_list(
            "value", flat=True):
        petition = json.loads(value)
        votes += len(petition["votes"])
        decided += petition["status"] == "decided"
    return votes, decided


def _decisions(base: str, petitions: list[bytes], world: dict[str, Any]) -> dict[str, Any]:
    """Post the petitions, let one worker decide them all; the rate is measured over its governors' votes.

    The Fed asks governor k+1 of a petition after governor k of every petition queued before it (its log is FIFO),
    so decisions bunch at the end; votes come at a steady pace (a decision is up to `len(governors)` of them, fewer
    when the sentinel vetoes), so the rate is decisions over the whole span of voting.
    """
    import requests

    from ao import models

    for raw in petitions:
        response = requests.post(base + "/api/petitions/signed/", data=raw,
                                 headers={"Content-Type": "application/octet-stream"}, timeout=30)
        response.raise_for_status()
    governors = len(json.loads(models.StateEntry.objects.get(process_id=world["fed"], key="config").value)["Governors"])
    worker = _start_worker()
    started = time.perf_counter()
    try:
        first = last = None
        votes = decided = 0
        deadline = time.monotonic() + 120 + 120 * len(petitions)
        while decided < len(petitions) and time.monotonic() < deadline:
            time.sleep(0.25)
            now_votes, decided = _progress(world["fed"])
            if now_votes and first is None:
                first = time.perf_counter()
            if now_votes > votes:
                votes, last = now_votes, time.perf_counter()
    finally:
        _stop(worker)
    if decided < len(petitions) or first is None or last is None or votes < 2:
        raise RuntimeError(f"only {decided} of {len(petitions)} petitions were decided")
    # The busy span is first vote to last vote plus the first vote's own duration (one vote's average).
    seconds_per_vote = (last - first) / (votes - 1)
    per_minute = decided / (seconds_per_vote * votes) * 60
    print(f"decisions: {decided} in {votes} votes ({governors} governors), {per_minute:.2f} per minute",
          file=sys.stderr, flush=True)
    raw_s = _raw_seconds_per_decision(world["model_tx"])
    return {"petitions": len(petitions), "decided": decided, "votes": votes, "governors": governors,
            "first_vote_after_worker_start_s": round(first - started, 1),
            "per_minute_per_worker": round(per_minute, 2), "seconds_per_decision": round(60 / per_minute, 2),
            "raw_llama_cpp_per_minute": round(60 / raw_s, 2), "raw_seconds_per_decision": round(raw_s, 2),
            "ratio_vs_raw": round(per_minute * raw_s / 60, 2)}


def raw_committee(path: Path) -> Any:
    """decide(text): the Fed's default committee on one petition through raw llama-cpp-python at its best honest
    use (the grammar, one thread, llama-cpp-python's own prefix cache on)."""
    import llama_cpp

    sys.path.insert(0, str(ROOT / "policy" / "process"))
    import fedrules
    import prompts

    from llm import raw_llama  # bench/llm.py: the engine's load settings (weight repacking crashes on this CPU)

    llama = raw_llama(path)
    # llama-cpp-python's own cache: the state after each prompt is saved, and a later prompt restores the longest
    # cached prefix of its tokens (each governor's system prompt and examples) instead of evaluating it again.
    llama.set_cache(llama_cpp.LlamaRAMCache(capacity_bytes=4 << 30))

    def decide(text: str) -> None:
        for governor in fedrules.DEFAULT_GOVERNORS:
            prompt = "".join(t for t, _ in prompts.prefix_parts(governor["order"], governor["examples"]))
            prompt += "".join(t for t, _ in prompts.petition_parts(text, governor["order"]))
            grammar = llama_cpp.LlamaGrammar.from_string(prompts.GRAMMARS[governor["order"]], verbose=False)
            llama.create_completion(prompt, max_tokens=int(fedrules.DEFAULTS["Max-Tokens"]), temperature=0.0,
                                    grammar=grammar)

    return decide


def _raw_seconds_per_decision(model_tx: str) -> float:
    """The Fed's default committee on a few petitions through raw llama-cpp-python with its prefix cache on."""
    decide = raw_committee(Path(os.environ["LLAMAFED_DATA_DIR"]) / "weavedrive" / f"{model_tx}.data")  # verified
    texts = [p["text"] for p in _petitions() if p["kind"] in ("sincere", "useful-work")][:RAW_PETITIONS + 1]
    seconds = []
    for text in texts:
        start = time.perf_counter()
        decide(text)
        seconds.append(time.perf_counter() - start)
    return statistics.mean(seconds[1:])  # the first filled the cache


# --- 2. submission latency ------------------------------------------------------------------------------------


def _paced(url: str, items: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    """A short calibration run finds the latency, then the measured run holds the rate with that pacing."""
    period_ms = args.connections * 1000 / args.rate
    calibration = int(args.rate * CALIBRATE_S * 1.3) + args.connections
    first = _wrk(url, items[:calibration], CALIBRATE_S, args.connections, delay_ms=period_ms)
    # The median, not the mean: the calibration's first requests meet cold workers, and a mean inflated by them
    # would set too short a delay and overshoot the rate (the baseline then ran out of items).
    delay_ms = max(0.0, period_ms - first["p50_us"] / 1000)
    used = calibration
    for _ in range(CALIBRATIONS - 1):  # then correct the pause by the rate the connections really held
        probe = _wrk(url, items[used:used + calibration], CALIBRATE_S, args.connections, delay_ms=delay_ms)
        used += calibration
        held = probe["requests"] / probe["seconds"]
        delay_ms = max(0.0, delay_ms - args.connections * 1000 * (1 / held - 1 / args.rate))
    result = _wrk(url, items[used:], args.seconds, args.connections, delay_ms=delay_ms)
    result["achieved_rate"] = round(result["requests"] / result["seconds"], 1)
    result["delay_ms"] = round(delay_ms, 1)
    if result["exhausted"] or result["refused"] or result["errors"]:
        print(f"warning: {url}: {result}", file=sys.stderr)
    return result


def _wrk(url: str, items: list[bytes], seconds: int, connections: int, *, delay_ms: float) -> dict[str, Any]:
    data_dir = Path(os.environ["LLAMAFED_DATA_DIR"])
    items_file = data_dir / "wrk-items.bin"
    with open(items_file, "wb") as f:
        for raw in items:
            f.write(struct.pack(">I", len(raw)))
            f.write(raw)
    base, _, path = url.partition("://")[2].partition("/")
    env = {**os.environ, "WRK_ITEMS": str(items_file), "WRK_PATH": "/" + path, "WRK_THREADS": "1",
           "WRK_DELAY_MS": str(int(delay_ms))}
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s",
                          str(ROOT / "bench" / "wrk_items.lua"), f"http://{base}"],
                         env=env, capture_output=True, text=True, check=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)


if __name__ == "__main__":
    main()
