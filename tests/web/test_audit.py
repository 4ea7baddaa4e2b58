"""Staff audit: a decision's full trace and replay-verify on demand; nobody else may see it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client

from tests.policy.test_fed import make_fed, petition, settle, tiny_model, user_with_war  # noqa: F401
from web import projection
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
    projection.project_fed(fed_process_id=fed.process_id)
    return fed.process_id, pid


@pytest.fixture
def auditor(django_user_model):  # type: ignore[no-untyped-def]
    """A staff account without a wallet, as createsuperuser makes one."""
    return django_user_model.objects.create_user("auditor", password="pw-long-enough-1", is_staff=True)


def test_audit_is_for_staff_only(client: Client, django_user_model, decided: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    _, pid = decided
    urls = [f"/audit/petitions/{pid}/", "/audit/verify/", "/audit/", "/audit/verify/runs/"]
    for url in urls:  # anonymous: 403 (the page offers the login link)
        response = client.post(url) if url == "/audit/verify/" else client.get(url)
        assert response.status_code == 403, url
    assert "Log in" in client.get(urls[0]).content.decode()
    django_user_model.objects.create_user("member", password="pw-long-enough-1")
    client.force_login(django_user_model.objects.get(username="member"))
    for url in urls:
        assert client.get(url).status_code == 403, url
        assert client.post(url, {"petition_id": pid}).status_code == 403, url
    assert not VerifyRun.objects.exists()


def test_staff_sees_the_trace_and_verifies_the_log(  # type: ignore[no-untyped-def]
    client: Client, auditor, decided: tuple[str, str], django_capture_on_commit_callbacks
) -> None:
    fed, pid = decided
    client.force_login(auditor)
    page = client.get(f"/audit/petitions/{pid}/").content.decode()
    for step in ("Credit-Notice", "Deliberate", "Model call", "Reply", "State hash after", "Grant"):
        assert step in page
    assert "&lt;b&gt;trees&lt;/b&gt;" in page and "<b>trees</b>" not in page  # the petition is data, escaped
    # For people: a summary with the outcome and a link back, names for the processes, ISO times, fuel explained,
    # the governors' full shared prompt rebuilt and matched to its recorded hash, messages as indented JSON.
    assert "Summary" in page and f'href="/petitions/{pid}/decision/"' in page
    assert "the wAR ledger" in page and "the Fed" in page and "the petitioner (Alice)" in page
    assert re.search(r"<time datetime=\"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\">", page)
    assert "instructions" in page and "not a price" in page
    assert page.count("its sha256 matches the record") == 2  # both governors' calls
    assert "&lt;|im_start|&gt;system" in page  # the system prompt, shown as text
    assert '{\n  &quot;Action&quot;: &quot;Petition-Received&quot;' in page
    with django_capture_on_commit_callbacks(execute=True):  # the task is queued after the commit
        response = client.post("/audit/verify/", {"petition_id": pid})
    assert response.status_code == 302
    run = VerifyRun.objects.get()
    assert run.process_id == fed and run.status == VerifyRun.Status.MATCH and run.checked > 3
    assert run.total == run.checked
    assert "every result and state hash matches" in client.get(f"/audit/petitions/{pid}/").content.decode()


def test_verify_from_the_page_shows_progress_then_the_result_without_a_reload(  # type: ignore[no-untyped-def]
    client: Client, auditor, decided: tuple[str, str], django_capture_on_commit_callbacks
) -> None:
    fed, pid = decided
    client.force_login(auditor)
    # htmx posts the form: the answer is the runs region, polling while the run is queued.
    response = client.post("/audit/verify/", {"petition_id": pid}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and 'id="verify-runs"' in response.content.decode()
    assert 'hx-trigger="every 2s"' in response.content.decode() and "queued" in response.content.decode()
    run = VerifyRun.objects.get()
    VerifyRun.objects.filter(id=run.id).update(status=VerifyRun.Status.RUNNING, checked=3, total=12)
    polled = client.get("/audit/verify/runs/", {"petition_id": pid}, HTTP_HX_REQUEST="true")
    assert polled.status_code == 200 and '<progress max="100" value="25">' in polled.content.decode()
    assert "3 of 12" in polled.content.decode()
    VerifyRun.objects.filter(id=run.id).update(status=VerifyRun.Status.QUEUED, checked=0, total=0)
    from web import tasks

    assert tasks.verify_run.apply(args=(run.id,)).get() == "match"
    final = client.get("/audit/verify/runs/", {"petition_id": pid}, HTTP_HX_REQUEST="true")
    assert final.status_code == 286 and "every result and state hash matches" in final.content.decode()
    assert "hx-trigger" not in final.content.decode()


def test_staff_reach_the_audit_from_the_navigation_and_filter_it(  # type: ignore[no-untyped-def]
    client: Client, auditor, decided: tuple[str, str]
) -> None:
    _, pid = decided
    client.force_login(auditor)
    home = client.get("/").content.decode()
    assert 'href="/audit/"' in home
    assert 'href="/petitions/new/"' not in home  # a staff account without a wallet gets no petitioner links
    account = client.get("/account/").content.decode()
    assert "Get " not in account and "Write one" not in account and "staff account" in account
    listing = client.get("/audit/").content.decode()
    assert f'href="/audit/petitions/{pid}/"' in listing and "1 petition" in listing
    assert f"/audit/petitions/{pid}/" in client.get("/audit/", {"outcome": "granted"}).content.decode()
    assert f"/audit/petitions/{pid}/" not in client.get("/audit/", {"outcome": "refunded"}).content.decode()
    assert f"/audit/petitions/{pid}/" in client.get("/audit/", {"q": "TREES"}).content.decode()
    assert "No petition matches" in client.get("/audit/", {"q": "nothing like it"}).content.decode()
    assert client.get("/audit/", {"outcome": "<script>"}).status_code == 200  # a bad filter is ignored


def test_verify_task_run_twice_records_once(decided: tuple[str, str], django_user_model) -> None:  # type: ignore[no-untyped-def]
    from web import audit, tasks

    fed, _ = decided
    run = VerifyRun.objects.create(process_id=fed)
    assert tasks.verify_run.apply(args=(run.id,)).get() == "match"
    first = VerifyRun.objects.get(id=run.id).finished_at
    assert tasks.verify_run.apply(args=(run.id,)).get() == "match"
    assert VerifyRun.objects.get(id=run.id).finished_at == first
    # A worker killed mid-replay leaves its run "replaying"; the task, delivered again (acks_late), runs it to the end.
    interrupted = VerifyRun.objects.create(process_id=fed, status=VerifyRun.Status.RUNNING, checked=2, total=9)
    assert tasks.verify_run.apply(args=(interrupted.id,)).get() == "match"
    interrupted.refresh_from_db()
    assert interrupted.finished_at is not None and interrupted.checked == interrupted.total > 2
    assert audit is not None and Path is not None
