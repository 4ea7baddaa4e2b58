"""A public node abuse cannot bury: shared limits on the AO endpoints, the spawn policy, AO's assign, bounded
compute-unit reads, streamed gateway data and bodies refused before they are read."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest
from django.db import close_old_connections
from django.test import Client

from ao import api, limits, models, services
from ao.compute import batch, reads
from ao.effects.stores import embedded_store
from ao.permaweb import dataitem
from ao.permaweb.wallet import Ed25519Key
from ao.weave import weave_upload
from tests import factories

pytestmark = pytest.mark.django_db

MU, SU, CU, GW = "/ao/mu/", "/ao/su/", "/ao/cu/", "/ao/gateway/"


def _post(client: Client, raw: bytes, url: str = MU) -> tuple[int, dict, object]:
    response = client.post(url, data=raw, content_type="application/octet-stream")
    return response.status_code, response.json(), response


# --- the limiter --------------------------------------------------------------------------------------------


def test_rates_parse_and_read_as_people_say_them() -> None:
    assert limits.parse_rate("20/hour") == limits.Rate(20, 3600)
    assert limits.parse_rate("5/10min") == limits.Rate(5, 600)
    assert str(limits.parse_rate("300/min")) == "300 per minute"
    assert str(limits.parse_rate("3/2day")) == "3 per 2 days"
    for bad in ("", "20", "x/hour", "20/fortnight", "5/0min"):
        with pytest.raises(limits.RateError):
            limits.parse_rate(bad)


def test_durations_read_as_a_person_says_them_rounded_up() -> None:
    cases = {0.2: "1 s", 45: "45 s", 59.5: "1 min", 61: "2 min", 900: "15 min", 3600: "1 h",
             21 * 3600 + 13 * 60 + 30: "21 h 14 min", 86400: "24 h", 3 * 86400 + 7200: "3 d 2 h"}
    assert {s: limits.describe_seconds(s) for s in cases} == cases


def test_a_window_lets_count_hits_through_then_says_when_to_come_back() -> None:
    rate = limits.Rate(3, 3600)
    for _ in range(3):
        limits.hit("t", "client-a", rate, what="tries")
    with pytest.raises(limits.Limited) as refused:
        limits.hit("t", "client-a", rate, what="tries")
    assert "too many tries: the limit is 3 per hour; try again in 1 h" in str(refused.value)
    assert 3590 < refused.value.retry_after <= 3601
    assert limits.used("t", "client-a", rate) == 3  # the refused hit was not counted
    limits.hit("t", "client-b", rate, what="tries")  # another client has its own window
    limits.reset("t", "client-a")
    limits.hit("t", "client-a", rate, what="tries")


@pytest.mark.django_db(transaction=True)
def test_concurrent_hits_never_take_more_places_than_the_limit() -> None:
    """Eight threads race for 20 places 80 times: exactly 20 get through, whatever the cache backend."""
    rate, passed, refused = limits.Rate(20, 3600), [], []
    start = threading.Barrier(8)

    def race() -> None:
        start.wait()
        try:
            for _ in range(10):
                try:
                    limits.hit("race", "one-client", rate, what="tries")
                    passed.append(1)
                except limits.Limited:
                    refused.append(1)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(passed), len(refused)) == (20, 60)


def test_the_client_address_trusts_only_the_configured_proxies(rf: object) -> None:
    request = rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")  # type: ignore[attr-defined]
    assert limits.client_ip(request, 0) == "10.0.0.1"  # a client's own header is ignored
    assert limits.client_ip(request, 1) == "203.0.113.9"  # what our one proxy saw
    assert limits.client_ip(request, 5) == "6.6.6.6"


# --- messenger and scheduler intake -------------------------------------------------------------------------


def test_intake_is_limited_per_address_before_the_body_is_read(client: Client, alice: Ed25519Key,
                                                               process_id: str, settings: object) -> None:
    settings.LIMITS = {**settings.LIMITS, "intake_ip": "3/min"}
    statuses = [_post(client, b"junk")[0] for _ in range(2)]
    statuses.append(_post(client, factories.message_item(alice, process_id).serialize(), SU)[0])
    assert statuses == [400, 400, 201]  # junk counts, and the scheduler shares the messenger's window
    before = models.Entry.objects.count()
    status, body, response = _post(client, factories.message_item(alice, process_id).serialize())
    assert status == 429 and int(response["Retry-After"]) > 0
    assert body["error"].startswith("too many items posted from this address: the limit is 3 per minute")
    assert models.Entry.objects.count() == before
    other = Client(REMOTE_ADDR="10.1.2.3")
    assert _post(other, factories.message_item(alice, process_id).serialize())[0] == 202


def test_intake_is_limited_per_signer_once_the_signature_verifies(client: Client, alice: Ed25519Key,
                                                                  process_id: str, settings: object) -> None:
    settings.LIMITS = {**settings.LIMITS, "intake_signer": "2/min"}
    for _ in range(2):
        assert _post(client, factories.message_item(alice, process_id).serialize())[0] == 202
    status, body, _ = _post(Client(REMOTE_ADDR="10.9.9.9"), factories.message_item(alice, process_id).serialize())
    assert status == 429 and "items signed by this wallet" in body["error"]  # a new address does not help
    # A forged item naming alice's key cannot use up her window: it fails its signature before it is counted.
    bob = factories.user_key()
    assert _post(client, factories.message_item(bob, process_id).serialize())[0] == 202


def test_spawns_outside_the_allow_list_get_bounded_fuel_and_memory(client: Client, alice: Ed25519Key,
                                                                   settings: object) -> None:
    settings.AO = {**settings.AO, "SPAWN_MAX_FUEL": 1_000_000_000, "SPAWN_MAX_MEMORY": 256 * 1024**2}
    settings.LIMITS = {**settings.LIMITS, "spawn_signer": "2/hour"}
    greedy = factories.spawn_item(alice, extra=[("Compute-Limit", "9000000000000"), ("Memory-Limit", "16-gb")])
    status, body, _ = _post(client, greedy.serialize())
    assert status == 403
    assert "Compute-Limit of at most 1000000000" in body["error"] and "Memory-Limit of at most 268435456" in body["error"]
    defaults = factories.spawn_item(alice)  # the module's (here AO's) defaults are over the caps too
    assert _post(client, defaults.serialize())[0] == 403
    assert not models.Process.objects.filter(id__in=[greedy.id, defaults.id]).exists()
    modest = [("Compute-Limit", "1000000000"), ("Memory-Limit", "256-mb")]
    for _ in range(2):
        assert _post(client, factories.spawn_item(alice, extra=modest).serialize())[0] == 202
    status, body, _ = _post(client, factories.spawn_item(alice, extra=modest).serialize())
    assert status == 429 and "spawns by this wallet" in body["error"]
    # A signer on the operator's allow-list spawns what the module allows, as often as it likes.
    settings.AO = {**settings.AO, "SPAWN_ALLOWLIST": [alice.address]}
    assert _post(client, factories.spawn_item(alice).serialize())[0] == 202


# --- assign ---------------------------------------------------------------------------------------------------


def test_assign_puts_a_held_message_into_another_log_as_is_and_aosdk_refuses_it(
        client: Client, alice: Ed25519Key, probe_module: str) -> None:
    first = factories.spawn_item(alice, module=probe_module)
    second = factories.spawn_item(alice, module=probe_module)
    for item in (first, second):
        services.su_schedule(raw=item.serialize())
    message = factories.message_item(alice, first.id, action="Set", data=b"hello", extra=[("Key", "greeting")])
    services.su_schedule(raw=message.serialize())
    response = client.post(f"{SU}?process-id={second.id}&assign={message.id}")
    assert response.status_code == 201, response.content
    body = response.json()
    slot = models.Assignment.objects.get(id=body["id"])
    assert (slot.process_id, slot.message.id, slot.nonce, body["nonce"], body["message"]) == (
        second.id, message.id, 1, 1, message.id)
    signed = dataitem.parse(bytes(slot.raw))  # the scheduler's signed assignment names the message
    assert dataitem.verify(signed) and signed.tag("Message") == message.id and signed.tag("Process") == second.id
    # Twice is a duplicate; unknown ids, spawns and L1 transactions are refused with a reason; nothing is added.
    again = client.post(f"{SU}?process-id={second.id}&assign={message.id}")
    assert again.status_code == 409 and "already in the log" in again.json()["error"]
    assert client.post(f"{SU}?process-id={second.id}&assign={'Z' * 43}").status_code == 404
    assert client.post(f"{SU}?process-id={'Z' * 43}&assign={message.id}").status_code == 404
    assert client.post(f"{SU}?process-id={second.id}&assign={first.id}").status_code == 400
    assert client.post(f"{SU}?process-id={second.id}&assign=short").status_code == 400
    assert client.post(f"{SU}?process-id={second.id}&assign={message.id}&base-layer").status_code == 400
    assert models.Assignment.objects.filter(process_id=second.id).count() == 2
    # The message reaches the second process with its own Target: aosdk refuses it as that message's error,
    # so an assigned message cannot act on a process it was not sent to; the first process applied it.
    for pid in (first.id, second.id):
        batch.evaluate_process(process_id=pid)
    applied = models.Result.objects.get(process_id=first.id, nonce=1)
    assigned = models.Result.objects.get(process_id=second.id, nonce=1)
    assert applied.error == "" and assigned.error.startswith(f"assignment refused: this message is for {first.id}")
    assert models.StateEntry.objects.filter(process_id=first.id, key="greeting").exists()
    assert not models.StateEntry.objects.filter(process_id=second.id, key="greeting").exists()


# --- bounded compute-unit reads -----------------------------------------------------------------------------


def test_a_result_not_ready_within_the_wait_answers_202_in_progress(client: Client, alice: Ed25519Key,
                                                                    probe_module: str, settings: object,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    settings.AO = {**settings.AO, "RESULT_WAIT_S": 0.2}
    pid = factories.spawn_item(alice, module=probe_module)
    services.su_schedule(raw=pid.serialize())
    message = factories.message_item(alice, pid.id, action="Get")
    services.su_schedule(raw=message.serialize())
    monkeypatch.setattr(batch, "evaluate_process", lambda **_: None)  # no worker gets to it in time
    response = client.get(f"{CU}result/{message.id}", {"process-id": pid.id})
    assert response.status_code == 202 and int(response["Retry-After"]) >= 1
    assert response.json()["message"].startswith(f"Evaluation of process {pid.id} to message {message.id}")
    monkeypatch.undo()
    batch.evaluate_process(process_id=pid.id)
    assert client.get(f"{CU}result/{message.id}", {"process-id": pid.id}).status_code == 200


def _work(n: int) -> str:
    """What the probe's Work handler prints for N."""
    return str(sum(len(str(i * 7)) + 1 for i in range(n)))


