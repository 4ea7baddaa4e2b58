"""AO-shaped HTTP endpoints: messenger (MU), scheduler (SU) and gateway, each under its own base URL.

These keep AO's legacy JSON shapes so AO clients (aoconnect) can be pointed at them.
Signed items authenticate themselves, so the POST endpoints take no cookies and need no CSRF token.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from ao import models, selectors, services
from ao.compute import reads
from ao.effects import keys
from ao.effects.embedded_store import chunk_by_weave_offset
from ao.effects.graphql import execute as graphql_execute
from ao.effects.stores import embedded_store
from ao.errors import AoError, InvalidMessage, MessageTooLarge
from ao.permaweb.b64 import b64url_encode
from ao.permaweb.store import Invalid, NotFound, StoreError

MAX_GRAPHQL_BYTES = 64 * 1024
RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _handles_errors(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Turn the units' and the store's errors into JSON answers with their status."""

    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
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
    assignment = services.mu_submit(raw=_read_item_body(request))
    return JsonResponse(
        {"id": assignment.message.id, "message": "Processing DataItem", "nonce": assignment.nonce}, status=202
    )


# -- scheduler -------------------------------------------------------------------------------


@csrf_exempt
@require_http_methods(["GET", "POST"])
@_handles_errors
def su_root(request: HttpRequest) -> HttpResponse:
    """GET: who this scheduler is. POST: schedule a signed item directly."""
    if request.method == "GET":
        return JsonResponse(
            {
                "Unit": "Scheduler",
                "Address": keys.scheduler_key().address,
                "Timestamp": int(time.time() * 1000),
                "Block-Height": embedded_store().block_height(),
            }
        )
    assignment = services.su_schedule(raw=_read_item_body(request))
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


@require_GET
@_handles_errors
def gw_data(request: HttpRequest, item_id: str) -> HttpResponse:
    """The data of an item or transaction; honours a single HTTP Range."""
    store = embedded_store()
    size = store.data_size(item_id)
    records = store.query(ids=[item_id], first=1)
    content_type = next((t.value for t in records[0].tags if t.name == "Content-Type"), None) if records else None
    content_type = content_type or "application/octet-stream"
    header = request.headers.get("Range")
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
        response = HttpResponse(store.read(item_id, start, end), status=206, content_type=content_type)
        response["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    else:
        response = HttpResponse(store.read(item_id), content_type=content_type)
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
    """The result of one message (waiting, within a deadline, for a worker to evaluate up to it)."""
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
    """Evaluate an unsigned message against current state; nothing changes."""
    body = request.read(reads.MAX_DRY_RUN_BYTES + 1)
    if len(body) > reads.MAX_DRY_RUN_BYTES:
        return _error(413, f"dry-run message over {reads.MAX_DRY_RUN_BYTES} bytes")
    try:
        message = json.loads(body or b"{}")
    except json.JSONDecodeError as exc:
        return _error(400, f"body is not JSON: {exc}")
    if not isinstance(message, dict):
        return _error(400, "body must be a JSON message object")
    return JsonResponse(reads.dry_run(process_id=_process_param(request), message=message))
