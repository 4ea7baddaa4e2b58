"""A bounded flood on loopback against gunicorn (4 workers) on PostgreSQL and Redis: do the limits hold? (JSON)

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/llamafed .venv/bin/python bench/load.py [--port 8766]

Set-up, in a fresh database (llamafed_bench) and data dir: the ledgers, the tiny test model uploaded and the Fed
on it (the web tier is what is measured; the tiny model decides in seconds), 21 accounts with custodial wallets,
faucet wAR and a session each. The limits are set for the run (below) and read by every worker from the
environment, as in production.

Then all at once, from many client threads, while one Celery worker decides petitions:

- 1,000 junk POST /ao/mu/ (bytes that are not a data item) from one address;
- 100 sign-ups (form and CSRF token, each its own session) from one address;
- 100 wrong logins for 10 usernames from one address;
- 200 POST /api/petitions/ from 20 accounts (10 each), signed in;
- half-way, one legitimate petition from a 21st account through the site's form.

Printed for each limit: the configured value, how many requests it let through, the ratio (the acceptance is
within 10%), every status seen; the count of 5xx (must be 0); whether every refusal carried a message (and 429s a
Retry-After); and whether the legitimate petition was decided.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import _setup  # noqa: E402
from submit_load import BROKER, _flush_broker, _start, _start_worker, _stop, _wait_for_port  # noqa: E402

LIMITS = {  # what this run configures (env), and what each flood should let through
    "LIMIT_INTAKE_PER_IP": "200/hour",
    "LIMIT_SIGNUP_PER_IP": "20/hour",
    "LIMIT_PETITIONS_PER_CLIENT": "5/hour",
    "LOGIN_FAILURE_LIMIT": "5",
}
JUNK_POSTS, SIGNUPS, WRONG_LOGINS, PETITION_ACCOUNTS, PETITIONS_EACH = 1000, 100, 100, 20, 10
CLIENT_THREADS = 16
DECIDE_TIMEOUT_S = 600
CSRF_RE = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("set DATABASE_URL=postgres://... (this benchmark measures gunicorn on PostgreSQL and Redis)")
    os.environ.update(LIMITS)
    os.environ["DJANGO_ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    _setup.django_ready(broker=BROKER)
    _flush_broker()
    world = _build()
    base = f"http://127.0.0.1:{args.port}"
    web = _start(["gunicorn", "llamafed.wsgi", "-w", "4", "-b", f"127.0.0.1:{args.port}", "--timeout", "120"],
                 "gunicorn")
    worker = _start_worker()
    try:
        _wait_for_port(args.port)
        report = _flood(base, world)
    finally:
        _stop(web)
        _stop(worker)
    print(json.dumps(report, indent=2))
    if not report["ok"]:
        sys.exit(1)


def _build() -> dict[str, Any]:
    """The Fed on the tiny model, 21 funded accounts with sessions."""
    import tempfile

    from django.test import Client

    from ao import weave
    from ao.node import node_settle
    from policy import services as fed_services
    from tests.policy.test_fed import TEST_PARAMS
    from tests.support.tiny_gguf import tiny_gguf_path
    from web import services

    from django.core.management import call_command

    started = time.perf_counter()
    call_command("collectstatic", "--noinput", verbosity=0)  # the pages' stylesheet, as scripts/run does
    model_tx = weave.weave_upload(path=tiny_gguf_path(Path(tempfile.mkdtemp())), tags=[], name="tiny")
    fed = fed_services.fed_bootstrap(model_tx=model_tx, overrides=TEST_PARAMS)  # the tests' Fed for the tiny model
    node_settle()
    accounts = []
    for i in range(PETITION_ACCOUNTS + 1):
        user = services.account_create(username=f"petitioner{i}", password=f"pw-petitioner{i}-Long-Enough-1")
        services.faucet_drip(user=user)
        client = Client()
        client.force_login(user)
        accounts.append({"name": user.username, "session": client.cookies["sessionid"].value})
    node_settle()
    print(f"set-up: the Fed {fed.process_id} on the tiny model, {len(accounts)} funded accounts in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return {"fed": fed.process_id, "accounts": accounts}


def _flood(base: str, world: dict[str, Any]) -> dict[str, Any]:
    import requests

    results: dict[str, list[tuple[int, str, str]]] = {k: [] for k in ("junk", "signup", "login", "petition")}
    lock = threading.Lock()

    def record(kind: str, response: requests.Response, who: str = "") -> None:
        try:
            body = response.json()
            text = body.get("error") or body.get("detail") or body.get("message") or "" if isinstance(body, dict) else ""
        except ValueError:
            text = response.text
        with lock:
            results[kind].append((response.status_code, text, response.headers.get("Retry-After", ""), who))

    def junk(i: int) -> None:
        record("junk", requests.post(f"{base}/ao/mu/", data=b"not a data item %d" % i,
                                     headers={"Content-Type": "application/octet-stream"}, timeout=60))

    def signup(i: int) -> None:
        with requests.Session() as session:
            token = CSRF_RE.search(session.get(f"{base}/signup/", timeout=60).content).group(1).decode()
            password = f"Flood-{i}-passphrase-long"
            record("signup", session.post(f"{base}/signup/", data={
                "username": f"flood{i}", "password1": password, "password2": password,
                "csrfmiddlewaretoken": token}, headers={"Referer": f"{base}/signup/"}, timeout=120,
                allow_redirects=False))

    def wrong_login(i: int) -> None:
        with requests.Session() as session:
            token = CSRF_RE.search(session.get(f"{base}/login/", timeout=60).content).group(1).decode()
            record("login", session.post(f"{base}/login/", data={
                "username": f"petitioner{i % 10}", "password": "not-the-password", "csrfmiddlewaretoken": token},
                headers={"Referer": f"{base}/login/"}, timeout=120, allow_redirects=False))

    def petition(i: int) -> None:
        account = world["accounts"][i % PETITION_ACCOUNTS]
        with requests.Session() as session:
            session.cookies.set("sessionid", account["session"])
            session.get(f"{base}/account/", timeout=60)  # the CSRF cookie
            token = session.cookies.get("csrftoken", "")
            response = session.post(f"{base}/api/petitions/", json={
                "text": f"I repair bicycles for the children of my street, every Saturday ({i}).",
                "sender_name": account["name"]}, headers={"X-CSRFToken": token, "Referer": f"{base}/"}, timeout=120)
            record("petition", response, account["name"])

    legit: dict[str, Any] = {}

    def legitimate() -> None:
        account = world["accounts"][PETITION_ACCOUNTS]
        with requests.Session() as session:
            session.cookies.set("sessionid", account["session"])
            page = session.get(f"{base}/petitions/new/", timeout=60).content
            token = CSRF_RE.search(page).group(1).decode()
            response = session.post(f"{base}/petitions/new/", data={
                "text": "I teach reading to adults at the village library three evenings a week.",
                "sender_name": "Legit", "csrfmiddlewaretoken": token},
                headers={"Referer": f"{base}/petitions/new/"}, timeout=120, allow_redirects=False)
            legit["status"] = response.status_code
            legit["id"] = response.headers.get("Location", "").rstrip("/").rsplit("/", 1)[-1]

    jobs = ([(junk, i) for i in range(JUNK_POSTS)] + [(signup, i) for i in range(SIGNUPS)]
            + [(wrong_login, i) for i in range(WRONG_LOGINS)]
            + [(petition, i) for i in range(PETITION_ACCOUNTS * PETITIONS_EACH)])
    jobs.sort(key=lambda job: (job[1] * 7919) % 1000)  # interleave the floods
    middle = len(jobs) // 2
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        futures = [pool.submit(fn, i) for fn, i in jobs[:middle]]
        futures.append(pool.submit(legitimate))
        futures += [pool.submit(fn, i) for fn, i in jobs[middle:]]
        for future in futures:
            future.result()
    flood_s = time.perf_counter() - started
    decided_s = _wait_decided(base, legit.get("id", "")) if legit.get("status") == 302 else None
    return _report(results, legit, decided_s, flood_s)


def _wait_decided(base: str, petition_id: str) -> float | None:
    import requests

    started = time.perf_counter()
    while time.perf_counter() - started < DECIDE_TIMEOUT_S:
        body = requests.get(f"{base}/api/petitions/{petition_id}/", timeout=60).json()
        if body.get("final"):
            return time.perf_counter() - started if body.get("status") == "decided" else None
        time.sleep(1)
    return None


def _report(results: dict[str, list[tuple]], legit: dict[str, Any], decided_s: float | None,
            flood_s: float) -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    def statuses(kind: str) -> dict[str, int]:
        return dict(sorted(Counter(str(r[0]) for r in results[kind]).items()))

    intake = int(LIMITS["LIMIT_INTAKE_PER_IP"].split("/")[0])
    signups = int(LIMITS["LIMIT_SIGNUP_PER_IP"].split("/")[0])
    per_client = int(LIMITS["LIMIT_PETITIONS_PER_CLIENT"].split("/")[0])
    failures = int(LIMITS["LOGIN_FAILURE_LIMIT"])
    junk_through = sum(1 for r in results["junk"] if r[0] != 429)
    created = get_user_model().objects.filter(username__startswith="flood").count()
    # A wrong login the limit let through gets the form again (200): the first N-1; the Nth is answered with the
    # lockout itself, every later one is refused unchecked.
    checked = sum(1 for r in results["login"] if r[0] == 200) + 1
    throttled = [r for r in results["petition"] if r[0] == 429 and r[1].startswith("Too many petition submissions")]
    through_per_account = Counter(r[3] for r in results["petition"] if r not in throttled)
    accepted = Counter(r[3] for r in results["petition"] if r[0] == 201)
    every = [r for kind in results for r in results[kind]]
    refusals = [r for r in every if r[0] >= 400]
    limits = {
        "messenger intake per address": {"configured": intake, "let_through": junk_through,
                                         "ratio": round(junk_through / intake, 3), "statuses": statuses("junk")},
        "sign-ups per address": {"configured": signups, "let_through": created, "ratio": round(created / signups, 3),
                                 "statuses": statuses("signup")},
        "failed logins before lockout": {"configured": failures, "let_through": checked,
                                         "ratio": round(checked / failures, 3), "statuses": statuses("login")},
        "petition submissions per account": {
            "configured": per_client, "let_through_total": sum(through_per_account.values()),
            "expected_total": per_client * PETITION_ACCOUNTS,
            "ratio": round(sum(through_per_account.values()) / (per_client * PETITION_ACCOUNTS), 3),
            "per_account_min_max": [min(through_per_account.values()), max(through_per_account.values())],
            "accepted_total": sum(accepted.values()), "accepted_per_account_max": max(accepted.values(), default=0),
            "statuses": statuses("petition")},
    }
    server_errors = sum(1 for r in every if r[0] >= 500)
    unexplained = sum(1 for r in refusals if not r[1].strip())
    no_retry_after = sum(1 for r in refusals if r[0] == 429 and not r[2])
    within = all(0.9 <= v["ratio"] <= 1.1 for v in limits.values())
    ok = within and server_errors == 0 and unexplained == 0 and no_retry_after == 0 and decided_s is not None
    return {"gunicorn_workers": 4, "client_threads": CLIENT_THREADS, "requests": len(every),
            "flood_seconds": round(flood_s, 1), "limits": limits, "server_errors": server_errors,
            "refusals": len(refusals), "refusals_without_a_message": unexplained,
            "429_without_retry_after": no_retry_after,
            "legitimate_petition": {"status": legit.get("status"), "id": legit.get("id"),
                                    "decided_seconds_after_the_flood": round(decided_s, 1) if decided_s else None},
            "ok": ok}


if __name__ == "__main__":
    main()