def test_a_dry_run_over_the_web_budget_goes_to_a_worker_and_the_same_request_gets_its_answer(
        client: Client, alice: Ed25519Key, probe_module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spawn = factories.spawn_item(alice, module=probe_module)
    services.su_schedule(raw=spawn.serialize())
    batch.evaluate_process(process_id=spawn.id)
    monkeypatch.setattr(reads, "WEB_DRY_RUN_FUEL", 50_000_000)
    small = {"Tags": [{"name": "Action", "value": "Work"}, {"name": "N", "value": "10"}]}
    answer = client.post(f"{CU}dry-run?process-id={spawn.id}", data=json.dumps(small),
                         content_type="application/json")
    assert answer.status_code == 200 and answer.json()["Output"] == _work(10)  # within the web budget: answered
    big = {"Tags": [{"name": "Action", "value": "Work"}, {"name": "N", "value": "300000"}]}
    queued: list[tuple] = []
    monkeypatch.setattr("ao.dispatch.enqueue", lambda name, *args: queued.append((name, args)))
    first = client.post(f"{CU}dry-run?process-id={spawn.id}", data=json.dumps(big), content_type="application/json")
    assert first.status_code == 202 and "a worker has it" in first.json()["message"]
    assert [name for name, _ in queued] == [reads.DRY_RUN_TASK]
    waiting = client.post(f"{CU}dry-run?process-id={spawn.id}", data=json.dumps(big), content_type="application/json")
    assert waiting.status_code == 202 and len(queued) == 1  # not queued twice
    reads.worker_dry_run(process_id=queued[0][1][0], message=queued[0][1][1], key=queued[0][1][2])
    done = client.post(f"{CU}dry-run?process-id={spawn.id}", data=json.dumps(big), content_type="application/json")
    assert done.status_code == 200 and done.json()["Output"] == _work(300000)
    assert done.json()["GasUsed"] > reads.WEB_DRY_RUN_FUEL
    assert not models.Result.objects.filter(process_id=spawn.id, nonce__gt=0).exists()  # nothing was written


def test_compute_unit_reads_are_limited_per_address(client: Client, process_id: str, settings: object) -> None:
    settings.LIMITS = {**settings.LIMITS, "cu_ip": "2/min"}
    for _ in range(2):
        assert client.get(f"{CU}result/{'Q' * 43}", {"process-id": process_id}).status_code == 404
    refused = client.post(f"{CU}dry-run?process-id={process_id}", data="{}", content_type="application/json")
    assert refused.status_code == 429 and "compute-unit requests from this address" in refused.json()["error"]


# --- bodies and streams -------------------------------------------------------------------------------------


class _Unreadable(io.RawIOBase):
    """A request body that fails the test if anyone reads it."""

    def readable(self) -> bool:
        return True

    def read(self, *_: object) -> bytes:
        raise AssertionError("the body was read")

    readinto = read  # type: ignore[assignment]


@pytest.mark.parametrize("path", [MU, SU, f"{CU}dry-run?process-id={'P' * 43}", f"{GW}graphql",
                                  "/api/petitions/signed/"])
def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(path: str, node_keys: None) -> None:
    client = Client()
    environ = {"CONTENT_LENGTH": str(50 * 1024 * 1024), "CONTENT_TYPE": "application/octet-stream",
               "wsgi.input": _Unreadable()}
    if "dry-run" in path or "graphql" in path:
        environ["CONTENT_TYPE"] = "application/json"
    response = client.generic("POST", path, **environ)
    assert response.status_code == 413, (path, response.content)
    assert b"52428800" in response.content


def test_gateway_data_is_streamed_in_windows_with_ranges(client: Client, node_keys: None, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    blob = tmp_path / "blob.bin"
    size = 3 * api.STREAM_WINDOW + 12345
    blob.write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
    tx = weave_upload(path=blob, tags=[])
    reads_seen: list[int] = []
    real_read = type(embedded_store()).read

    def counting_read(self: object, tx_id: str, start: int = 0, end: int | None = None) -> bytes:
        data = real_read(self, tx_id, start, end)
        reads_seen.append(len(data))
        return data

    monkeypatch.setattr(type(embedded_store()), "read", counting_read)
    response = client.get(f"{GW}{tx}")
    assert response.status_code == 200 and response.streaming and response["Content-Length"] == str(size)
    assert reads_seen == []  # nothing is read before the body is sent
    assert b"".join(response.streaming_content) == blob.read_bytes()
    assert max(reads_seen) <= api.STREAM_WINDOW and len(reads_seen) == 4
    start, end = api.STREAM_WINDOW - 10, 2 * api.STREAM_WINDOW + 10
    ranged = client.get(f"{GW}{tx}", HTTP_RANGE=f"bytes={start}-{end}")
    assert ranged.status_code == 206 and ranged["Content-Range"] == f"bytes {start}-{end}/{size}"
    assert b"".join(ranged.streaming_content) == blob.read_bytes()[start:end + 1]
    assert client.get(f"{GW}{tx}", HTTP_RANGE=f"bytes={size}-").status_code == 416
