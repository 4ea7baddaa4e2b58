"""AO-shaped HTTP endpoints: messenger (MU), scheduler (SU) and gateway, each under its own base URL.

These keep AO's legacy JSON shapes so AO clients (aoconnect) can be pointed at them.
Signed items authenticate themselves, so the POST endpoints take no cookies and need no CSRF token.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from ao import limits, models, selectors, services
from ao.compute import reads
from ao.effects import keys
from ao.effects.embedded_store import chunk_by_weave_offset
from ao.effects.graphql import execute as graphql_execute
from ao.effects.stores import embedded_store
from ao.errors import AoError, Evaluating, InvalidMessage, MessageTooLarge
from ao.permaweb.b64 import b64url_encode
from ao.permaweb.store import Invalid, NotFound, StoreError

MAX_GRAPHQL_BYTES = 64 * 1024
STREAM_WINDOW = 4 * 1024 * 1024  # gateway data is sent in windows of this size (16 chunks of 256 KiB)
RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _handles_errors(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Turn the units' and the store's errors into JSON answers with their status."""

    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except limits.Limited as exc:
            response = _error(429, str(exc))
            response["Retry-After"] = str(exc.retry_after)
            return response
        except Evaluating as exc:  # AO's compute unit answers 202 with a message while it works
            response = JsonResponse({"message": str(exc)}, status=202)
            response["Retry-After"] = str(exc.retry_after)
            return response
        except AoError as exc:
            return _error(exc.status, str(exc))
        except NotFound as exc:
            return _error(404, str(exc))
        except Invalid as exc:
            return _error(400, str(exc))
        except StoreError as exc:
            return _error(502, str(exc))

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


def _intake_limit(request: HttpRequest) -> None:
    """Items posted to the messenger or the scheduler, per client address, counted before the body is read."""
    limits.hit("intake-ip", limits.client_ip(request), limits.configured("intake_ip"),
               what="items posted from this address")


def _cu_limit(request: HttpRequest) -> None:
    """Compute-unit reads that may wait for or run evaluation, per client address."""
    limits.hit("cu-ip", limits.client_ip(request), limits.configured("cu_ip"),
               what="compute-unit requests from this address")


def _read_item_body(request: HttpRequest) -> bytes:
    """Read a posted item, refusing more than the scheduler's limit without buffering it all."""
    limit = settings.AO["MAX_MESSAGE_BYTES"]
    declared = request.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise MessageTooLarge(f"item is {declared} bytes; this scheduler accepts at most {limit}")
    body = request.read(limit + 1)
    if len(body) > limit:
        raise MessageTooLarge(f"item is over {limit} bytes; this scheduler accepts at most {limit}")
    if not body:
        raise InvalidMessage("empty body: POST a signed ANS-104 data item as application/octet-stream")
    return body


# -- messenger -------------------------------------------------------------------------------


@csrf_exempt
@require_http_methods(["GET", "POST"])
@_handles_errors
def mu_root(request: HttpRequest) -> HttpResponse:
    """GET: who this messenger is. POST: submit a signed item (202 {"id"})."""
    if request.method == "GET":
        return JsonResponse({"Unit": "Messenger", "Address": keys.messenger_key().address})
    _intake_limit(request)
    assignment = services.mu_submit(raw=_read_item_body(request), admit=services.public_admission)
    return JsonResponse(
        {"id": assignment.message.id, "message": "Processing DataItem", "nonce": assignment.nonce}, status=202
    )


# -- scheduler -------------------------------------------------------------------------------


@csrf_exempt
@require_http_methods(["GET", "POST"])
@_handles_errors
def su_root(request: HttpRequest) -> HttpResponse:
    """GET: who this scheduler is. POST: schedule a signed item directly, or with ``?process-id=&assign=`` put a
    message this node holds into a process's log (AO's assign)."""
    if request.method == "GET":
        return JsonResponse(
            {
                "Unit": "Scheduler",
                "Address": keys.scheduler_key().address,
                "Timestamp": int(time.time() * 1000),
                "Block-Height": embedded_store().block_height(),
            }
        )
    _intake_limit(request)
    if "assign" in request.GET:
        if "base-layer" in request.GET:
            raise InvalidMessage("base-layer assignments (of L1 transactions) are not offered by this scheduler; "
                                 "WeaveDrive reads L1 data once the scheduler attests it")
        assignment = services.su_assign_existing(process_id=request.GET.get("process-id", ""),
                                                 message_id=request.GET.get("assign", ""))
        return JsonResponse({"id": assignment.id, "message": assignment.message.id,
                             "timestamp": assignment.timestamp, "nonce": assignment.nonce}, status=201)
    assignment = services.su_schedule(raw=_read_item_body(request), admit=services.public_admission)
    return JsonResponse(
        {"id": assignment.message.id, "timestamp": assignment.timestamp, "nonce": assignment.nonce}, status=201
    )


@require_GET
@_handles_errors
def su_timestamp(request: HttpRequest) -> HttpResponse:
    """The scheduler's clock and block height."""
    return JsonResponse({"timestamp": int(time.time() * 1000), "block_height": embedded_store().block_height()})


