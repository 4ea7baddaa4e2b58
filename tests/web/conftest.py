"""Fixtures of the site's tests: static files without a manifest, named users with
custodial wallets, the ledgers, a stand-in Fed, and a synthetic Fed log for the projection."""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.base_user import AbstractBaseUser

from ao import models, services
from ao.node import node_settle
from ao.permaweb.wallet import Ed25519Key, Wallet
from ledger.models import Token
from ledger.services import ledger_bootstrap
from tests import factories
from web import projection, selectors
from web import services as web_services

WALLET_POOL_SIZE = 6


@pytest.fixture(autouse=True)
def _site_settings(settings: Any) -> Iterator[None]:
    """Pages render without collectstatic."""
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    yield


@pytest.fixture(scope="session")
def wallet_pool() -> list[Wallet]:
    """RSA-4096 wallets made once per run (~0.7 s each); accounts in one test get distinct ones."""
    return [Wallet.generate() for _ in range(WALLET_POOL_SIZE)]


@pytest.fixture
def make_user(db: None, wallet_pool: list[Wallet], monkeypatch: pytest.MonkeyPatch
              ) -> Callable[[str], AbstractBaseUser]:
    """Create an account through the signup service, with a pooled wallet instead of a fresh key."""
    pool = itertools.cycle(wallet_pool)
    used: set[str] = set()

    def next_wallet() -> Wallet:
        wallet = next(pool)
        assert wallet.address not in used, "more accounts in one test than pooled wallets"
        used.add(wallet.address)
        return wallet

    monkeypatch.setattr(web_services.Wallet, "generate", staticmethod(next_wallet))

    def make(username: str) -> AbstractBaseUser:
        return web_services.account_create(username=username, password=f"pw-{username}-Long-Enough-1")

    return make


@pytest.fixture
def ledgers(db: None, node_keys: None, ledger_wasm: bytes) -> dict[str, str]:
    """wAR and LLAMA spawned by the bootstrap and evaluated: ticker → process id."""
    tokens = ledger_bootstrap()
    settle()
    return {t.ticker: t.process_id for t in tokens}


