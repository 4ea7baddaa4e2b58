"""Staff audit: a decision's full trace and replay-verify on demand; nobody else may see it."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from tests.policy.test_fed import make_fed, petition, settle, tiny_model, user_with_war  # noqa: F401
from web.models import VerifyRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def decided(tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:  # noqa: F811
    """A Fed on the tiny model and one decided petition."""
    fed = make_fed(tiny_model)
    monkeypatch.setattr("web.selectors.fed_process_id", lambda: fed.process_id)
    user = user_with_war()
    pid = petition(user, fed.process_id, "I planted <b>trees</b> by the river.")
    settle()
    return fed.process_id, pid


def test_audit_is_for_staff_only(client: Client, django_user_model, decided: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    _, pid = decided
    urls = [f"/audit/petitions/{pid}/", "/audit/verify/"]
    for url in urls:  # anonymous: 403 (the page offers the login link)
        response = client.get(url) if "petitions" in url else client.post(url)
        assert response.status_code == 403, url
    assert "Log in" in client.get(urls[0]).content.decode()
    django_user_model.objects.create_user("member", password="pw-long-enough-1")
    client.force_login(django_user_model.objects.get(username="member"))
    for url in urls:
        assert client.get(url).status_code == 403, url
        assert client.post(url, {"petition_id": pid}).status_code == 403, url
    assert not VerifyRun.objects.exists()


def test_staff_sees_the_trace_and_verifies_the_log(  # type: ignore[no-untyped-def]
    client: Client, django_user_model, decided: tuple[str, str], django_capture_on_commit_callbacks
) -> None:
    fed, pid = decided
    django_user_model.objects.create_user("auditor", password="pw-long-enough-1", is_staff=True)
    client.force_login(django_user_model.objects.get(username="auditor"))
    page = client.get(f"/audit/petitions/{pid}/").content.decode()
    for step in ("Credit-Notice", "Deliberate", "Model call", "Raw output", "state hash", "Grant"):
        assert step in page
    assert "&lt;b&gt;trees&lt;/b&gt;" in page and "<b>trees</b>" not in page  # the petition is data, escaped
    with django_capture_on_commit_callbacks(execute=True):  # the task is queued after the commit
        response = client.post("/audit/verify/", {"petition_id": pid})
    assert response.status_code == 302
    run = VerifyRun.objects.get()
    assert run.process_id == fed and run.status == VerifyRun.Status.MATCH and run.checked > 3
    assert "every result and state hash matches" in client.get(f"/audit/petitions/{pid}/").content.decode()


def test_verify_task_run_twice_records_once(decided: tuple[str, str], django_user_model) -> None:  # type: ignore[no-untyped-def]
    from web import audit, tasks

    fed, _ = decided
    run = VerifyRun.objects.create(process_id=fed)
    assert tasks.verify_run.apply(args=(run.id,)).get() == "match"
    first = VerifyRun.objects.get(id=run.id).finished_at
    assert tasks.verify_run.apply(args=(run.id,)).get() == "match"
    assert VerifyRun.objects.get(id=run.id).finished_at == first
    assert audit is not None and Path is not None