@require_GET
@_handles_errors
def su_process(request: HttpRequest, process_id: str) -> HttpResponse:
    """A process's spawn message."""
    return JsonResponse(selectors.process_json(process_id=process_id))


@require_GET
@_handles_errors
def su_latest(request: HttpRequest, process_id: str) -> HttpResponse:
    """The newest slot of a process's log."""
    return JsonResponse(selectors.latest_json(process_id=process_id))


def _int_param(request: HttpRequest, name: str) -> int | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise InvalidMessage(f"query parameter {name} must be an integer, got {raw!r}") from exc


@require_GET
@_handles_errors
def su_log_or_message(request: HttpRequest, item_id: str) -> HttpResponse:
    """GET /{process}?from=&to=&limit= pages the log; GET /{message}?process-id= reads one message."""
    process_id = request.GET.get("process-id")
    if process_id and process_id != item_id:
        return JsonResponse(selectors.message_node(message_id=item_id, process_id=process_id))
    page = selectors.log_page(
        process_id=item_id,
        from_timestamp=_int_param(request, "from"),
        to_timestamp=_int_param(request, "to"),
        from_nonce=_int_param(request, "from-nonce"),
        to_nonce=_int_param(request, "to-nonce"),
        limit=_int_param(request, "limit") or selectors.DEFAULT_PAGE,
    )
    return JsonResponse(page.to_json())


# -- gateway ---------------------------------------------------------------------------------


@require_GET
@_handles_errors
def gw_info(request: HttpRequest) -> HttpResponse:
    """Network info, as /info on an Arweave gateway."""
    height = embedded_store().block_height()
    return JsonResponse({"network": "llamafed.embedded", "height": height, "current": height, "blocks": height + 1})


@csrf_exempt
@require_http_methods(["GET", "POST"])
@_handles_errors
def gw_graphql(request: HttpRequest) -> HttpResponse:
    """The GraphQL subset AO clients use."""
    if request.method == "GET":
        query, variables = request.GET.get("query", ""), json.loads(request.GET.get("variables") or "null")
    else:
        declared = request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_GRAPHQL_BYTES:
            return _error(413, f"GraphQL request of {declared} bytes; at most {MAX_GRAPHQL_BYTES}")
        body = request.read(MAX_GRAPHQL_BYTES + 1)
        if len(body) > MAX_GRAPHQL_BYTES:
            return _error(413, f"GraphQL request over {MAX_GRAPHQL_BYTES} bytes")
        try:
            payload = json.loads(body or b"{}")
        except json.JSONDecodeError as exc:
            return _error(400, f"request body is not JSON: {exc}")
        if not isinstance(payload, dict):
            return _error(400, "request body must be a JSON object with a query")
        query, variables = payload.get("query") or "", payload.get("variables")
    if not query:
        return _error(400, "no query")
    result = graphql_execute(embedded_store(), query, variables if isinstance(variables, dict) else None)
    return JsonResponse(result, status=200 if result.get("data") is not None else 400)


@require_GET
@_handles_errors
def gw_tx(request: HttpRequest, tx_id: str) -> HttpResponse:
    """An L1 transaction header."""
    return JsonResponse(embedded_store().get_transaction(tx_id))


@require_GET
@_handles_errors
def gw_tx_offset(request: HttpRequest, tx_id: str) -> HttpResponse:
    """Where a transaction's data sits in the weave: {size, offset (last byte)}."""
    store = embedded_store()
    store.get_transaction(tx_id)
    entry = models.Entry.objects.only("weave_offset", "data_size").get(id=tx_id)
    if entry.weave_offset is None:
        return _error(404, f"transaction {tx_id} has no data")
    return JsonResponse({"size": str(entry.data_size), "offset": str(entry.weave_offset)})


@require_GET
@_handles_errors
def gw_chunk(request: HttpRequest, offset: int) -> HttpResponse:
    """The chunk holding an absolute weave offset, with its data_path."""
    entry, chunk = chunk_by_weave_offset(offset)
    body = embedded_store().read(entry.id, chunk.start, chunk.end)
    return JsonResponse(
        {"chunk": b64url_encode(body), "data_path": b64url_encode(bytes(chunk.data_path)), "tx_path": ""}
    )


@require_GET
@_handles_errors
def gw_raw(request: HttpRequest, item_id: str) -> HttpResponse:
    """A data item's serialized bytes."""
    return HttpResponse(embedded_store().get_item_bytes(item_id), content_type="application/octet-stream")


def _stream(store: Any, item_id: str, start: int, end: int) -> Iterator[bytes]:
    """Bytes [start, end) in windows of STREAM_WINDOW, each read (and its chunks verified) only when sent."""
    position = start
    while position < end:
        upto = min(end, position + STREAM_WINDOW)
        yield store.read(item_id, position, upto)
        position = upto