@pytest.fixture
def stand_in_fed(ledgers: dict[str, str], probe_module: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A probe process playing the Fed (fed_process_id returns it): petitions to it are plain wAR transfers."""
    item = factories.spawn_item(factories.user_key(), module=probe_module, extra=[("Name", "stand-in Fed")])
    services.su_schedule(raw=item.serialize())
    settle()
    monkeypatch.setattr(selectors, "fed_process_id", lambda: item.id)
    return item.id


@pytest.fixture
def funded(make_user: Callable[[str], AbstractBaseUser], stand_in_fed: str) -> AbstractBaseUser:
    """An account holding faucet wAR, with the stand-in Fed running."""
    alice = make_user("alice")
    web_services.faucet_drip(user=alice)
    settle()
    return alice


def settle() -> None:
    """Evaluate every process with pending messages and deliver pushes until nothing moves, then project."""
    node_settle()
    project()


def project() -> None:
    """What a worker does after each commit (ao's results_committed): bring the read models up to the log.

    Inside a test's transaction nothing commits, so on-commit work never runs by itself."""
    fed = selectors.fed_process_id()
    if fed:
        projection.project_fed(fed_process_id=fed)


def war_balance(address: str) -> int:
    """An address's evaluated wAR balance (the ledger stores decimal strings as JSON)."""
    war = Token.objects.get(ticker="wAR").process_id
    entry = models.StateEntry.objects.filter(process_id=war, key=f"balance/{address}").first()
    return 0 if entry is None else int(json.loads(entry.value))


def tags_of(message: dict[str, Any]) -> dict[str, str]:
    """A result message's tags as a dict."""
    return {t["name"]: t["value"] for t in message["Tags"]}


def new_id() -> str:
    """A random 43-character id."""
    return secrets.token_urlsafe(32)


def out(target: str, data: str = "", **tags: str) -> dict[str, Any]:
    """An outbox message in AO's result shape."""
    return {"Target": target, "Tags": [{"name": n, "value": v} for n, v in tags.items()], "Data": data}


class FedLog:
    """A synthetic Fed: real scheduled input messages (so nonces, timestamps and input tags are real) and
    hand-written results carrying the Petition-* messages of policy/PROTOCOL.md. Each result is projected as a
    worker would after its commit, unless ``follow`` is off (the projection's own tests drive it by hand)."""

    follow = True

    def __init__(self) -> None:
        self.key = Ed25519Key.generate()
        spawn = factories.spawn_item(self.key)
        services.su_schedule(raw=spawn.serialize())
        self.pid = spawn.id
        self._result(0, spawn.id, [])

    def _result(self, nonce: int, message_id: str, messages: list[dict[str, Any]], error: str = "") -> None:
        models.Result.objects.create(
            process_id=self.pid, nonce=nonce, message_id=message_id, gas_used=0, state_hash="0" * 64, error=error,
            body={"Messages": [] if error else messages, "Output": "", "Error": error or None},
        )
        if self.follow:
            project()

    def step(self, action: str, tags: dict[str, str], messages: list[dict[str, Any]], error: str = "") -> str:
        """Schedule one input message and record the result the Fed would have produced."""
        item = factories.message_item(self.key, self.pid, action=action, extra=list(tags.items()))
        assignment = services.su_schedule(raw=item.serialize())
        self._result(assignment.nonce, item.id, messages, error)
        return item.id

    def petition(self, *, sender: str, text: str, name: str, votes: list[tuple[str, int, str]],
                 amount: int, offering: str = "25000000000", confirm: bool = True) -> str:
        """A petition received, graded by each governor, decided (and its grant confirmed)."""
        pid = new_id()
        intake = {"Sender": sender, "Quantity": offering, "X-Petition": text, "X-Sender-Name": name,
                  "Pushed-For": pid}
        self._intake(pid, intake)
        for k, (governor, grade, reason) in enumerate(votes):
            vote = {"governor": governor, "grade": grade, "reason": reason, "valid": True,
                    "raw": json.dumps({"grade": grade, "reason": reason}), "order": "grade-first", "examples": "A"}
            messages = [out(sender, json.dumps(vote), **{"Action": "Petition-Vote", "Petition-Id": pid,
                                                         "Governor": governor, "Grade": str(grade)})]
            if k == len(votes) - 1:
                grade_min = min(g for _, g, _ in votes)
                decision = {"petition": pid, "grades": [g for _, g, _ in votes], "aggregation": "min",
                            "grade": grade_min, "schedule_amount": str(amount), "amount": str(amount),
                            "capped_by": None, "epoch": 1, "decided": 1}
                if amount:
                    messages.append(out(new_id(), **{"Action": "Grant", "Recipient": sender,
                                                     "Quantity": str(amount), "X-Petition-Id": pid}))
                else:
                    messages.append(out(new_id(), **{"Action": "Burn", "Quantity": offering, "X-Petition-Id": pid}))
                messages.append(out(sender, json.dumps(decision), **{
                    "Action": "Petition-Decision", "Petition-Id": pid, "Grade": str(grade_min),
                    "Amount": str(amount)}))
            else:
                messages.append(out(self.pid, **{"Action": "Deliberate", "Petition-Id": pid,
                                                 "Governor": str(k + 1)}))
            self.step("Deliberate", {"Petition-Id": pid, "Governor": str(k)}, messages)
        if amount and confirm:
            self.step("Grant-Confirmation", {"X-Petition-Id": pid, "Recipient": sender, "Quantity": str(amount)},
                      [out(new_id(), **{"Action": "Burn", "Quantity": offering, "X-Petition-Id": pid})])
        return pid

    def _intake(self, pid: str, intake: dict[str, str]) -> None:
        self.step("Credit-Notice", intake, [
            out(intake["Sender"], **{"Action": "Petition-Received", "Petition-Id": pid}),
            out(self.pid, **{"Action": "Deliberate", "Petition-Id": pid, "Governor": "0"}),
        ])

    def failed(self, *, sender: str, text: str, name: str, raw: str, reason: str) -> str:
        """A petition whose first governor's reply broke the grammar: failed and refunded."""
        pid = new_id()
        self._intake(pid, {"Sender": sender, "Quantity": "25000000000", "X-Petition": text, "X-Sender-Name": name,
                           "Pushed-For": pid})
        vote = {"governor": "Ada", "grade": None, "reason": "the reply does not follow the answer grammar",
                "valid": False, "raw": raw, "order": "grade-first", "examples": "A"}
        self.step("Deliberate", {"Petition-Id": pid, "Governor": "0"}, [
            out(new_id(), **{"Action": "Transfer", "Recipient": sender, "Quantity": "25000000000",
                             "X-Refund-For": pid, "X-Refund-Reason": reason}),
            out(sender, json.dumps({"petition": pid, "reason": reason, "votes": [vote]}),
                **{"Action": "Petition-Failed", "Petition-Id": pid, "Reason": reason}),
        ])
        return pid

    def refunded(self, *, sender: str, text: str, name: str, reason: str) -> str:
        """A petition the Fed refunded."""
        pid = new_id()
        intake = {"Sender": sender, "Quantity": "25000000000", "X-Petition": text, "X-Sender-Name": name,
                  "Pushed-For": pid}
        self.step("Credit-Notice", intake, [
            out(new_id(), **{"Action": "Transfer", "Recipient": sender, "Quantity": "25000000000",
                             "X-Refund-For": pid, "X-Refund-Reason": reason}),
            out(sender, reason, **{"Action": "Petition-Refunded", "Petition-Id": pid, "Reason": reason}),
        ])
        return pid


@pytest.fixture
def fed_log(db: None, node_keys: None, monkeypatch: pytest.MonkeyPatch) -> FedLog:
    """A synthetic Fed log; fed_process_id returns it."""
    log = FedLog()
    monkeypatch.setattr(selectors, "fed_process_id", lambda: log.pid)
    return log
