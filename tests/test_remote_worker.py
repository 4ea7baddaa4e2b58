"""Workers on other machines: a worker with its own empty data directory, sharing only the database and the broker
and reaching the node over HTTP (AO_DATA_GATEWAY), evaluates the ledgers and the tiny-model Fed. Module binaries
and model weights come through the node's gateway API, every chunk proven against its data_root and cached on
the worker's own disk. A tampered chunk served to an empty worker is refused before use: the process stalls and
records nothing."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from ao import models, services, verify, weave
from ao.compute import health
from ao.effects import keys
from ao.node import node_settle
from ao.permaweb.b64 import b64url_decode, b64url_encode
from llamafed.celery import app as celery_app
from policy import services as fed_services
from tests import factories, workers
from tests.policy.test_fed import OFFERING, TEST_PARAMS, WAR_GIFT
from tests.support.tiny_gguf import tiny_gguf_path

pytestmark = [pytest.mark.heavy, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class _Gateway:
    """A proxy in front of the node's gateway API that can flip a byte of the data it serves for one transaction
    (whole-data answers and chunks inside that transaction's offsets)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.tamper_tx: str | None = None
        self.tamper_range: tuple[int, int] = (0, -1)
        self.requests: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                proxy.requests.append(self.path)
                status, headers, body = proxy.forward(self.path)
                body = proxy.maybe_tamper(self.path, body) if status == 200 else body
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/ao/gateway"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def maybe_tamper(self, path: str, body: bytes) -> bytes:
        if self.tamper_tx is None:
            return body
        tail = path.removeprefix("/ao/gateway/")
        if tail == self.tamper_tx:  # the whole data of a small transaction
            return bytes([body[0] ^ 1]) + body[1:]
        if tail.startswith("chunk/"):
            lo, hi = self.tamper_range
            if lo <= int(tail.removeprefix("chunk/")) <= hi:
                answer = json.loads(body)
                chunk = b64url_decode(answer["chunk"])
                answer["chunk"] = b64url_encode(bytes([chunk[0] ^ 1]) + chunk[1:])
                return json.dumps(answer).encode()
        return body

    def tamper(self, tx_id: str) -> None:
        """From now on, serve the data of tx_id with one bit flipped."""
        header = json.loads(self.forward(f"/ao/gateway/tx/{tx_id}/offset")[2])
        end, size = int(header["offset"]), int(header["size"])
        self.tamper_range = (end - size + 1, end)
        self.tamper_tx = tx_id

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway(live_server: Any) -> Iterator[_Gateway]:
    proxy = _Gateway(live_server.url)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def queue(node_keys: None, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh queue the node sends its tasks to, through the broker (no task runs inline)."""
    name = workers.new_queue()
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    monkeypatch.setitem(celery_app.conf, "task_default_queue", name)
    return name


def _elsewhere(data_dir: Path, gateway: _Gateway) -> dict[str, str]:
    """A worker on another machine: its own empty data dir, the node's data through its gateway; the node's keys
    come to it as secrets do, by path in its environment (never from the data dir)."""
    data_dir.mkdir()
    (data_dir / "static").mkdir()
    return {"LLAMAFED_DATA_DIR": str(data_dir), "AO_DATA_GATEWAY": gateway.url,
            "AO_OPERATOR_WALLET": settings.AO["OPERATOR_WALLET"], "AO_SU_KEY": settings.AO["SU_KEY"],
            "AO_MU_KEY": settings.AO["MU_KEY"], "AO_BLOB_DIR": str(data_dir / "blobs")}


def _petition(fed: str, war: str, text: str) -> str:
    user = factories.user_key()
    mint = {"Quantity": str(WAR_GIFT), "Recipient": user.address}
    transfer = {"Recipient": fed, "Quantity": str(OFFERING), "X-Petition": text, "X-Sender-Name": "Remo"}
    for signer, action, tags in ((keys.operator_wallet(), "Mint", mint), (user, "Transfer", transfer)):
        item = factories.message_item(signer, war, action=action, extra=list(tags.items()))
        services.su_schedule(raw=item.serialize())
    return item.id


def _status(fed: str, pid: str) -> str | None:
    entry = models.StateEntry.objects.filter(process_id=fed, key=f"petition/{pid}").first()
    return None if entry is None else json.loads(entry.value)["status"]


def test_a_worker_elsewhere_evaluates_through_the_gateway_and_refuses_a_tampered_chunk(
    queue: str, gateway: _Gateway, tmp_path: Path,
) -> None:
    model = weave.weave_upload(path=tiny_gguf_path(tmp_path), tags=[], name="tiny")
    fed = fed_services.fed_bootstrap(model_tx=model, overrides=TEST_PARAMS)
    from ledger.models import Token

    war = Token.objects.get(ticker="wAR").process_id
    first = _petition(fed.process_id, war, "I repair the footbridge over the creek every spring.")

    # 1. The empty worker alone: the spawns of both ledgers and the Fed, then a whole deliberation.
    remote_dir = tmp_path / "elsewhere"
    remote = workers.start_worker(queue, tmp_path / "elsewhere.log", env=_elsewhere(remote_dir, gateway))
    try:
        workers.wait_for(lambda: _status(fed.process_id, first) == "decided", "the remote worker's decision",
                         tmp_path / "elsewhere.log", timeout=240)
    finally:
        workers.stop_worker(remote)
    cached = {p.name for p in (remote_dir / "weavedrive").iterdir()}
    modules = {fed.module_id, models.Process.objects.get(id=war).module}
    assert {f"{m}.data" for m in modules} | {f"{model}.data"} <= cached  # fetched through the gateway, kept
    assert any(r.startswith("/ao/gateway/tx/") for r in gateway.requests)
    assert not (remote_dir / "blobs").exists() or not any((remote_dir / "blobs").iterdir())

    # 2. That worker and one on the node's own data dir, together, on two more petitions.
    more = [_petition(fed.process_id, war, text) for text in ("I teach swimming at the lake for free.",
                                                                 "I collect litter along the motorway verge.")]
    remote = workers.start_worker(queue, tmp_path / "elsewhere2.log", env=_elsewhere(tmp_path / "again", gateway))
    local = workers.start_worker(queue, tmp_path / "node.log")
    try:
        workers.wait_for(lambda: all(_status(fed.process_id, p) == "decided" for p in more), "both decisions",
                         tmp_path / "node.log", timeout=240)
    finally:
        workers.stop_worker(remote)
        workers.stop_worker(local)
    for process_id in (fed.process_id, war):
        report = verify.verify_process(process_id=process_id)
        assert report.ok, report.divergence

    # 3. A new empty worker to which the gateway serves the model with one bit flipped: refused, stalled, nothing
    # recorded; once the node serves true bytes, the same message decides.
    gateway.tamper(model)
    last = _petition(fed.process_id, war, "I walk the neighbours' dogs when they are ill.")
    tampered_log = tmp_path / "tampered.log"
    remote = workers.start_worker(queue, tampered_log, env=_elsewhere(tmp_path / "tampered", gateway))
    try:
        workers.wait_for(lambda: "fails its proof" in _fault(fed.process_id), "the tampered chunk to be refused",
                         tampered_log, timeout=240)
        cursor = models.Evaluation.objects.get(process_id=fed.process_id).next_nonce
    finally:
        workers.stop_worker(remote)
    assert _status(fed.process_id, last) == "deliberating"
    assert not models.Result.objects.filter(process_id=fed.process_id, nonce__gte=cursor).exists()
    gateway.tamper_tx = None
    node_settle()  # the node itself, its own store: the same message now decides
    assert _status(fed.process_id, last) == "decided"
    assert verify.verify_process(process_id=fed.process_id).ok


def _fault(process_id: str) -> str:
    status = health.process_health(process_id)
    return status.fault if status is not None else ""