@require_GET
@_handles_errors
def gw_data(request: HttpRequest, item_id: str) -> HttpResponse:
    """The data of an item or transaction, streamed (never held whole); honours a single HTTP Range.

    Each window's chunks are verified against the data_root as it is sent: a chunk failing its proof ends the
    response short of its Content-Length, so the client sees the body is incomplete.
    """
    store = embedded_store()
    size = store.data_size(item_id)
    records = store.query(ids=[item_id], first=1)
    content_type = next((t.value for t in records[0].tags if t.name == "Content-Type"), None) if records else None
    content_type = content_type or "application/octet-stream"
    header = request.headers.get("Range")
    start, end, status = 0, size, 200
    if header:
        match = RANGE_RE.match(header.strip())
        if not match or (not match.group(1) and not match.group(2)):
            return _error(416, f"unsupported Range {header!r}; use bytes=START-END")
        if match.group(1):
            start = int(match.group(1))
            end = min(int(match.group(2)) + 1 if match.group(2) else size, size)
        else:
            start, end = max(0, size - int(match.group(2))), size
        if start >= size or end <= start:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return response
        status = 206
    if end - start <= STREAM_WINDOW:
        response: HttpResponse = HttpResponse(store.read(item_id, start, end), status=status,
                                              content_type=content_type)
    else:
        response = StreamingHttpResponse(_stream(store, item_id, start, end), status=status,
                                         content_type=content_type)
        response["Content-Length"] = str(end - start)
    if status == 206:
        response["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response["Accept-Ranges"] = "bytes"
    return response


# -- compute unit ----------------------------------------------------------------------------

MAX_RESULTS_PAGE = 1000
DEFAULT_RESULTS_PAGE = 25


@require_GET
@_handles_errors
def cu_root(request: HttpRequest) -> HttpResponse:
    """Who this compute unit is."""
    return JsonResponse({"Unit": "Compute", "Address": keys.scheduler_key().address, "Timestamp": int(time.time() * 1000)})


def _process_param(request: HttpRequest) -> str:
    process_id = request.GET.get("process-id", "")
    if not process_id:
        raise InvalidMessage("a process-id query parameter is required")
    return process_id


@require_GET
@_handles_errors
def cu_result(request: HttpRequest, message_id: str) -> HttpResponse:
    """The result of one message (waiting, within a deadline, for a worker to evaluate up to it; then 202)."""
    _cu_limit(request)
    result = reads.wait_for_result(process_id=_process_param(request), message_id=message_id)
    return JsonResponse(reads.result_json(result))


@require_GET
@_handles_errors
def cu_results(request: HttpRequest, process_id: str) -> HttpResponse:
    """Results of a process, paged by nonce: ?from=&to=&sort=ASC|DESC&limit=."""
    if not models.Process.objects.filter(id=process_id).exists():
        return _error(404, f"no process {process_id}")
    sort = request.GET.get("sort", "ASC").upper()
    if sort not in ("ASC", "DESC"):
        return _error(400, "sort must be ASC or DESC")
    limit = max(1, min(_int_param(request, "limit") or DEFAULT_RESULTS_PAGE, MAX_RESULTS_PAGE))
    qs = models.Result.objects.filter(process_id=process_id)
    start, end = _int_param(request, "from"), _int_param(request, "to")
    if start is not None:
        qs = qs.filter(nonce__gt=start) if sort == "ASC" else qs.filter(nonce__lt=start)
    if end is not None:
        qs = qs.filter(nonce__lte=end) if sort == "ASC" else qs.filter(nonce__gte=end)
    rows = list(qs.order_by("nonce" if sort == "ASC" else "-nonce")[: limit + 1])
    # Beyond AO's shape, each edge carries what a verifier on another node compares: the running state hash, and
    # the Pushed-For / origin the compute unit decided (README, "Verifying a node").
    edges = [{"cursor": str(r.nonce), "node": reads.result_json(r), "stateHash": r.state_hash,
              "pushedFor": r.pushed_for, "origin": r.origin} for r in rows[:limit]]
    return JsonResponse({"edges": edges, "pageInfo": {"hasNextPage": len(rows) > limit}})


@csrf_exempt
@require_http_methods(["POST"])
@_handles_errors
def cu_dry_run(request: HttpRequest) -> HttpResponse:
    """Evaluate an unsigned message against current state; nothing changes. Beyond a web request's budget a worker
    computes it: 202, and the same request again gets the answer."""
    _cu_limit(request)
    declared = request.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > reads.MAX_DRY_RUN_BYTES:
        return _error(413, f"dry-run message of {declared} bytes; at most {reads.MAX_DRY_RUN_BYTES}")
    body = request.read(reads.MAX_DRY_RUN_BYTES + 1)
    if len(body) > reads.MAX_DRY_RUN_BYTES:
        return _error(413, f"dry-run message over {reads.MAX_DRY_RUN_BYTES} bytes")
    try:
        message = json.loads(body or b"{}")
    except json.JSONDecodeError as exc:
        return _error(400, f"body is not JSON: {exc}")
    if not isinstance(message, dict):
        return _error(400, "body must be a JSON message object")
    return JsonResponse(reads.web_dry_run(process_id=_process_param(request), message=message))
