"""Property test of the token ledger run in the compute unit: random traffic keeps the books straight."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from ao import models, verify
from ao.compute import batch
from ao.permaweb.wallet import Ed25519Key
from tests.ao.test_cu import send, spawn

MAX_SUPPLY = 10**6
USERS = 4
pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def _balances(pid: str) -> dict[str, int]:
    rows = models.StateEntry.objects.filter(process_id=pid, key__startswith="balance/")
    return {r.key.removeprefix("balance/"): int(json.loads(r.value)) for r in rows}


def _supply(pid: str) -> int:
    return int(json.loads(models.StateEntry.objects.get(process_id=pid, key="supply").value))


class LedgerMachine(RuleBasedStateMachine):
    """Drives a ledger process with mints, transfers, burns and bad messages; a Python model shadows it."""

    module_id: str = ""

    @initialize()
    def start(self) -> None:
        self.keys = [Ed25519Key.generate() for _ in range(USERS)]
        self.owner = self.keys[0]
        self.pid = spawn(self.owner, self.module_id, [("Ticker", "LLAMA"), ("Max-Supply", str(MAX_SUPPLY))])
        self.model: dict[str, int] = {}
        self.sent = 1

    def _who(self, i: int) -> Ed25519Key:
        return self.keys[i % USERS]

    def _send(self, key: Ed25519Key, action: str, **tags: str) -> None:
        send(key, self.pid, action, **tags)
        self.sent += 1

    @rule(to=st.integers(0, USERS - 1), qty=st.integers(1, 400_000))
    def mint(self, to: int, qty: int) -> None:
        recipient = self._who(to).address
        self._send(self.owner, "Mint", Quantity=str(qty), Recipient=recipient)
        if sum(self.model.values()) + qty <= MAX_SUPPLY:
            self.model[recipient] = self.model.get(recipient, 0) + qty

    @rule(by=st.integers(1, USERS - 1), qty=st.integers(1, 100))
    def unauthorized_mint(self, by: int, qty: int) -> None:
        self._send(self._who(by), "Mint", Quantity=str(qty))

    @rule(src=st.integers(0, USERS - 1), dst=st.integers(0, USERS - 1), qty=st.integers(1, 300_000))
    def transfer(self, src: int, dst: int, qty: int) -> None:
        a, b = self._who(src).address, self._who(dst).address
        self._send(self._who(src), "Transfer", Recipient=b, Quantity=str(qty))
        if self.model.get(a, 0) >= qty:
            self.model[a] -= qty
            self.model[b] = self.model.get(b, 0) + qty

    @rule(src=st.integers(0, USERS - 1), qty=st.integers(1, 300_000))
    def burn(self, src: int, qty: int) -> None:
        a = self._who(src).address
        self._send(self._who(src), "Burn", Quantity=str(qty))
        if self.model.get(a, 0) >= qty:
            self.model[a] -= qty

    @rule(src=st.integers(0, USERS - 1), quantity=st.sampled_from(["-5", "0", "1.5", "abc", "", "01", "9" * 41]),
          action=st.sampled_from(["Transfer", "Burn"]))
    def bad_quantity(self, src: int, quantity: str, action: str) -> None:
        self._send(self._who(src), action, Recipient=self._who(src + 1).address, Quantity=quantity)

    @rule(src=st.integers(0, USERS - 1), recipient=st.sampled_from(["", "short", "x" * 44, "!" * 43]))
    def bad_recipient(self, src: int, recipient: str) -> None:
        self._send(self._who(src), "Transfer", Recipient=recipient, Quantity="1")

    @invariant()
    def books_balance(self) -> None:
        batch.evaluate_pending(process_id=self.pid)
        balances = _balances(self.pid)
        assert all(v > 0 for v in balances.values())
        assert sum(balances.values()) == _supply(self.pid)
        assert balances == {k: v for k, v in self.model.items() if v > 0}
        assert not models.Result.objects.filter(process_id=self.pid).exclude(error="").exists()

    def teardown(self) -> None:
        if getattr(self, "pid", None):
            report = verify.verify_process(process_id=self.pid)
            assert report.ok, report.divergence
            assert report.checked == self.sent


def test_ledger_books_stay_straight_under_random_traffic(ledger_module: str) -> None:
    LedgerMachine.module_id = ledger_module
    before = models.Result.objects.count()
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=40, stateful_step_count=75, deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
    # Thousands of messages, each evaluated in WebAssembly and replayed by verify.
    assert models.Result.objects.count() - before >= 2000
