"""Governors in parallel: the Fed hints every governor's completion on accepting a petition; any worker computes
them ahead; the Deliberate that asks finds, waits for or computes its own, and replay, which never reads what
was computed ahead, records the same."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from ao import models, verify
from ao.compute import batch, pushes, sweep
from ao.errors import HostUnavailable
from ao.extensions import llm, llm_ahead, llm_host
from tests.policy.test_fed import (
    GOVERNORS, make_fed, petition, results_of, settle, tiny_model, token, user_with_war, value,
)

__all__ = ["tiny_model"]  # the fixture, imported for these tests

State = models.Completion.State


def _intake(fed: str, text: str) -> str:
    """A petition accepted by the Fed (its Credit-Notice evaluated), no governor run yet."""
    user = user_with_war()
    settle()
    pid = petition(user, fed, text)
    batch.evaluate_pending(process_id=token("wAR"))
    pushes.deliver_pending(process_id=token("wAR"))
    batch.evaluate_pending(process_id=fed)
    return pid


def _rows() -> list[models.Completion]:
    return list(models.Completion.objects.order_by("nonce", "created_at", "key"))


def _count_completions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every engine completion from now on, by the first part's text."""
    seen: list[str] = []
    real = llm.LlamaEngine.complete

    def counting(self: llm.LlamaEngine, request: llm.CompletionRequest) -> llm.Completion:
        seen.append(request.parts[0].text if request.parts else "")
        return real(self, request)

    monkeypatch.setattr(llm.LlamaEngine, "complete", counting)
    return seen


