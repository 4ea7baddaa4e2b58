"""The AO-shaped HTTP endpoints: MU intake, SU log paging, gateway GraphQL and data."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from django.test import Client

from ao import models, services
from ao.effects import keys
from ao.effects.stores import embedded_store
from ao.permaweb.wallet import Ed25519Key
from tests import factories

pytestmark = pytest.mark.django_db

MU = "/ao/mu/"
SU = "/ao/su/"
GW = "/ao/gateway/"


def _post_item(client: Client, raw: bytes, url: str = MU) -> tuple[int, dict]:
    response = client.post(url, data=raw, content_type="application/octet-stream")
    return response.status_code, response.json()


def test_mu_accepts_a_signed_spawn_and_message(client: Client, alice: Ed25519Key) -> None:
    spawn = factories.spawn_item(alice)
    status, body = _post_item(client, spawn.serialize())
    assert (status, body["id"]) == (202, spawn.id)
    msg = factories.message_item(alice, spawn.id)
    status, body = _post_item(client, msg.serialize())
    assert (status, body["id"], body["nonce"]) == (202, msg.id, 1)


def test_mu_post_is_exempt_from_csrf_but_checks_signatures(alice: Ed25519Key, process_id: str) -> None:
    client = Client(enforce_csrf_checks=True)
    good = factories.message_item(alice, process_id, data=b"abc").serialize()
    status, body = _post_item(client, good[:-1] + b"X")  # data changed after signing
    assert status == 400
    assert "signature does not verify" in body["error"]
    assert _post_item(client, good)[0] == 202


def test_mu_refuses_oversized_body_with_413_and_stores_nothing(client: Client, alice: Ed25519Key, process_id: str) -> None:
    before = models.Entry.objects.count()
    status, body = _post_item(client, factories.message_item(alice, process_id, data=b"x" * 200_000).serialize())
    assert status == 413
    assert "at most 102400" in body["error"]
    assert models.Entry.objects.count() == before


def test_mu_refuses_an_empty_body(client: Client, node_keys: None) -> None:
    status, body = _post_item(client, b"")
    assert status == 400
    assert "empty body" in body["error"]


def test_mu_duplicate_is_409(client: Client, alice: Ed25519Key, process_id: str) -> None:
    raw = factories.message_item(alice, process_id).serialize()
    assert _post_item(client, raw)[0] == 202
    assert _post_item(client, raw)[0] == 409


def test_su_pages_the_log_by_timestamp_and_by_nonce(client: Client, alice: Ed25519Key, process_id: str) -> None:
    ids = [process_id]
    for _ in range(5):
        ids.append(services.su_schedule(raw=factories.message_item(alice, process_id).serialize()).message.id)
    seen: list[str] = []
    params = "limit=2"
    while True:
        page = client.get(f"{SU}{process_id}?{params}").json()
        seen += [e["node"]["message"]["id"] for e in page["edges"]]
        if not page["page_info"]["has_next_page"]:
            break
        params = f"limit=2&from={page['edges'][-1]['cursor']}"
    assert seen == ids
    by_nonce = client.get(f"{SU}{process_id}?from-nonce=1&to-nonce=3").json()
    assert [e["node"]["message"]["id"] for e in by_nonce["edges"]] == ids[2:4]
    assert [e["cursor"] for e in by_nonce["edges"]] == ["2", "3"]


def test_su_timestamp_pages_do_not_split_equal_timestamps(client: Client, alice: Ed25519Key, process_id: str) -> None:
    for _ in range(4):
        services.su_schedule(raw=factories.message_item(alice, process_id).serialize())
    models.Assignment.objects.filter(process_id=process_id).update(timestamp=1_700_000_000_000)
    page = client.get(f"{SU}{process_id}?limit=2").json()
    assert len(page["edges"]) == 5
    assert page["page_info"]["has_next_page"] is False


def test_su_edge_node_has_message_and_assignment(client: Client, alice: Ed25519Key, process_id: str) -> None:
    msg = factories.message_item(alice, process_id, data=b"hi")
    services.su_schedule(raw=msg.serialize())
    node = client.get(f"{SU}{msg.id}?process-id={process_id}").json()
    assert node["message"]["id"] == msg.id
    assert node["message"]["data"] == "hi"
    assert node["message"]["owner"] == {"address": alice.address, "key": msg.owner_b64}
    assert {"name": "Action", "value": "Ping"} in node["message"]["tags"]
    tags = {t["name"]: t["value"] for t in node["assignment"]["tags"]}
    assert (tags["Process"], tags["Nonce"], tags["Message"]) == (process_id, "1", msg.id)
    assert node["assignment"]["owner"]["address"] == keys.scheduler_key().address


def test_su_reports_unknown_process_and_bad_params(client: Client, node_keys: None, process_id: str) -> None:
    assert client.get(f"{SU}{'Q' * 43}").status_code == 404
    response = client.get(f"{SU}{process_id}?from=yesterday")
    assert response.status_code == 400
    assert "must be an integer" in response.json()["error"]
    assert client.get(f"{SU}{'Q' * 43}?process-id={process_id}").status_code == 404


def test_su_timestamp_process_and_latest(client: Client, alice: Ed25519Key, process_id: str) -> None:
    body = client.get(f"{SU}timestamp").json()
    assert body["timestamp"] > 1_600_000_000_000
    assert body["block_height"] >= 0
    process = client.get(f"{SU}processes/{process_id}").json()
    assert process["id"] == process_id and process["nonce"] == 0
    msg = factories.message_item(alice, process_id)
    services.su_schedule(raw=msg.serialize())
    assert client.get(f"{SU}{process_id}/latest").json()["message"]["id"] == msg.id
    info = client.get(SU).json()
    assert info["Address"] == keys.scheduler_key().address


SCHEDULER_LOCATION_QUERY = """
query GetSchedulerLocation ($owner: String!) {
  transactions (owners: [$owner], tags: [{ name: "Type", values: ["Scheduler-Location"] }], first: 1,
                sort: HEIGHT_DESC) {
    edges { node { tags { name value } } }
  }
}"""

PROCESS_QUERY = """
query GetTransactions ($transactionIds: [ID!]!) {
  transactions(ids: $transactionIds) {
    pageInfo { hasNextPage }
    edges { cursor node { id owner { address } tags { name value } block { id height timestamp } } }
  }
}"""


def test_graphql_serves_scheduler_location_and_process_lookups(client: Client, alice: Ed25519Key) -> None:
    services.node_init()
    services.node_init()  # idempotent: one record
    spawn = factories.spawn_item(alice)
    services.su_schedule(raw=spawn.serialize())
    su_address = keys.scheduler_key().address
    body = client.post(
        f"{GW}graphql",
        data=json.dumps({"query": SCHEDULER_LOCATION_QUERY, "variables": {"owner": su_address}}),
        content_type="application/json",
    ).json()
    [edge] = body["data"]["transactions"]["edges"]
    tags = {t["name"]: t["value"] for t in edge["node"]["tags"]}
    assert tags["Url"].endswith("/ao/su")
    assert models.EntryTag.objects.filter(name="Type", value="Scheduler-Location").count() == 1
    body = client.post(
        f"{GW}graphql",
        data=json.dumps({"query": PROCESS_QUERY, "variables": {"transactionIds": [spawn.id]}}),
        content_type="application/json",
    ).json()
    [edge] = body["data"]["transactions"]["edges"]
    assert edge["node"]["id"] == spawn.id
    assert edge["node"]["owner"]["address"] == alice.address
    assert {"name": "Scheduler", "value": su_address} in edge["node"]["tags"]


def test_graphql_filters_by_tags_and_pages(client: Client, alice: Ed25519Key, process_id: str) -> None:
    for action in ("A", "B", "A", "A"):
        services.su_schedule(raw=factories.message_item(alice, process_id, action=action).serialize())
    query = """query ($after: String) { transactions(tags: [{name: "Action", values: ["A"]}], first: 2,
      sort: HEIGHT_ASC, after: $after) { pageInfo { hasNextPage } edges { cursor node { id } } } }"""
    first = client.post(f"{GW}graphql", data=json.dumps({"query": query}), content_type="application/json").json()
    conn = first["data"]["transactions"]
    assert len(conn["edges"]) == 2 and conn["pageInfo"]["hasNextPage"] is True
    after = conn["edges"][-1]["cursor"]
    rest = client.post(
        f"{GW}graphql", data=json.dumps({"query": query, "variables": {"after": after}}), content_type="application/json"
    ).json()["data"]["transactions"]
    assert len(rest["edges"]) == 1 and rest["pageInfo"]["hasNextPage"] is False


def test_graphql_reports_query_errors(client: Client, node_keys: None) -> None:
    response = client.post(f"{GW}graphql", data=json.dumps({"query": "{ nope }"}), content_type="application/json")
    assert response.status_code == 400
    assert "nope" in response.json()["errors"][0]["message"]
    assert client.post(f"{GW}graphql", data="not json", content_type="application/json").status_code == 400


def test_gateway_serves_item_data_and_raw_bytes(client: Client, alice: Ed25519Key, process_id: str) -> None:
    msg = factories.message_item(alice, process_id, data=b"0123456789")
    services.su_schedule(raw=msg.serialize())
    assert client.get(f"{GW}{msg.id}").content == b"0123456789"
    ranged = client.get(f"{GW}{msg.id}", HTTP_RANGE="bytes=2-4")
    assert (ranged.status_code, ranged.content, ranged["Content-Range"]) == (206, b"234", "bytes 2-4/10")
    assert client.get(f"{GW}{msg.id}", HTTP_RANGE="bytes=20-30").status_code == 416
    assert client.get(f"{GW}raw/{msg.id}").content == msg.serialize()
    assert client.get(f"{GW}{'Z' * 43}").status_code == 404


def test_mu_accepts_posts_without_the_trailing_slash(client: Client, alice: Ed25519Key, process_id: str) -> None:
    status, body = _post_item(client, factories.message_item(alice, process_id).serialize(), url="/ao/mu")
    assert status == 202 and body["nonce"] == 1


def test_a_messenger_following_only_307_and_308_delivers_to_the_published_scheduler_url(
        client: Client, alice: Ed25519Key) -> None:
    # AO's messenger POSTs to the Url of the scheduler's Scheduler-Location record and follows only 307/308; the
    # Django test client follows nothing, so any redirect (a 301 to the slashed URL) would fail here.
    services.node_init()
    [record] = embedded_store().query(owners=[keys.scheduler_key().address],
                                      tags=[("Type", ["Scheduler-Location"])])
    url = urlsplit(next(t.value for t in record.tags if t.name == "Url"))
    assert not url.path.endswith("/")
    spawn = factories.spawn_item(alice)
    response = client.post(url.path, data=spawn.serialize(), content_type="application/octet-stream")
    assert response.status_code == 201 and response.json()["id"] == spawn.id
    assert client.get(url.path).json()["Unit"] == "Scheduler"
    assert client.get("/ao/cu").json()["Unit"] == "Compute"
