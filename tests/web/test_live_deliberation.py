"""While the Fed deliberates, the rest of the node keeps working: evaluation holds no transaction (on SQLite, no
write lock), and the status page shows each governor's vote as the worker commits it."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection
from django.test import Client

from ao import dispatch, models
from ao.compute import batch, pushes
from ao.extensions import llm
from tests import factories
from tests.policy.test_fed import make_fed, tiny_model  # noqa: F401 - the tiny_model fixture
from tests.web.conftest import settle
from web import services as web_services
from web.models import FaucetDrip, PetitionRequest, Vote

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
WAIT_S = 120


class Gate:
    """Holds every LLM completion until the test lets it through, and says when each one started."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, calls: int = 8) -> None:
        self.started = [threading.Event() for _ in range(calls)]
        self.release = [threading.Event() for _ in range(calls)]
        self._count = 0
        real = llm.LlamaEngine.complete

        def gated(engine: llm.LlamaEngine, request: llm.CompletionRequest) -> llm.Completion:
            index = self._count
            self._count += 1
            self.started[index].set()
            assert self.release[index].wait(WAIT_S), f"completion {index} was never released"
            return real(engine, request)

        monkeypatch.setattr(llm.LlamaEngine, "complete", gated)

    def open_all(self) -> None:
        for event in self.release:
            event.set()


class Worker(threading.Thread):
    """A compute-unit worker in a thread: evaluates and delivers until stopped (its commits are real)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                moved = 0
                for process_id in batch.processes_with_pending_messages():
                    moved += batch.evaluate_process(process_id=process_id, budget_s=None, force=True).evaluated
                report = pushes.deliver_pending()
                moved += report.delivered + report.stored
                if not moved:
                    self.stop.wait(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            connection.close()


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    # The thread is the only worker: requests for work are recorded, not run inline by eager tasks.
    monkeypatch.setattr(dispatch, "enqueue", lambda *args: None)
    thread = Worker()
    yield thread
    thread.stop.set()
    if thread.is_alive():
        thread.join(WAIT_S)


def _vote_step(html: str, label: str) -> str:
    match = re.search(r'<li class="step step-(\w+)"[^>]*>(?:(?!</li>).)*?' + re.escape(label), html, re.S)
    assert match is not None, f"no step {label!r} in the status page"
    return match.group(1)


def test_intake_commits_during_a_deliberation_and_votes_show_as_they_are_committed(
    tiny_model: str, ledgers: dict[str, str], make_user: Callable[[str], AbstractBaseUser],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch, worker: Worker, client: Client,
) -> None:
    make_fed(tiny_model)
    first, second, third = make_user("first"), make_user("second"), make_user("third")
    for user in (first, second):
        web_services.faucet_drip(user=user)
    settle()
    gate = Gate(monkeypatch)
    petition = web_services.petition_submit(user=first, text="I mend fishing nets for the harbour.", sender_name="Ann")
    worker.start()
    assert gate.started[0].wait(WAIT_S), "the first governor never started"

    # The first governor's completion is in flight. Intake of every kind commits meanwhile.
    item = factories.message_item(factories.user_key(), ledgers["wAR"], action="Balance")
    posted = client.post("/ao/mu/", data=item.serialize(), content_type="application/octet-stream")
    assert posted.status_code == 202, posted.content
    drip = web_services.faucet_drip(user=third)
    other = web_services.petition_submit(user=second, text="I teach children to swim each summer.", sender_name="Bo")
    assert not gate.release[0].is_set() and not gate.started[1].is_set()  # the call has not ended
    assert models.Assignment.objects.filter(message__id=item.id).exists()
    assert FaucetDrip.objects.filter(pk=drip.pk).exists() and models.Assignment.objects.filter(
        message__id=drip.message_id).exists()
    assert PetitionRequest.objects.filter(pk=other.pk).exists() and models.Assignment.objects.filter(
        message__id=other.message_id).exists()

    gate.release[0].set()
    assert gate.started[1].wait(WAIT_S), "the second governor never started"
    # The second governor is deliberating: the first one's vote is already committed, projected and shown.
    assert Vote.objects.filter(petition_id=petition.message_id, governor_index=0).exists()
    html = client.get(f"/petitions/{petition.message_id}/status/").content.decode()
    assert _vote_step(html, "Governor 1 of 2") == "done"
    assert _vote_step(html, "Governor 2 of 2") == "current"

    gate.open_all()
    for _ in range(WAIT_S * 10):
        if Vote.objects.filter(petition_id=other.message_id).count() == 2 or worker.error:
            break
        worker.stop.wait(0.1)
    worker.stop.set()
    worker.join(WAIT_S)
    assert worker.error is None, worker.error
    assert Vote.objects.filter(petition_id=petition.message_id).count() == 2