@pytest.mark.django_db
def test_each_governor_is_computed_ahead_and_the_record_is_what_replay_computes(
    tiny_model: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fed = make_fed(tiny_model).process_id
    pid = _intake(fed, "I mend fishing nets for the whole harbour, free of charge.")
    rows = _rows()
    # One hinted request per governor, waiting for a worker; the hints left the intake's result untouched.
    assert len(rows) == len(GOVERNORS) and {r.state for r in rows} == {State.PENDING}
    assert {r.model_id for r in rows} == {tiny_model} and len({r.key for r in rows}) == len(GOVERNORS)
    assert value(fed, f"petition/{pid}")["status"] == "deliberating"
    # Workers compute them (the task's work), as they would on two machines at once.
    assert all(llm_ahead.compute(r.key, llm_host.engine_for_model) for r in rows)
    assert not llm_ahead.compute(rows[0].key, llm_host.engine_for_model)  # done: a second task does nothing
    assert {r.state for r in _rows()} == {State.DONE}

    seen = _count_completions(monkeypatch)
    settle()
    assert seen == []  # every Deliberate found its governor's answer: none was computed during evaluation
    stored = value(fed, f"petition/{pid}")
    assert stored["status"] == "decided" and [v["governor"] for v in stored["votes"]] == list(GOVERNORS)
    outputs = {r.key: r.output["text"] for r in _rows()}
    assert sorted(v["raw"] for v in stored["votes"]) == sorted(outputs.values())
    # Replay computes each governor again without the table, and matches bit for bit.
    report = verify.verify_process(process_id=fed)
    assert report.ok, report.divergence
    assert len(seen) == len(GOVERNORS)


@pytest.mark.django_db
def test_a_row_computed_wrong_is_caught_by_replay(tiny_model: str) -> None:
    fed = make_fed(tiny_model).process_id
    _intake(fed, "I sweep the village square every morning.")
    for row in _rows():
        llm_ahead.compute(row.key, llm_host.engine_for_model)
    first = _rows()[0]
    models.Completion.objects.filter(key=first.key).update(output={**first.output, "text": '{"grade":5,"reason":"x"}'})
    settle()
    report = verify.verify_process(process_id=fed)
    assert not report.ok
    deliberations = [r.nonce for r in results_of(fed, "Deliberate")]
    assert report.divergence is not None and report.divergence.nonce in deliberations


@pytest.mark.django_db
def test_a_message_waiting_for_a_live_claim_computes_the_next_hinted_completion_meanwhile(
    tiny_model: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fed = make_fed(tiny_model).process_id
    pid = _intake(fed, "I drive my neighbours to the clinic.")
    pushes.deliver_pending(process_id=fed)  # the first Deliberate
    first, second = _rows()
    # Another worker holds the first governor's completion, and finishes it while this one waits.
    models.Completion.objects.filter(key=first.key).update(
        state=State.CLAIMED, claimed_by="elsewhere:1:1", claimed_until=timezone.now() + timedelta(seconds=60))
    engine = llm_host.engine_for_model(first.model_id, first.model_sha256)
    answer = engine.complete(llm_ahead.request_from(first.request))
    waits: list[float] = []

    def other_worker_finishes(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            models.Completion.objects.filter(key=first.key).update(state=State.DONE, output=llm_ahead.to_json(answer))

    monkeypatch.setattr(llm_ahead, "_sleep", other_worker_finishes)
    seen = _count_completions(monkeypatch)
    batch.evaluate_pending(process_id=fed)
    # Instead of idling while the other worker computed the first governor's answer, it computed the second
    # governor's (the next one no worker had), then voted with the other worker's answer.
    second_text = llm_ahead.request_from(second.request).parts[0].text
    assert seen == [second_text] and len(waits) == 3
    stolen = models.Completion.objects.get(key=second.key)
    assert stolen.state == State.DONE and stolen.output is not None
    assert value(fed, f"petition/{pid}")["votes"][0]["raw"] == answer.text
    # The second governor's Deliberate finds that answer: nothing is computed again.
    settle()
    assert seen == [second_text]
    stored = value(fed, f"petition/{pid}")
    assert stored["status"] == "decided" and stored["votes"][1]["raw"] == stolen.output["text"]
    monkeypatch.undo()
    assert verify.verify_process(process_id=fed).ok


@pytest.mark.django_db
def test_a_worker_run_delivers_what_the_fed_sends_itself_and_goes_on(tiny_model: str) -> None:
    """The next governor's Deliberate does not wait for a delivery task and an evaluation task behind the queue's
    other work: the run that sent it delivers it and evaluates it."""
    fed = make_fed(tiny_model).process_id
    user = user_with_war()
    settle()
    pid = petition(user, fed, "I bake bread for the night shelter.")
    batch.evaluate_pending(process_id=token("wAR"))
    pushes.deliver_pending(process_id=token("wAR"))  # the Credit-Notice
    report = batch.evaluate_process(process_id=fed, budget_s=None)
    assert report.evaluated == 1 + len(GOVERNORS) and not report.fault  # the intake, then each Deliberate
    stored = value(fed, f"petition/{pid}")
    assert stored["status"] == "decided" and len(stored["votes"]) == len(GOVERNORS)
    settle()
    assert verify.verify_process(process_id=fed).ok


@pytest.mark.django_db
def test_a_dead_workers_claim_is_taken_over_and_a_host_fault_computing_ahead_records_nothing(
    tiny_model: str,
) -> None:
    fed = make_fed(tiny_model).process_id
    pid = _intake(fed, "I teach adults to read at the community centre.")
    first, second = _rows()

    def broken_disk(model_id: str, sha256: str) -> llm.LlamaEngine:
        raise HostUnavailable("cannot read model: Input/output error")

    # A host fault while computing ahead gives the request back; nothing is stored.
    assert not llm_ahead.compute(second.key, broken_disk)
    assert models.Completion.objects.get(key=second.key).state == State.PENDING
    # A worker that claimed the first and died (its claim ran out): the Deliberate computes it itself.
    models.Completion.objects.filter(key=first.key).update(
        state=State.CLAIMED, claimed_by="dead:1:1", claimed_until=timezone.now() - timedelta(seconds=1))
    settle()
    assert value(fed, f"petition/{pid}")["status"] == "decided"
    assert {r.state for r in _rows()} == {State.DONE}
    assert verify.verify_process(process_id=fed).ok


@pytest.mark.django_db
def test_without_ahead_nothing_is_recorded_and_the_results_are_the_same(
    tiny_model: str, settings: Any,
) -> None:
    fed = make_fed(tiny_model).process_id
    settings.AO = {**settings.AO, "LLM_AHEAD": False}
    pid = _intake(fed, "I fix bicycles for schoolchildren.")
    settle()
    assert _rows() == []
    assert value(fed, f"petition/{pid}")["status"] == "decided"
    assert verify.verify_process(process_id=fed).ok


@pytest.mark.django_db
def test_the_sweeper_deletes_old_rows(tiny_model: str) -> None:
    fed = make_fed(tiny_model).process_id
    _intake(fed, "I plant trees along the river.")
    old, new = _rows()
    models.Completion.objects.filter(key=old.key).update(created_at=timezone.now() - timedelta(hours=2))
    sweep.sweep()
    assert [r.key for r in _rows()] == [new.key]
