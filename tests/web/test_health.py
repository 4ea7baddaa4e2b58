"""A stalled Fed is shown to everyone: the public pages say so (nothing is lost, it resumes by itself), and the
admin lists every process's compute status, read-only."""

from __future__ import annotations

from django.test import Client
from django.utils import timezone

from ao import models as ao_models
from tests.web.conftest import FedLog, new_id, out

FAULT = "HostUnavailable: WeaveDrive could not reach its data: connection refused"


def _stall(fed_log: FedLog) -> None:
    ao_models.Evaluation.objects.filter(process_id=fed_log.pid).update(
        fault=FAULT, fault_count=6, fault_at=timezone.now(), retry_at=timezone.now(), stalled_at=timezone.now())


def test_a_stalled_fed_is_announced_on_the_public_pages(client: Client, fed_log: FedLog) -> None:
    sender = new_id()
    pid = fed_log.petition(sender=sender, text="I plant trees.", name="Ann", votes=[("Ada", 3, "fine")], amount=5,
                           confirm=False)
    assert "stalled" not in client.get("/").content.decode()
    _stall(fed_log)
    for page in ("/", f"/petitions/{pid}/", f"/petitions/{pid}/status/"):
        html = client.get(page).content.decode()
        assert "compute unit is stalled since" in html and "connection refused" in html, page
        assert "resumes by itself" in html
    ao_models.Evaluation.objects.filter(process_id=fed_log.pid).update(fault="", fault_count=0, stalled_at=None)
    assert "stalled" not in client.get("/").content.decode()


def test_the_admin_lists_compute_status_read_only(admin_client: Client, fed_log: FedLog) -> None:
    _stall(fed_log)
    fed_log.step("Ping", {}, [out(new_id(), Action="Pong")])
    page = admin_client.get("/admin/ao/evaluation/").content.decode()
    assert "stalled" in page and "connection refused" in page
    assert admin_client.get("/admin/ao/evaluation/add/").status_code == 403
    assert admin_client.get("/admin/ao/push/").status_code == 200


def test_the_compute_status_is_for_staff_only(client: Client, fed_log: FedLog) -> None:
    response = client.get("/admin/ao/evaluation/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
